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


def _permuted_conv_forward(self: nn.Conv3d, input: torch.Tensor, weight: torch.Tensor, bias):
    if input.device.type != "cpu" or input.dim() != 5:
        return nn.Conv3d._conv_forward(self, input, weight, bias)
    sizes = input.shape[2:]
    short = min(range(3), key=lambda i: (sizes[i], -i))  # the shortest axis; ties: the last one
    if short == 2:
        return nn.Conv3d._conv_forward(self, input, weight, bias)
    order = [i for i in range(3) if i != short] + [short]  # spatial axes, shortest last
    perm = [0, 1] + [2 + i for i in order]
    inv = [perm.index(i) for i in range(5)]
    pick = lambda t: tuple(t[i] for i in order)  # noqa: E731
    y = F.conv3d(input.permute(*perm), weight.permute(*perm), bias, pick(self.stride), pick(self.padding),
                 pick(self.dilation), self.groups)
    return y.permute(*inv)


def set_cpu_conv3d_layout(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Run every zero-padded Conv3d of ``module`` through the permuted CPU path (no effect on
    other devices). Per instance, so a deep copy (a new scale's generator) keeps it."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            if "_conv_forward" in m.__dict__:
                del m.__dict__["_conv_forward"]
            if enabled and m.padding_mode == "zeros" and not isinstance(m.padding, str):
                m._conv_forward = types.MethodType(_permuted_conv_forward, m)
    return module
