"""G^n: five conv blocks (conv, BatchNorm, LeakyReLU), the last ending in Tanh (appendix A.1).

The same class is the patch-VAE decoder G^0 (input: the 128-channel latent z) and the
residual generators G^1..G^N (input: the up-sampled RGB output of the scale below); the
residual sum of Eq. 6 is done by the caller, so the module stays a plain map.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import conv_stack


class ScaleGenerator(nn.Module):
    def __init__(self, in_channels: int = 3, channels: int = 64, out_channels: int = 3, num_blocks: int = 5,
                 kernel: int = 3, dims: int = 3, norm_stats: str = "running", last_act: str = "tanh"):
        super().__init__()
        # The last block has no BatchNorm: normalising the output would pin its statistics
        # to zero-mean/unit-variance before tanh and stop the residual from being small.
        self.body = conv_stack(in_channels, channels, out_channels, num_blocks, kernel,
                               norm="batch", last_norm="none", last_act=last_act, dims=dims,
                               norm_stats=norm_stats)
        # DCGAN/SinGAN initialisation, N(0, 0.02): a new residual generator then adds almost
        # nothing, so a new scale starts as plain up-sampling of the one below instead of
        # having to unlearn a large random residual first.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
