"""The convolutional block every network of appendix A is made of."""
from __future__ import annotations

import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm

CONV = {2: nn.Conv2d, 3: nn.Conv3d}
BATCHNORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


class ConvBlock(nn.Sequential):
    """conv (kernel k, 'same' padding) -> norm -> activation.

    norm: "batch" (generators), "spectral" (encoder and critics: spectral norm is a
    reparametrisation of the conv weight, not a layer) or "none".
    act: "lrelu" (slope 0.2), "tanh" or "none".
    dims: 3 for video (Conv3d), 2 for image mode (Conv2d).
    norm_stats: what BatchNorm normalises with outside training: "running" (the averages
    kept during training, PyTorch's eval mode) or "batch" (the statistics of the batch at
    hand, always; no running averages are kept). See ``ModelConfig.norm_stats``.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, norm: str = "batch", act: str = "lrelu",
                 dims: int = 3, norm_stats: str = "running"):
        # No conv bias before BatchNorm: BN removes it exactly, so its gradient is pure
        # rounding noise, which Adam would amplify into lr-sized random steps.
        conv = CONV[dims](cin, cout, kernel, padding=kernel // 2, bias=(norm != "batch"))
        layers: list[nn.Module] = []
        if norm == "spectral":
            layers.append(spectral_norm(conv))
        else:
            layers.append(conv)
            if norm == "batch":
                if norm_stats not in ("running", "batch"):
                    raise ValueError(f"unknown norm_stats {norm_stats!r}")
                layers.append(BATCHNORM[dims](cout, track_running_stats=(norm_stats == "running")))
            elif norm != "none":
                raise ValueError(f"unknown norm {norm!r}")
        if act == "lrelu":
            layers.append(nn.LeakyReLU(0.2, inplace=False))
        elif act == "tanh":
            layers.append(nn.Tanh())
        elif act != "none":
            raise ValueError(f"unknown activation {act!r}")
        super().__init__(*layers)


def conv_stack(cin: int, channels: int, cout: int, num_blocks: int, kernel: int, norm: str,
               last_norm: str, last_act: str, dims: int, norm_stats: str = "running") -> nn.Sequential:
    """``num_blocks`` blocks: the first ``num_blocks-1`` map to ``channels`` with LeakyReLU,
    the last maps to ``cout`` with ``last_norm``/``last_act``. Receptive field: num_blocks*(k-1)+1."""
    blocks = [ConvBlock(cin if i == 0 else channels, channels, kernel, norm, "lrelu", dims, norm_stats)
              for i in range(num_blocks - 1)]
    blocks.append(ConvBlock(channels if num_blocks > 1 else cin, cout, kernel, last_norm, last_act, dims, norm_stats))
    return nn.Sequential(*blocks)
