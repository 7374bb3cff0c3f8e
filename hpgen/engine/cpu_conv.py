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

Below that, where no order of the axes reaches the threshold (the coarsest scales: 16 channels
at 8x21x37, 32 channels at 3x18x32), the convolution is run as one Conv2d over the frames
instead (``frames_conv3d``): the kT time-shifted copies of the input are stacked on the
channels and the frames folded into the batch, so the N x T batch of a 2D convolution takes
oneDNN. The same sum of products in another order (float32 rounding apart), 3-6x faster in
forward + backward than slow_conv3d at those sizes, with kT x the input's memory, which is
small there (`bench/bench_train.py --cpu-conv permute,hpgen`; docs/BENCHMARKS.md).
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
    a small input takes slow_conv3d in every order and goes to ``frames_path`` instead). A
    one-rank run on 2 clips (oneDNN) and a 2-rank run on 1 clip each (oneDNN by either path)
    differ by float32 rounding, as before; tests/test_distributed.py bounds it."""
    n, c, *sizes = shape
    if dtype != torch.float32 or n != 1 or groups != 1 or n * c * sizes[0] * sizes[1] > SLOW_CONV_MAX_NCDH:
        return None
    short = min(range(3), key=lambda i: (sizes[i], -i))  # the shortest axis; ties: the last one
    order = [i for i in range(3) if i != short] + [short]
    return order if n * c * sizes[order[0]] * sizes[order[1]] > SLOW_CONV_MAX_NCDH else None


def frames_path(shape, groups: int = 1, dtype=torch.float32, kernel=(3, 3, 3)) -> bool:
    """True where a CPU convolution of an input of ``shape`` takes slow_conv3d in every order of
    its spatial axes (``permuted_order`` is None, and PyTorch's own choice is the slow kernel:
    one float32 clip, groups 1, a kernel not above 3 in both of its last two sizes, a small
    N x C x D x H), so that ``frames_conv3d`` is the faster way to run it."""
    n, c, *sizes = shape
    if dtype != torch.float32 or n != 1 or groups != 1 or (kernel[1] > 3 and kernel[2] > 3):
        return False
    if n * c * sizes[0] * sizes[1] > SLOW_CONV_MAX_NCDH:
        return False
    return permuted_order(shape, groups, dtype) is None


def frames_conv3d(conv: nn.Conv3d, input: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    """``conv``'s convolution (groups 1, zero padding) as one Conv2d over the output frames:
    output frame t is the sum over the kT kernel taps dt of conv2d(input frame
    t*stride + dt*dilation - padding, weight[:, :, dt]), so the kT shifted frames are stacked
    on the channel axis (channel-major, as the weight flattens) and the frames on the batch."""
    n, c, t, h, w = input.shape
    kt, s, d, p = weight.shape[2], conv.stride[0], conv.dilation[0], conv.padding[0]
    padded = F.pad(input, (0, 0, 0, 0, p, p))
    t_out = (t + 2 * p - d * (kt - 1) - 1) // s + 1
    taps = [padded[:, :, dt * d: dt * d + (t_out - 1) * s + 1: s] for dt in range(kt)]
    stacked = torch.stack(taps, 2).permute(0, 3, 1, 2, 4, 5).reshape(n * t_out, c * kt, h, w)
    y = F.conv2d(stacked, weight.reshape(weight.shape[0], c * kt, *weight.shape[3:]), bias,
                 conv.stride[1:], conv.padding[1:], conv.dilation[1:])
    return y.reshape(n, t_out, *y.shape[1:]).transpose(1, 2)


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
        if self.__dict__.get("_always_frames"):
            return frames_conv3d(self, input, weight, bias)
        order = [1, 2, 0] if self.__dict__.get("_always_permute") else \
            permuted_order(input.shape, self.groups, input.dtype)
        if order is not None:
            return permuted_conv3d(self, input, weight, bias, order)
        if not self.__dict__.get("_no_frames") and frames_path(input.shape, self.groups, input.dtype, weight.shape[2:]):
            return frames_conv3d(self, input, weight, bias)
    return nn.Conv3d._conv_forward(self, input, weight, bias)


def set_cpu_conv3d_layout(module: nn.Module, enabled: bool = True, always: bool | str = False,
                          frames: bool = True) -> nn.Module:
    """Run every zero-padded Conv3d of ``module`` through the permuted CPU path where it makes
    PyTorch choose oneDNN, and through the frames path where nothing else would (no effect on
    other devices). Per instance, so a deep copy (a new scale's generator) keeps it.
    ``always`` permutes every call, ``always="frames"`` takes the frames path on every call
    (tests of the maths); ``frames=False`` leaves the frames path out (bench/bench_train.py's
    baseline)."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            for key in ("_conv_forward", "_always_permute", "_always_frames", "_no_frames"):
                m.__dict__.pop(key, None)
            if enabled and m.padding_mode == "zeros" and not isinstance(m.padding, str):
                m._conv_forward = types.MethodType(_cpu_conv_forward, m)
                if not frames:
                    m._no_frames = True
                if always == "frames":
                    m._always_frames = m.groups == 1
                elif always:
                    m._always_permute = True
    return module
