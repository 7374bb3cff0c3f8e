"""D^n: the patch critic (appendix A.1): G's architecture with spectral norm instead of
BatchNorm and a linear last layer giving one score per space-time position."""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import conv_stack
from .input_grad import input_gradient


class PatchCritic(nn.Module):
    def __init__(self, in_channels: int = 3, channels: int = 64, num_blocks: int = 5, kernel: int = 3,
                 dims: int = 3):
        super().__init__()
        self.dims = dims
        self.body = conv_stack(in_channels, channels, 1, num_blocks, kernel,
                               norm="spectral", last_norm="none", last_act="none", dims=dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dims == 2 and x.dim() == 5:  # image mode: (B, C, 1, H, W) videos, 2D convolutions
            b, c, t, h, w = x.shape
            return self.body(x.transpose(1, 2).reshape(b * t, c, h, w)).reshape(b, t, -1, h, w).transpose(1, 2)
        return self.body(x)

    def input_gradient(self, x: torch.Tensor) -> torch.Tensor:
        """grad_x sum(self(x)) as a first-order graph in the parameters (models/input_grad.py):
        what WGAN-GP penalises, without a double backward."""
        if self.dims == 2 and x.dim() == 5:
            b, c, t, h, w = x.shape
            g = input_gradient(self.body, x.transpose(1, 2).reshape(b * t, c, h, w))
            return g.reshape(b, t, c, h, w).transpose(1, 2)
        return input_gradient(self.body, x)
