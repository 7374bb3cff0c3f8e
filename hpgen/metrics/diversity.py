"""Pixel diversity of a set of generated videos (SinGAN / HP-VAE-GAN).

SinGAN (Sec. 4): "the standard deviation (std) of the intensity values of each
pixel over 100 generated images, averaged over all pixels, and normalized by the
std of the intensity values of the training image". HP-VAE-GAN reuses it for
video; its reference code converts to grey level, its paper text says LAB. We
report both:

    gray:  D = mean_p std_n g_n(p)  /  std_p g_real(p)
    lab:   D = mean_{c,p} std_n x_{n,c}(p)  /  mean_c std_p x_real,c(p)

where p runs over all (t, y, x) positions, n over the N samples, c over L, a, b,
and every std is the population std (ddof=0, numpy's default, as the reference
code uses). For LAB the denominator is the mean of per-channel stds, because L
(0..100) and a, b (about -128..127) have different offsets that would inflate
a std pooled over channels. Grey level is ITU-R 601 luma (0.299 R + 0.587 G +
0.114 B), what OpenCV/PIL grey conversion computes. The ratio does not depend on
the intensity scale, so [-1, 1] tensors are used as they are for grey.
"""
from __future__ import annotations

from typing import Sequence

import torch

_LUMA = (0.299, 0.587, 0.114)


def to_gray(video: torch.Tensor) -> torch.Tensor:
    """(..., 3, T, H, W) -> (..., T, H, W) luma, same value range as the input."""
    w = torch.tensor(_LUMA, dtype=video.dtype, device=video.device).view(3, 1, 1, 1)
    return (video * w).sum(-4)


def rgb_to_lab(video: torch.Tensor) -> torch.Tensor:
    """sRGB in [-1, 1], shape (..., 3, T, H, W) -> CIE L*a*b* (D65), L in [0, 100].

    Same formulas as OpenCV's float ``cvtColor(RGB2Lab)`` (sRGB gamma, D65 white),
    which the tests use as the reference."""
    x = ((video.to(torch.float64) + 1) / 2).clamp(0, 1)
    lin = torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    m = torch.tensor([[0.412453, 0.357580, 0.180423],
                      [0.212671, 0.715160, 0.072169],
                      [0.019334, 0.119193, 0.950227]], dtype=lin.dtype, device=lin.device)
    xyz = torch.einsum("ij,...jthw->...ithw", m, lin)
    white = torch.tensor([0.950456, 1.0, 1.088754], dtype=lin.dtype, device=lin.device).view(3, 1, 1, 1)
    t = xyz / white
    eps = (6 / 29) ** 3
    f = torch.where(t > eps, t.clamp_min(1e-12) ** (1 / 3), t / (3 * (6 / 29) ** 2) + 4 / 29)
    fx, fy, fz = f.unbind(-4)
    L = torch.where(t[..., 1, :, :, :] > eps, 116 * fy - 16, 903.3 * t[..., 1, :, :, :])
    return torch.stack([L, 500 * (fx - fy), 200 * (fy - fz)], dim=-4)


def _stack(fakes: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    x = fakes if isinstance(fakes, torch.Tensor) else torch.stack(list(fakes))
    if x.dim() != 5 or x.shape[1] != 3:
        raise ValueError(f"expected N videos (N, 3, T, H, W), got {tuple(x.shape)}")
    return x


def diversity_gray(real: torch.Tensor, fakes) -> float:
    """Grey-level diversity of N samples (N, 3, T, H, W) relative to ``real`` (3, T, H, W)."""
    x = _stack(fakes).to(torch.float64)
    if x.shape[0] < 2:
        raise ValueError("diversity needs at least 2 samples")
    g = to_gray(x)
    num = g.std(0, unbiased=False).mean()
    den = to_gray(real.to(x)).std(unbiased=False)
    return float(num / den.clamp_min(1e-12))


def diversity_lab(real: torch.Tensor, fakes) -> float:
    """LAB diversity of N samples (N, 3, T, H, W) relative to ``real`` (3, T, H, W)."""
    x = _stack(fakes)
    if x.shape[0] < 2:
        raise ValueError("diversity needs at least 2 samples")
    lab = rgb_to_lab(x)
    num = lab.std(0, unbiased=False).mean()
    rl = rgb_to_lab(real.to(x)).flatten(1)
    den = rl.std(1, unbiased=False).mean()
    return float(num / den.clamp_min(1e-12))
