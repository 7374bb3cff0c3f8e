"""Channel-wise separable 3D convolution (SinGAN-GIF Sec. 3.3.1) and the 2D frame generator of
its 3D-2D hybrid pyramid (Sec. 3.3.2).

A k x k x k convolution is split into a 1 x k x k spatial convolution (C_in -> C_out) and a
k x 1 x 1 temporal convolution applied to each output channel on its own (groups = C_out).
The pair is exactly a dense Conv3d whose kernel is the outer product
W[o, i, t, h, w] = T[o, t] * S[o, i, h, w]; for that to hold at the clip's first and last
frames (zero padding in time) the spatial convolution has no bias, only the temporal one.
Parameters: C_in*C_out*k^2 + C_out*k + C_out instead of C_in*C_out*k^3 + C_out.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class SeparableConv3d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 3, bias: bool = True):
        super().__init__()
        p = kernel // 2
        self.spatial = nn.Conv3d(cin, cout, (1, kernel, kernel), padding=(0, p, p), bias=False)
        self.temporal = nn.Conv3d(cout, cout, (kernel, 1, 1), padding=(p, 0, 0), groups=cout, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal(self.spatial(x))

    def dense_weight(self) -> torch.Tensor:
        """The equivalent dense Conv3d kernel (C_out, C_in, k, k, k): the outer product."""
        t = self.temporal.weight[:, 0, :, 0, 0]  # (C_out, k)
        return t[:, None, :, None, None] * self.spatial.weight  # (C_out, C_in, k, k, k)


class SeparableBlock(nn.Sequential):
    """ConvBlock's layout (conv -> BatchNorm -> LeakyReLU, or conv -> tanh for the last block)
    with a separable 3D convolution."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, last: bool = False):
        # No conv bias before BatchNorm (as in ConvBlock): BN removes it exactly, so its
        # gradient is pure rounding noise, which Adam amplifies into lr-sized random steps (a
        # 2-rank run drifted 2e-4 from one rank through these biases alone).
        layers: list[nn.Module] = [SeparableConv3d(cin, cout, kernel, bias=last)]
        layers += [nn.Tanh()] if last else [nn.BatchNorm3d(cout), nn.LeakyReLU(0.2)]
        super().__init__(*layers)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Generators saved before the bias was dropped: fold it into the BatchNorm's running
        # mean, where BN(x + b) with running statistics is exactly BN'(x) with mean - b.
        key = prefix + "0.temporal.bias"
        if key in state_dict and self[0].temporal.bias is None and isinstance(self[1], nn.BatchNorm3d):
            bias = state_dict.pop(key)
            mean = prefix + "1.running_mean"
            if mean in state_dict:
                state_dict[mean] = state_dict[mean] - bias
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class SeparableGenerator(nn.Module):
    """ScaleGenerator's architecture (blocks of conv-BN-LeakyReLU, the last one conv-tanh) built
    from separable 3D convolutions."""

    def __init__(self, in_channels: int = 3, channels: int = 64, out_channels: int = 3, num_blocks: int = 5,
                 kernel: int = 3):
        super().__init__()
        blocks = [SeparableBlock(in_channels if i == 0 else channels, channels, kernel) for i in range(num_blocks - 1)]
        blocks.append(SeparableBlock(channels if num_blocks > 1 else in_channels, out_channels, kernel, last=True))
        self.body = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class FrameGenerator(nn.Module):
    """A 2D network applied to every frame of a (B, C, T, H, W) video, seeing the frame and its
    ``neighbours`` preceding and following frames concatenated on channels (the clip's end
    frames are repeated beyond its ends). ``inner`` maps C*(2*neighbours+1) channels to the
    output channels. With neighbours=0 it is a plain per-frame (image-mode) network."""

    def __init__(self, inner: nn.Module, neighbours: int = 1):
        super().__init__()
        self.inner, self.neighbours = inner, neighbours

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        r = self.neighbours
        if r:
            xp = torch.cat([x[:, :, :1].expand(b, c, r, h, w), x, x[:, :, -1:].expand(b, c, r, h, w)], dim=2)
            x = torch.cat([xp[:, :, k:k + t] for k in range(2 * r + 1)], dim=1)
        y = self.inner(x.transpose(1, 2).reshape(b * t, -1, h, w))
        return y.reshape(b, t, -1, h, w).transpose(1, 2)
