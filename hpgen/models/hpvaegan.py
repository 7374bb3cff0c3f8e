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

from ..pyramid import ScaleShape, resize
from .encoder import PatchEncoder
from .generator import ScaleGenerator


class HPVAEGAN(nn.Module):
    def __init__(self, channels: int = 64, latent_channels: int = 128, num_blocks: int = 5, kernel: int = 3,
                 dims: int = 3, vae_scales: int = 4):
        super().__init__()
        self.dims, self.vae_scales, self.latent_channels = dims, vae_scales, latent_channels
        arch = dict(channels=channels, num_blocks=num_blocks, kernel=kernel, dims=dims)
        self._arch = arch
        self.encoder = PatchEncoder(3, latent_channels=latent_channels, **arch)
        self.decoder = ScaleGenerator(latent_channels, **arch)  # G^0
        self.generators = nn.ModuleList()  # G^1 .. G^N, grown one scale at a time
        # z_n amplitude per scale (0 for the VAE scales, which take no noise).
        self.register_buffer("noise_amps", torch.zeros(1))

    @property
    def num_scales(self) -> int:
        return 1 + len(self.generators)

    def grow(self) -> None:
        """Add G^n initialised from G^{n-1} (G^1 is new: G^0 decodes latents, not RGB)."""
        if len(self.generators) == 0:
            g = ScaleGenerator(3, **self._arch)
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
        return up + self.refine_upsampled(up, n, noise)

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
               stop: int | None = None) -> torch.Tensor:
        """A random video: z' ~ N(0, I) through G^0 .. G^stop (Eq. 9)."""
        p = self.noise_amps
        z = torch.randn(self.latent_shape(batch, shapes[0]), device=p.device, generator=generator)
        return self.synthesize(z.to(next(self.parameters()).dtype), shapes, stop=stop, generator=generator)
