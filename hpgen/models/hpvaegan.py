"""The HP-VAE-GAN generator stack (Sec. 3): E, G^0 (patch-VAE decoder) and G^1..G^N.

Only the synthesis maths lives here (Eq. 6 and Eq. 9); which parts train, with which
losses, is decided by hpgen/methods/hpvaegan.py. Videos are (B, C, T, H, W); in image
mode (``dims=2``) they keep T=1 and the 2D convolutions see (B, C, H, W).
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn

from ..errors import HpgenError
from ..pyramid import Box, ScaleShape, resize, resize_window, source_box
from .encoder import PatchEncoder
from .generator import ScaleGenerator


class HPVAEGAN(nn.Module):
    def __init__(self, channels: int = 64, latent_channels: int = 128, num_blocks: int = 5, kernel: int = 3,
                 dims: int = 3, vae_scales: int = 4, encoder_blocks: int = 0, norm_stats: str = "running",
                 output: str = "residual"):
        """``encoder_blocks``: conv blocks of E before its heads (0: ``num_blocks``).
        ``norm_stats``: "batch" makes every BatchNorm of the generators normalise with the
        statistics of the batch it sees, in training, in the frozen prefix and at sampling
        (a sample is normalised by its own statistics); "running" uses the running averages
        outside training (PyTorch's eval mode). ``output``: how G^n (n >= 1) meets the
        up-sampled input: "residual", up + tanh(G^n(.)) (Eq. 6 as written, G^n ending in tanh), or
        "tanh", tanh(up + G^n(.)) with a linear last conv (the authors' code)."""
        super().__init__()
        self.dims, self.vae_scales, self.latent_channels = dims, vae_scales, latent_channels
        self.norm_stats = norm_stats
        if output not in ("residual", "tanh"):
            raise HpgenError(f"unknown output {output!r} (residual or tanh)")
        self.output = output
        arch = dict(channels=channels, num_blocks=num_blocks, kernel=kernel, dims=dims)
        self._arch = arch
        self._gen_arch = dict(arch, norm_stats=norm_stats)
        enc_arch = dict(arch, num_blocks=encoder_blocks or num_blocks)
        self.encoder = PatchEncoder(3, latent_channels=latent_channels, **enc_arch)
        self.decoder = ScaleGenerator(latent_channels, **self._gen_arch)  # G^0
        self.generators = nn.ModuleList()  # G^1 .. G^N, grown one scale at a time
        # z_n amplitude per scale (0 for the VAE scales, which take no noise).
        self.register_buffer("noise_amps", torch.zeros(1))

    @property
    def num_scales(self) -> int:
        return 1 + len(self.generators)

    def grow(self) -> None:
        """Add G^n initialised from G^{n-1} (G^1 is new: G^0 decodes latents, not RGB)."""
        if len(self.generators) == 0:
            g = ScaleGenerator(3, **self._gen_arch, last_act="tanh" if self.output == "residual" else "none")
        else:
            g = copy.deepcopy(self.generators[-1])
        self.generators.append(g.to(self.noise_amps.device))
        self.noise_amps = torch.cat([self.noise_amps, self.noise_amps.new_zeros(1)])

    def generator(self, n: int) -> nn.Module:
        return self.decoder if n == 0 else self.generators[n - 1]

    def is_gan_scale(self, n: int) -> bool:
        return n >= self.vae_scales

    # -- layout helpers ------------------------------------------------------
    def _run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.dims == 2:
            return module(x[:, :, 0]).unsqueeze(2)
        return module(x)

    # -- the maths -----------------------------------------------------------
    def encode(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.dims == 2:
            mu, logvar = self.encoder(x0[:, :, 0])
            return mu.unsqueeze(2), logvar.unsqueeze(2)
        return self.encoder(x0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x^0 = G^0(z)."""
        return self._run(self.decoder, z)

    def refine(self, prev: torch.Tensor, n: int, shape: ScaleShape, noise: torch.Tensor | None = None
               ) -> torch.Tensor:
        """Eq. 6 / Eq. 9 at scale n >= 1: up(prev) + G^n(up(prev) [+ z_n])."""
        up = resize(prev, shape.thw)
        return self.combine(up, self.refine_upsampled(up, n, noise))

    def combine(self, up: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """x^n from up(x^{n-1}) and G^n's output (see ``output``)."""
        return up + residual if self.output == "residual" else torch.tanh(up + residual)

    def refine_upsampled(self, up: torch.Tensor, n: int, noise: torch.Tensor | None = None) -> torch.Tensor:
        """The residual G^n(up [+ z_n]) for an already up-sampled input."""
        return self._run(self.generators[n - 1], up if noise is None else up + noise)

    def make_noise(self, n: int, shape: ScaleShape, batch: int = 1, generator: torch.Generator | None = None
                   ) -> torch.Tensor | None:
        """z_n of Eq. 9: N(0, amp_n^2) at the patch-GAN scales; None at the patch-VAE scales,
        which refine deterministically."""
        if not self.is_gan_scale(n):
            return None
        amp = self.noise_amps[n]
        dtype = next(self.parameters()).dtype
        return torch.randn((batch, 3, *shape.thw), device=amp.device, dtype=dtype, generator=generator) * amp.to(dtype)

    def latent_shape(self, batch: int, shape0: ScaleShape) -> tuple[int, ...]:
        return (batch, self.latent_channels, *shape0.thw)

    def synthesize(self, z: torch.Tensor, shapes: Sequence[ScaleShape], stop: int | None = None,
                   noise: bool = True, generator: torch.Generator | None = None,
                   return_all: bool = False, noises: Sequence[torch.Tensor | None] | None = None):
        """Eq. 9 from a latent ``z`` up to scale ``stop`` (default: the finest trained).

        ``noise=False`` gives the reconstruction path (Eq. 6) when ``z`` is the encoder's
        mean. ``generator`` makes the per-scale noise reproducible; ``noises[n]``, when
        given, is used as z_n instead of drawing it.
        """
        stop = self.num_scales - 1 if stop is None else stop
        x = self.decode(z)
        outs = [x]
        for n in range(1, stop + 1):
            if noises is not None:
                zn = noises[n]
            else:
                zn = self.make_noise(n, shapes[n], x.shape[0], generator) if noise else None
            x = self.refine(x, n, shapes[n], zn)
            outs.append(x)
        return outs if return_all else x

    def sample(self, shapes: Sequence[ScaleShape], batch: int = 1, generator: torch.Generator | None = None,
               stop: int | None = None, tile: int = 0) -> torch.Tensor:
        """A random video: z' ~ N(0, I) through G^0 .. G^stop (Eq. 9).

        ``tile`` > 0 builds the finest frame from ``tile`` x ``tile`` windows (``Windows``), so
        activation memory follows the tile, not the frame; same noise, same video up to
        rounding."""
        p = self.noise_amps
        z = torch.randn(self.latent_shape(batch, shapes[0]), device=p.device, generator=generator)
        z = z.to(next(self.parameters()).dtype)
        if not tile:
            return self.synthesize(z, shapes, stop=stop, generator=generator)
        if self.norm_stats == "batch":
            raise HpgenError("tiled sampling needs running BatchNorm statistics (model.norm_stats = \"running\"): "
                             "with per-sample statistics a tile would be normalised by itself, not by the frame")
        stop = self.num_scales - 1 if stop is None else stop
        # The same draws, in the same order, as synthesize makes them.
        noises = [None] + [self.make_noise(n, shapes[n], batch, generator) for n in range(1, stop + 1)]
        win = Windows(self, z, shapes, noises)
        s = shapes[stop]
        rows = []
        for y in range(0, s.height, tile):
            rows.append(torch.cat([win.x(stop, (y, min(y + tile, s.height), x, min(x + tile, s.width)))
                                   for x in range(0, s.width, tile)], dim=-1))
        return torch.cat(rows, dim=-2)


class Windows:
    """Eq. 9 evaluated on windows of the frame instead of whole frames, for a fixed latent
    ``z`` and per-scale noises ``noises[k]`` (full-frame, None where a scale takes none).

    A window of x^k needs up(x^{k-1}) and z_k on the window grown by the generator's reach
    (``num_blocks * (kernel // 2)`` pixels: nothing further away influences it, and where the
    grown window meets the frame edge the zero padding is the frame's own), and a window of
    up(x^k) needs only the rows and columns its bilinear taps read. Scales whose window
    covers the frame are computed whole, once. Training on crops uses it for the random
    prefix; tiled sampling for the finest frame. Frozen (eval-mode) generators only: in
    training mode BatchNorm would normalise with the window's statistics."""

    def __init__(self, model: HPVAEGAN, z: torch.Tensor, shapes: Sequence[ScaleShape],
                 noises: Sequence[torch.Tensor | None]):
        self.model, self.z, self.shapes, self.noises = model, z, shapes, noises
        self.reach = model._arch["num_blocks"] * (model._arch["kernel"] // 2)
        self.hw = [(s.height, s.width) for s in shapes]
        self._whole: dict[int, torch.Tensor] = {}

    def whole(self, k: int) -> torch.Tensor:
        if k not in self._whole:
            self._whole[k] = self.model.decode(self.z) if k == 0 else \
                self.model.refine(self.whole(k - 1), k, self.shapes[k], self.noises[k])
        return self._whole[k]

    def x(self, k: int, box: Box) -> torch.Tensor:
        """x^k on ``box`` (rows y0:y1, columns x0:x1)."""
        h, w = self.hw[k]
        if k == 0 or box == (0, h, 0, w):
            return self.whole(k)[..., box[0]:box[1], box[2]:box[3]]
        r = self.reach
        e = (max(box[0] - r, 0), min(box[1] + r, h), max(box[2] - r, 0), min(box[3] + r, w))
        up = self.up(k, e)
        zk = self.noises[k]
        zk = None if zk is None else zk[..., e[0]:e[1], e[2]:e[3]]
        xe = self.model.combine(up, self.model.refine_upsampled(up, k, zk))
        return xe[..., box[0] - e[0]:box[1] - e[0], box[2] - e[2]:box[3] - e[2]]

    def up(self, k: int, box: Box) -> torch.Tensor:
        """up(x^{k-1}) at scale k's size, on ``box``."""
        src = source_box(box, self.hw[k - 1], self.hw[k])
        return resize_window(self.x(k - 1, src), src, self.hw[k - 1], self.shapes[k].thw, box)
