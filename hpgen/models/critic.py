"""D^n: the patch critic (appendix A.1): G's architecture with spectral norm instead of
BatchNorm and a linear last layer giving one score per space-time position."""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import conv_stack


class PatchCritic(nn.Module):
    def __init__(self, in_channels: int = 3, channels: int = 64, num_blocks: int = 5, kernel: int = 3,
                 dims: int = 3):
        super().__init__()
        self.body = conv_stack(in_channels, channels, 1, num_blocks, kernel,
                               norm="spectral", last_norm="none", last_act="none", dims=dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
