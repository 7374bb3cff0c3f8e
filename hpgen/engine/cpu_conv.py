"""A faster CPU path for 3D convolutions of short clips.

PyTorch picks its CPU convolution kernel per call. For a float32 Conv3d it takes oneDNN
(mkldnn) only when N x C x D x H, the product of the first four input dimensions (the last
one is not counted), exceeds 20480 (or N > 1, groups > 1, ...; ``use_mkldnn`` in
aten/src/ATen/native/Convolution.cpp); otherwise it falls back to ``slow_conv3d``, an
im2col + GEMM whose backward is several times slower again. A single clip of a few frames
(N = 1, D = T small) lands on the slow kernel even at 32 channels and 36x64 frames: there
a critic phase with its gradient penalty took 5.5 s, against 0.68 s on oneDNN (2-core CPU,
one thread; bench/BENCHMARKS.md).

A 3D convolution does not care in which order its three spatial axes come, as long as the
kernel, stride, padding and dilation are permuted with them. So on CPU the convolution is
run on the input with its shortest axis (usually time) moved last, which makes N x C x D x H
large and lets PyTorch choose oneDNN, and the output is permuted back: the same
convolution, the same autograd graph (double backward included, for WGAN-GP), a different
kernel. It is applied from outside, like channels-last: the models stay plain modules.
"""
from __future__ import annotations

import types

import torch
import torch.nn as nn
import torch.nn.functional as F


# PyTorch's threshold on N x C x D x H below which a single (N = 1) float32 input takes
# slow_conv3d (``use_mkldnn`` in aten/src/ATen/native/Convolution.cpp).
SLOW_CONV_MAX_NCDH = 20480


def permuted_order(shape, groups: int = 1, dtype=torch.float32) -> list[int] | None:
    """The spatial axes, shortest last, when that order moves a CPU convolution of an input of
    ``shape`` from slow_conv3d to oneDNN; None where it would not change PyTorch's choice
    (N > 1 or groups > 1 or a large N x C x D x H already take oneDNN, other dtypes never do,
    a small input takes slow_conv3d either way). Every call left alone keeps exactly the
    kernel, and the rounding, it had: a one-rank run on 2 clips and a 2-rank run on 1 clip
    each stay as equal as they were."""
    n, c, *sizes = shape
    if dtype != torch.float32 or n != 1 or groups != 1 or n * c * sizes[0] * sizes[1] > SLOW_CONV_MAX_NCDH:
        return None
    short = min(range(3), key=lambda i: (sizes[i], -i))  # the shortest axis; ties: the last one
    order = [i for i in range(3) if i != short] + [short]
    return order if n * c * sizes[order[0]] * sizes[order[1]] > SLOW_CONV_MAX_NCDH else None


def permuted_conv3d(conv: nn.Conv3d, input: torch.Tensor, weight: torch.Tensor, bias, order) -> torch.Tensor:
    """``conv``'s convolution computed on the input with its spatial axes in ``order``."""
    perm = [0, 1] + [2 + i for i in order]
    inv = [perm.index(i) for i in range(5)]
    pick = lambda t: tuple(t[i] for i in order)  # noqa: E731
    y = F.conv3d(input.permute(*perm), weight.permute(*perm), bias, pick(conv.stride), pick(conv.padding),
                 pick(conv.dilation), conv.groups)
    return y.permute(*inv)


def _cpu_conv_forward(self: nn.Conv3d, input: torch.Tensor, weight: torch.Tensor, bias):
    if input.device.type == "cpu" and input.dim() == 5:
        order = [1, 2, 0] if self.__dict__.get("_always_permute") else \
            permuted_order(input.shape, self.groups, input.dtype)
        if order is not None:
            return permuted_conv3d(self, input, weight, bias, order)
    return nn.Conv3d._conv_forward(self, input, weight, bias)


def set_cpu_conv3d_layout(module: nn.Module, enabled: bool = True, always: bool = False) -> nn.Module:
    """Run every zero-padded Conv3d of ``module`` through the permuted CPU path where it makes
    PyTorch choose oneDNN (no effect on other devices). Per instance, so a deep copy (a new
    scale's generator) keeps it. ``always`` permutes every call (tests of the maths)."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            for key in ("_conv_forward", "_always_permute"):
                m.__dict__.pop(key, None)
            if enabled and m.padding_mode == "zeros" and not isinstance(m.padding, str):
                m._conv_forward = types.MethodType(_cpu_conv_forward, m)
                if always:
                    m._always_permute = True
    return module
