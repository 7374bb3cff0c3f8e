"""The SinGAN family as one method whose ``[singan]`` options are the presets (docs/methods.md):

    SinGAN-GIF     separable 3D generators at the coarsest ``conv3d_scales`` scales, 2D
                   frame+neighbour generators above; image (weight 1) + video (alpha = 5)
                   critics; reconstruction beta = 50; colour statistics gamma = 2
    SinGAN-3D      dense 3D generators everywhere, one 3D critic, reconstruction 10
    ConSinGAN-3D   SinGAN-3D with ``concurrent`` stages trained at once, the stage k below the
                   newest at lr * lr_scale**k
    image mode     (pyramid.image) the same with 2D generators and one 2D critic

Per scale n the generators max(0, n-concurrent+1)..n train; everything below is frozen and
its output is computed once per iteration (random path) or once per scale (reconstruction).
Each iteration picks one clip (a T-frame chunk of a long input, with its slice of z_opt) and,
when slo-mo is trained, a frame-rate factor f: the generator then makes f*T frames along the
latent path, the video critic sees every f-th frame and the image critic all of them.
"""
from __future__ import annotations

from typing import Callable

import torch

from .. import losses
from ..errors import HpgenError
from ..models.singan import SinGANCritics, SinGANStack
from ..pyramid import ScaleShape, resize
from .base import ScaleState

Phase = tuple[str, Callable[[], tuple[torch.Tensor, dict]]]


def factor_shapes(shapes, factor: int) -> list[ScaleShape]:
    """The pyramid with ``factor`` times the frames at every scale (slo-mo training/sampling)."""
    if factor == 1:
        return list(shapes)
    return [ScaleShape(s.frames * factor, s.height, s.width, s.rate) for s in shapes]


class SinGANMethod:
    name = "singan"

    def __init__(self, cfg):
        self.cfg, self.tr, self.sg = cfg, cfg.train, cfg.singan
        self.dims = 2 if cfg.pyramid.image else 3
        if self.dims == 2 and self.sg.slomo_factors != [1]:
            raise HpgenError("singan.slomo_factors needs video; image mode trains on one frame")
        # In image mode the frame is the whole sample: one 2D critic (SinGAN).
        self.w_img = 1.0 if self.dims == 2 else self.sg.image_critic
        self.w_vid = 0.0 if self.dims == 2 else self.sg.video_critic

    # -- networks --------------------------------------------------------------
    def model_args(self) -> dict:
        m, sg = self.cfg.model, self.sg
        return dict(channels=m.channels, num_blocks=m.num_blocks, kernel=m.kernel, dims=self.dims,
                    conv3d_scales=sg.conv3d_scales, separable=sg.separable, neighbours=sg.neighbours,
                    latent_path=sg.slomo_factors != [1])

    def build_model(self) -> SinGANStack:
        return SinGANStack(**self.model_args())

    @classmethod
    def model_from_args(cls, args: dict, num_scales: int) -> SinGANStack:
        model = SinGANStack(**args)
        for _ in range(num_scales):
            model.grow()
        return model

    @staticmethod
    def sample(model: SinGANStack, shapes, batch: int = 1, generator=None, stop=None, factor: int = 1, tile: int = 0):
        if tile:
            raise HpgenError("tiled sampling (--tile) is implemented for hpvaegan runs only")
        return model.sample(factor_shapes(shapes, factor), batch=batch, generator=generator, stop=stop, factor=factor)

    def grow(self, model: SinGANStack, critic, n: int):
        """Add G_n (warm-started from G_{n-1}); the critics continue from scale n-1 (SinGAN's D init)."""
        while model.num_scales <= n:
            model.grow()
        if critic is None:
            m = self.cfg.model
            critic = SinGANCritics(m.channels, m.num_blocks, m.kernel, image=self.w_img > 0, video=self.w_vid > 0)
        return critic

    def trained_scales(self, n: int) -> range:
        return range(max(0, n - self.sg.concurrent + 1), n + 1)

    def param_groups(self, model: SinGANStack, critic, n: int) -> dict[str, list[dict]]:
        model.requires_grad_(False).eval()
        g = []
        for m in self.trained_scales(n):
            gen = model.generators[m]
            gen.requires_grad_(True).train()
            g.append({"params": list(gen.parameters()), "lr": self.tr.lr * self.sg.lr_scale ** (n - m)})
        critic.requires_grad_(True).train()
        return {"g": g, "d": [{"params": list(critic.parameters()), "lr": self.tr.lr}]}

    # -- per scale / per iteration set-up -------------------------------------
    @torch.no_grad()
    def begin_scale(self, model: SinGANStack, st: ScaleState) -> None:
        n, clips = st.n, st.reals[0].shape[0]
        if model.z_opt.numel() == 0:  # drawn once per run (a resumed run loads it)
            model.draw_z_opt(clips, st.shapes[0])
        lo = self.trained_scales(n)[0]
        all_clips = list(range(clips))
        if n > 0 and float(model.noise_amps[n]) == 0.0:
            # SinGAN-GIF Sec. 3.4.2: amp_n from the RMSE between the up-sampled reconstruction
            # and x_n over all frames and clips. Set once when scale n starts (a resumed run
            # loads it; ConSinGAN's lower stages keep the amplitude they started with).
            up = resize(model.reconstruct(st.shapes, all_clips, n - 1), st.shapes[n].thw)
            model.noise_amps[n] = self.tr.noise_amp * losses.rmse(up, st.reals[n])
        # The frozen part of the reconstruction path (scales < lo), for every clip.
        st.cache["rec_prefix"] = model.reconstruct(st.shapes, all_clips, lo - 1) if lo > 0 else None

    @torch.no_grad()
    def begin_iteration(self, model: SinGANStack, st: ScaleState) -> None:
        clips = st.reals[0].shape[0]
        st.cache["clip"] = int(torch.randint(clips, (1,)))
        factors = self.sg.slomo_factors
        f = factors[int(torch.randint(len(factors), (1,)))] if len(factors) > 1 else factors[0]
        st.cache["factor"] = f
        shapes = factor_shapes(st.shapes, f)
        st.cache["shapes_f"] = shapes
        lo = self.trained_scales(st.n)[0]
        st.cache["fake_prefix"] = model.run(None, shapes, 0, lo - 1, factor=f) if lo > 0 else None

    def _fake(self, model: SinGANStack, st: ScaleState) -> torch.Tensor:
        lo = self.trained_scales(st.n)[0]
        return model.run(st.cache["fake_prefix"], st.cache["shapes_f"], lo, st.n, factor=st.cache["factor"])

    def _reconstruction(self, model: SinGANStack, st: ScaleState) -> torch.Tensor:
        c, lo = st.cache["clip"], self.trained_scales(st.n)[0]
        if lo == 0:
            return model.reconstruct(st.shapes, [c], st.n)
        x = st.cache["rec_prefix"][c:c + 1]
        for m in range(lo, st.n + 1):
            x = model.step(x, m, st.shapes[m], None)
        return x

    # -- phases ----------------------------------------------------------------
    def phases(self, model: SinGANStack, critic, st: ScaleState) -> list[Phase]:
        return ([("d", lambda i=i: self.critic_loss(model, critic, st, i)) for i in range(self.tr.critic_steps)]
                + [("g", lambda: self.generator_loss(model, critic, st))] * self.tr.generator_steps)

    def critic_loss(self, model: SinGANStack, critic: SinGANCritics, st: ScaleState, i: int = 0):
        """Eq. 3-4: image WGAN-GP + alpha * video WGAN-GP, each with its own gradient penalty."""
        gp_weight = self.tr.gp_weight_at(st.step * self.tr.critic_steps + i)
        explicit = self.tr.gp_method == "explicit"
        critic.requires_grad_(True)  # the generator phase froze it
        with torch.no_grad():
            fake = self._fake(model, st)
        real = st.reals[st.n][st.cache["clip"]:st.cache["clip"] + 1]
        f = st.cache["factor"]
        loss, stats = fake.new_zeros((), dtype=torch.float32), {}
        if self.w_vid:
            lv, s = losses.wgan_critic(critic.video, real, fake[:, :, ::f], gp_weight, gp_norm=self.tr.gp_norm,
                                       input_grad=critic.video.input_gradient if explicit else None)
            loss = loss + self.w_vid * lv
            stats.update({f"vid_{k}": v for k, v in s.items()})
        if self.w_img:
            # Every generated frame is judged; the real frames are repeated f times so that the
            # penalty's interpolates pair each fake frame with a real one.
            li, s = losses.wgan_critic(critic.frames, real.repeat_interleave(f, dim=2), fake, gp_weight,
                                       gp_norm=self.tr.gp_norm,
                                       input_grad=critic.frames_input_gradient if explicit else None)
            loss = loss + self.w_img * li
            stats.update({f"img_{k}": v for k, v in s.items()})
        stats["wdist"] = stats.get("vid_wdist", stats.get("img_wdist"))
        stats["loss_d"] = loss.detach()
        return loss, stats

    def generator_loss(self, model: SinGANStack, critic: SinGANCritics, st: ScaleState):
        """Eq. 3: adversarial (image + alpha video) + beta * reconstruction (Eq. 5) + gamma * Eq. 6."""
        fake = self._fake(model, st)
        f = st.cache["factor"]
        # D gets no gradient from this phase. It stays frozen through the backward too (the
        # critic phase unfreezes it), so activation checkpointing recomputes the same graph.
        critic.requires_grad_(False)
        adv = fake.new_zeros((), dtype=torch.float32)
        if self.w_vid:
            adv = adv + self.w_vid * losses.wgan_generator(critic.video, fake[:, :, ::f])
        if self.w_img:
            adv = adv + self.w_img * losses.wgan_generator(critic.frames, fake)
        c = st.cache["clip"]
        rec = losses.reconstruction(self._reconstruction(model, st), st.reals[st.n][c:c + 1])
        loss = adv + self.tr.recon_weight * rec
        stats = {"adv": adv.detach(), "rec": rec.detach()}
        if self.sg.stat_weight:
            stat = losses.colour_statistics(fake, st.reals[st.n])
            loss = loss + self.sg.stat_weight * stat
            stats["stat"] = stat.detach()
        stats["loss_g"] = loss.detach()
        return loss, stats
