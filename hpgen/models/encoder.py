"""E: the patch-VAE encoder (Sec. 3.1, appendix A.1).

Five spectrally normalised conv blocks, all LeakyReLU, then two dimension-preserving
heads: M gives the mean and S the spread of a 128-d Gaussian per space-time position.
S predicts log(sigma^2): the same information as sigma, but unconstrained, so the
reparametrisation never sees a negative or zero standard deviation.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import CONV, conv_stack


class PatchEncoder(nn.Module):
    def __init__(self, in_channels: int = 3, channels: int = 64, latent_channels: int = 128, num_blocks: int = 5,
                 kernel: int = 3, dims: int = 3):
        super().__init__()
        self.body = conv_stack(in_channels, channels, channels, num_blocks, kernel,
                               norm="spectral", last_norm="spectral", last_act="lrelu", dims=dims)
        self.mean_head = CONV[dims](channels, latent_channels, kernel, padding=kernel // 2)  # M
        self.logvar_head = CONV[dims](channels, latent_channels, kernel, padding=kernel // 2)  # S

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.mean_head(h), self.logvar_head(h)
