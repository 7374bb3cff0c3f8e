"""The SinGAN-family generator stack (SinGAN, SinGAN-GIF, SinGAN-3D, ConSinGAN-3D) and the
image + video critic container.

Synthesis (SinGAN Eq. 1-2): x_0 = G_0(z_0), x_n = up(x_{n-1}) + G_n(up(x_{n-1}) + z_n), with
z_n ~ N(0, amp_n^2) (amp_0 = 1). Which generator a scale gets is the preset's choice:

    "3d"      dense Conv3d (SinGAN-3D, ConSinGAN-3D; SinGAN-GIF's first version)
    "sep3d"   channel-wise separable Conv3d (SinGAN-GIF's coarse scales)
    "hybrid"  a 2D network on each frame + its temporal neighbours (SinGAN-GIF's fine scales);
              z_n is one H x W map shared by all frames (Sec. 3.3.2)
    "image"   a 2D network on the single frame (image mode, T = 1)

Buffers that the trainer sets and ``generator.pt`` carries: ``noise_amps`` per scale, ``z_opt``
(the fixed reconstruction noise of the coarsest scale for the whole input, all its clips
concatenated in time, so a chunk's map is a T-frame slice of it: SinGAN-GIF Sec. 3.2) and
``path_frames`` (the trained clip length, the knot spacing of the latent path for slo-mo).
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn

from ..pyramid import ScaleShape, resize
from .blocks import conv_stack
from .generator import ScaleGenerator
from .input_grad import input_gradient
from .separable import FrameGenerator, SeparableConv3d, SeparableGenerator

_RESIZABLE_BUFFERS = ("noise_amps", "z_opt", "path_frames")


def latent_path(batch: int, frames: int, thw_hw: tuple[int, int], step: float, generator=None, device=None,
                dtype=torch.float32) -> torch.Tensor:
    """SinGAN-GIF Sec. 5.2: noise along a path in latent space, (B, 3, frames, H, W).

    Knots every ``step`` frames alternate between Gaussians centred at -1 and +1; a frame
    between two knots is their linear interpolation, (n/N) z1 + ((N-n)/N) z2. For a clip of the
    trained length there are two knots (the paper's path); a longer or slowed-down clip keeps
    the trained spacing (``step`` = (trained frames - 1) * slow-down factor).
    """
    h, w = thw_hw
    knots = int((frames - 1) // step) + 2
    centres = torch.tensor([-1.0 if k % 2 == 0 else 1.0 for k in range(knots)], device=device)
    z = torch.randn((batch, 3, knots, h, w), generator=generator, device=device) + centres[None, None, :, None, None]
    pos = torch.arange(frames, device=device, dtype=torch.float32) / step
    k0 = pos.floor().long().clamp(max=knots - 2)
    a = (pos - k0)[None, None, :, None, None]
    return ((1 - a) * z[:, :, k0] + a * z[:, :, k0 + 1]).to(dtype)


def singan_init(module: nn.Module) -> nn.Module:
    """SinGAN's initialisation: conv weights ~ N(0, 0.02), BatchNorm scales ~ N(1, 0.02), zero
    biases. The last conv of a generator then outputs almost nothing, so every new scale
    starts as plain up-sampling of the one below and learns a small residual; with PyTorch's
    default init the residual starts at about +-0.5 and takes thousands of steps to shrink.
    A separable conv's per-channel temporal kernel starts as a temporal mean (1/k) so that
    the pair starts as the spatial conv alone, not as a product of two tiny weights."""
    for m in module.modules():
        if isinstance(m, SeparableConv3d):
            nn.init.normal_(m.spatial.weight, 0.0, 0.02)
            nn.init.normal_(m.temporal.weight, 1.0 / m.temporal.weight.shape[2], 0.02)
            if m.temporal.bias is not None:
                nn.init.zeros_(m.temporal.bias)
        elif isinstance(m, (nn.Conv2d, nn.Conv3d)) and not any(m is c.temporal or m is c.spatial
                                                              for c in module.modules()
                                                              if isinstance(c, SeparableConv3d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


class SinGANStack(nn.Module):
    def __init__(self, channels: int = 32, num_blocks: int = 5, kernel: int = 3, dims: int = 3,
                 conv3d_scales: int = -1, separable: bool = False, neighbours: int = 1, latent_path: bool = False):
        super().__init__()
        self.dims, self.conv3d_scales, self.separable = dims, conv3d_scales, separable
        self.neighbours, self.latent_path = neighbours, latent_path
        self._arch = dict(channels=channels, num_blocks=num_blocks, kernel=kernel)
        self.generators = nn.ModuleList()
        self.register_buffer("noise_amps", torch.zeros(0))
        self.register_buffer("z_opt", torch.zeros(0))
        self.register_buffer("path_frames", torch.zeros((), dtype=torch.long))

    # -- structure -----------------------------------------------------------
    @property
    def num_scales(self) -> int:
        return len(self.generators)

    def kind(self, n: int) -> str:
        if self.dims == 2:
            return "image"
        if self.conv3d_scales < 0 or n < self.conv3d_scales:
            return "sep3d" if self.separable else "3d"
        return "hybrid"

    def _new_generator(self, kind: str) -> nn.Module:
        a = self._arch
        if kind == "3d":
            return singan_init(ScaleGenerator(3, a["channels"], 3, a["num_blocks"], a["kernel"], dims=3))
        if kind == "sep3d":
            return singan_init(SeparableGenerator(3, a["channels"], 3, a["num_blocks"], a["kernel"]))
        r = self.neighbours if kind == "hybrid" else 0
        inner = ScaleGenerator(3 * (2 * r + 1), a["channels"], 3, a["num_blocks"], a["kernel"], dims=2)
        return FrameGenerator(singan_init(inner), r)

    def grow(self) -> None:
        """Add G_n, initialised from G_{n-1} when it has the same kind (SinGAN's warm start)."""
        n = self.num_scales
        kind = self.kind(n)
        g = copy.deepcopy(self.generators[-1]) if n > 0 and self.kind(n - 1) == kind else self._new_generator(kind)
        self.generators.append(g.to(self.noise_amps.device))
        self.noise_amps = torch.cat([self.noise_amps, self.noise_amps.new_full((1,), 1.0 if n == 0 else 0.0)])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The per-run buffers are sized by training (number of scales, clips, frames); take the
        # stored sizes so that a stack built from model_args loads any generator.pt.
        for name in _RESIZABLE_BUFFERS:
            key = prefix + name
            if key in state_dict:
                cur = getattr(self, name)
                setattr(self, name, torch.zeros(state_dict[key].shape, dtype=cur.dtype, device=cur.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- noise ---------------------------------------------------------------
    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def make_noise(self, n: int, shape: ScaleShape, batch: int = 1, generator: torch.Generator | None = None,
                   factor: int = 1) -> torch.Tensor:
        """z_n, already multiplied by amp_n. ``factor``: slow-down of the latent path."""
        dev, dt = self.noise_amps.device, self._dtype()
        if n == 0 and self.latent_path:
            step = max(1, int(self.path_frames) - 1) * factor
            z = latent_path(batch, shape.frames, (shape.height, shape.width), step, generator, dev, dt)
        else:
            t = 1 if self.kind(n) == "hybrid" else shape.frames
            z = torch.randn((batch, 3, t, shape.height, shape.width), generator=generator, device=dev).to(dt)
        return z * self.noise_amps[n].to(dt)

    def draw_z_opt(self, clips: int, shape0: ScaleShape, generator: torch.Generator | None = None) -> None:
        """Draw the reconstruction noise once: one map for all clips of the input, end to end."""
        frames = clips * shape0.frames
        dev, dt = self.noise_amps.device, self._dtype()
        if self.latent_path:
            self.z_opt = latent_path(1, frames, (shape0.height, shape0.width), max(1, shape0.frames - 1),
                                     generator, dev, dt)
        else:
            self.z_opt = torch.randn((1, 3, frames, shape0.height, shape0.width), generator=generator, device=dev).to(dt)
        self.path_frames = torch.tensor(shape0.frames, device=dev)

    def z_opt_chunks(self, clips: Sequence[int], frames: int) -> torch.Tensor:
        """The T-frame slices of z_opt for clips ``clips``, as a batch (len(clips), 3, T, H, W)."""
        return torch.cat([self.z_opt[:, :, c * frames:(c + 1) * frames] for c in clips])

    # -- synthesis -----------------------------------------------------------
    def step(self, prev: torch.Tensor | None, n: int, shape: ScaleShape, noise: torch.Tensor | None) -> torch.Tensor:
        """One scale of Eq. 2 (Eq. 1 at n = 0, where ``prev`` is ignored and noise is the input)."""
        if n == 0:
            return self.generators[0](noise)
        up = resize(prev, shape.thw)
        return up + self.refine_upsampled(up, n, noise)

    def refine_upsampled(self, up: torch.Tensor, n: int, noise: torch.Tensor | None = None) -> torch.Tensor:
        """The residual G_n(up [+ z_n]) for an already up-sampled input (Eq. 2 without the skip)."""
        return self.generators[n](up if noise is None else up + noise)

    def refine(self, prev: torch.Tensor, n: int, shape: ScaleShape, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.step(prev, n, shape, noise)

    def run(self, x: torch.Tensor | None, shapes: Sequence[ScaleShape], start: int, stop: int, batch: int = 1,
            generator: torch.Generator | None = None, noise: bool = True, factor: int = 1) -> torch.Tensor:
        """Scales start..stop from ``x`` (the output of scale start-1; None when start is 0)."""
        for n in range(start, stop + 1):
            z = self.make_noise(n, shapes[n], batch, generator, factor) if noise or n == 0 else None
            x = self.step(x, n, shapes[n], z)
        return x

    def reconstruct(self, shapes: Sequence[ScaleShape], clips: Sequence[int], stop: int) -> torch.Tensor:
        """The z_opt path: G_0(z_opt chunk), then no noise at the finer scales (SinGAN's z_opt = (z*, 0, ...))."""
        x = self.step(None, 0, shapes[0], self.z_opt_chunks(clips, shapes[0].frames) * self.noise_amps[0])
        for n in range(1, stop + 1):
            x = self.step(x, n, shapes[n], None)
        return x

    def sample(self, shapes: Sequence[ScaleShape], batch: int = 1, generator: torch.Generator | None = None,
               stop: int | None = None, factor: int = 1) -> torch.Tensor:
        stop = self.num_scales - 1 if stop is None else stop
        return self.run(None, shapes, 0, stop, batch, generator, factor=factor)


class SinGANCritic(nn.Module):
    """SinGAN's WDiscriminator: conv-BatchNorm-LeakyReLU blocks and a linear last conv, one
    score per patch. Unlike HP-VAE-GAN's PatchCritic there is no spectral norm: SinGAN relies
    on the gradient penalty alone, and a spectrally normalised critic gives these small
    generators too weak a signal to learn from in a few hundred steps."""

    def __init__(self, channels: int, num_blocks: int, kernel: int, dims: int):
        super().__init__()
        self.body = singan_init(conv_stack(3, channels, 1, num_blocks, kernel, norm="batch", last_norm="none",
                                           last_act="none", dims=dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def input_gradient(self, x: torch.Tensor) -> torch.Tensor:
        """grad_x sum(self(x)), exact through BatchNorm's batch statistics (models/input_grad.py)."""
        return input_gradient(self.body, x)


class SinGANCritics(nn.Module):
    """The critics of one scale in one module, so that they train as one engine: a per-frame
    2D patch critic (``image``) and/or a spatio-temporal 3D patch critic (``video``). Dense
    convolutions in both (SinGAN-GIF found separable critics unstable)."""

    def __init__(self, channels: int, num_blocks: int, kernel: int, image: bool, video: bool):
        super().__init__()
        self.image = SinGANCritic(channels, num_blocks, kernel, dims=2) if image else None
        self.video = SinGANCritic(channels, num_blocks, kernel, dims=3) if video else None

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """Image-critic scores of every frame of (B, C, T, H, W)."""
        b, c, t, h, w = x.shape
        return self.image(x.transpose(1, 2).reshape(b * t, c, h, w))

    def frames_input_gradient(self, x: torch.Tensor) -> torch.Tensor:
        """grad_x sum(self.frames(x)) for (B, C, T, H, W) ``x``."""
        b, c, t, h, w = x.shape
        g = self.image.input_gradient(x.transpose(1, 2).reshape(b * t, c, h, w))
        return g.reshape(b, t, c, h, w).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # for tools that call the module itself
        return self.video(x) if self.video is not None else self.frames(x)
