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
When slo-mo is trained, each iteration picks a frame-rate factor f: the generator then makes
f*T frames along the latent path, the video critic sees every f-th frame and the image critic
all of them.

Clips and ranks. A long input is cut into T-frame clips (chunks), each with its T-frame
slice of z_opt; every rank holds every clip (a GIF is small) and the fixed quantities of a
scale (z_opt, the noise amplitudes, the real colour statistics) are computed from all of
them, identically everywhere. Each step trains on ``data.clips_per_step`` clips per
data-parallel replica (0: one, the paper's one chunk per pass), so D replicas train on
k x D clips per step: they are drawn for the global batch (a permutation of the clips, the
same on every rank) and replica r takes positions r*k..(r+1)*k-1. A one-rank run with
k x D clips per step is the same run. Every loss is a sum over the step's clips, scaled so
that the gradient average over the ranks is the global sum (``ScaleState.sum_scale``); all
noise and gradient-penalty draws are made up front for the global batch (``st.draw``).

Pipeline stages split each pass over the scales as in HP-VAE-GAN (``st.pipe.chain``): the
frozen random prefix and the frozen reconstruction path run across the stages, and the
stage that owns scale n trains G_n and its critics. ConSinGAN (``concurrent`` > 1) trains
several scales through one graph, whose gradients would have to cross stages twice per
phase; it is refused on more than one stage (data parallelism works).
"""
from __future__ import annotations

from typing import Callable

import torch

from .. import losses
from ..errors import HpgenError
from ..models.input_grad import has_rule
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

    # -- parallelism -----------------------------------------------------------
    data_parallel = True
    replicated_clips = True  # every rank holds every clip; each step's clips are drawn globally

    @property
    def clips_per_replica(self) -> int:
        return max(1, self.cfg.data.clips_per_step)

    def check_parallel(self, num_clips: int, replicas: int, stages: int) -> None:
        k = self.clips_per_replica
        if k * replicas > num_clips:
            d = self.cfg.data
            frames = self.cfg.pyramid.clip_frames()
            need = k * replicas
            raise HpgenError(f"{d.video}: the input gives {num_clips} clip(s) of {frames} frames, but {replicas} "
                             f"data-parallel replica(s) x {k} clip(s) per step (data.clips_per_step) need {need} "
                             f"clips ({need * frames} frames); use a longer input, fewer replicas or fewer "
                             f"clips per step")
        if stages > 1 and self.sg.concurrent > 1:
            raise HpgenError(f"singan.concurrent={self.sg.concurrent} cannot run on dist.pipeline_stages={stages}: "
                             "ConSinGAN trains several scales through one graph whose gradients would cross stages "
                             "twice per phase; use data parallelism (dist.pipeline_stages=1)")

    def owners(self, model: SinGANStack, critic, n: int) -> list[tuple[torch.nn.Module, int]]:
        """The networks scale n updates, each with the scale whose stage runs it."""
        return [(model.generators[m], n) for m in self.trained_scales(n)] + [(critic, n)]

    # -- chains over the scales (pipelined across stages by st.pipe) --------------
    def _chain(self, st: ScaleState, step, last: int, batch: int, shapes) -> torch.Tensor | None:
        """up(x_{last-1}) at scale ``last`` from ``step`` run over scales 0..last-1, on the
        stage that owns ``last`` (None elsewhere)."""
        def run(k, x, m):
            return (step(k, x, m) if k < last else resize(x, shapes[k].thw)), None

        return st.pipe.chain(run, last, batch, lambda k, b: (b, 3, *shapes[k].thw), st.reals[0].dtype).output()

    @torch.no_grad()
    def _recon_up(self, model: SinGANStack, st: ScaleState, last: int) -> torch.Tensor | None:
        """up(x~_{last-1}) of the reconstruction path (z_opt at scale 0, no noise above) for every
        clip, on the stage that owns ``last``. Every rank calls it together."""
        clips = torch.arange(st.reals[0].shape[0])
        t0 = st.shapes[0].frames

        def step(k, x, m):
            if k == 0:
                z = model.z_opt_chunks(st.micro(clips, m).tolist(), t0) * model.noise_amps[0]
                return model.step(None, 0, st.shapes[0], z.to(st.reals[0].dtype))
            return model.step(x, k, st.shapes[k], None)

        return self._chain(st, step, last, len(clips), st.shapes)

    # -- per scale / per iteration set-up -------------------------------------
    @torch.no_grad()
    def begin_scale(self, model: SinGANStack, st: ScaleState) -> None:
        n, clips = st.n, st.reals[0].shape[0]
        if model.z_opt.numel() == 0:  # drawn once per run (a resumed run loads it)
            model.draw_z_opt(clips, st.shapes[0])
        lo = self.trained_scales(n)[0]
        # The passes below run every generator with its running BatchNorm statistics and move
        # no state (ConSinGAN's lower trained stages included), so they are the same whatever
        # the number of ranks.
        modes = {m: m.training for m in model.modules()}
        model.eval()
        ups = {}
        if n > 0 and float(model.noise_amps[n]) == 0.0:
            # SinGAN-GIF Sec. 3.4.2: amp_n from the RMSE between the up-sampled reconstruction
            # and x_n over all frames and clips. Set once when scale n starts (a resumed run
            # loads it; ConSinGAN's lower stages keep the amplitude they started with). Every
            # owner of scale n holds every clip, so the mean over replicas is that RMSE.
            ups[n] = self._recon_up(model, st, n)
            mse = (ups[n].float() - st.reals[n].float()).pow(2).mean() if ups[n] is not None else \
                torch.zeros((), device=st.reals[n].device)
            model.noise_amps[n] = self.tr.noise_amp * st.all_mean(mse).sqrt()
        # The frozen part of the reconstruction path, up(x~_{lo-1}), for every clip.
        if lo > 0 and lo not in ups:
            ups[lo] = self._recon_up(model, st, lo)
        st.cache["rec_up"] = ups.get(lo)
        for m, t in modes.items():
            m.train(t)

    @torch.no_grad()
    def begin_iteration(self, model: SinGANStack, st: ScaleState) -> None:
        """Draw all of this iteration's random numbers for the global batch, on every rank and in
        the same order: the clips, the slo-mo factor, the noise of every scale and phase and the
        gradient-penalty mixes. Then run the frozen random prefix through the stages."""
        n, k, dtype = st.n, self.clips_per_replica, st.reals[0].dtype
        perm = torch.randperm(st.reals[0].shape[0])[:k * st.dp_size]
        st.cache["clips"] = perm[st.dp_rank * k:(st.dp_rank + 1) * k].tolist()
        factors = self.sg.slomo_factors
        f = factors[int(torch.randint(len(factors), (1,)))] if len(factors) > 1 else factors[0]
        shapes = factor_shapes(st.shapes, f)
        st.cache["factor"], st.cache["shapes_f"] = f, shapes

        def noise(m):
            return st.draw(lambda b: model.make_noise(m, shapes[m], b, factor=f), k).to(dtype)

        lo = self.trained_scales(n)[0]
        prefix = [noise(m) for m in range(lo)]
        phases = self.tr.critic_steps + self.tr.generator_steps
        st.cache["z"] = [[noise(m) for m in range(lo, n + 1)] for _ in range(phases)]
        st.cache["gp_eps"] = [(st.rand((k,)), st.rand((k,))) for _ in range(self.tr.critic_steps)]

        def step(m, x, mb):
            return model.step(x, m, shapes[m], st.micro(prefix[m], mb))

        st.cache["fake_up"] = self._chain(st, step, lo, k, shapes) if lo > 0 else None

    def _trained(self, model: SinGANStack, st: ScaleState, up: torch.Tensor | None, noises, shapes) -> torch.Tensor:
        """Scales lo..n from up(x_{lo-1}) (``up``; None at lo = 0, where noises[0] is G_0's input)."""
        x = None
        for j, m in enumerate(self.trained_scales(st.n)):
            if m == 0:
                x = model.generators[0](noises[0])
                continue
            u = up if x is None else resize(x, shapes[m].thw)
            x = u + model.refine_upsampled(u, m, noises[j])
        return x

    def _fake(self, model: SinGANStack, st: ScaleState, phase: int) -> torch.Tensor:
        return self._trained(model, st, st.cache["fake_up"], st.cache["z"][phase], st.cache["shapes_f"])

    def _reconstruction(self, model: SinGANStack, st: ScaleState) -> torch.Tensor:
        """x~_n of the step's clips: z_opt's slices at scale 0, no noise above (SinGAN's z_opt)."""
        clips, lo = st.cache["clips"], self.trained_scales(st.n)[0]
        up = None if lo == 0 else st.cache["rec_up"][clips]
        noises = [None] * (st.n - lo + 1)
        if lo == 0:
            noises[0] = (model.z_opt_chunks(clips, st.shapes[0].frames) * model.noise_amps[0]).to(st.reals[0].dtype)
        return self._trained(model, st, up, noises, st.shapes)

    def _real(self, st: ScaleState) -> torch.Tensor:
        return st.reals[st.n][st.cache["clips"]]

    # -- phases ----------------------------------------------------------------
    def phases(self, model: SinGANStack, critic, st: ScaleState) -> list[Phase]:
        c = self.tr.critic_steps
        return ([("d", lambda i=i: self.critic_loss(model, critic, st, i)) for i in range(c)]
                + [("g", lambda i=i: self.generator_loss(model, critic, st, c + i))
                   for i in range(self.tr.generator_steps)])

    def critic_loss(self, model: SinGANStack, critic: SinGANCritics, st: ScaleState, phase: int = 0):
        """Eq. 3-4 for the critics, summed over the step's clips: image WGAN-GP + alpha * video
        WGAN-GP, each with its own gradient penalty."""
        gp_weight = self.tr.gp_weight_at(st.step * self.tr.critic_steps + phase)  # lazy GP (train.gp_every)
        # The explicit penalty where it has a rule for every layer, autograd otherwise (a critic
        # whose BatchNorm statistics span the data-parallel ranks).
        explicit = self.tr.gp_method == "explicit"
        vid_explicit = explicit and self.w_vid and has_rule(critic.video.body)
        img_explicit = explicit and self.w_img and has_rule(critic.image.body)
        critic.requires_grad_(True)  # the generator phase froze it
        if not st.pipe.owns(st.n):
            return None, {}
        with torch.no_grad():
            fake = self._fake(model, st, phase)
        real, f = self._real(st), st.cache["factor"]
        eps_vid, eps_img = st.cache["gp_eps"][phase]
        clips = real.shape[0]  # the terms are means over the clips; the loss is their sum
        loss, stats = fake.new_zeros((), dtype=torch.float32), {}
        if self.w_vid:
            lv, s = losses.wgan_critic(critic.video, real, fake[:, :, ::f], gp_weight, eps_vid,
                                       gp_norm=self.tr.gp_norm,
                                       input_grad=critic.video.input_gradient if vid_explicit else None)
            loss = loss + self.w_vid * clips * lv
            stats.update({f"vid_{k}": v for k, v in s.items()})
        if self.w_img:
            # Every generated frame is judged; the real frames are repeated f times so that the
            # penalty's interpolates pair each fake frame with a real one.
            li, s = losses.wgan_critic(critic.frames, real.repeat_interleave(f, dim=2), fake, gp_weight,
                                       eps_img, gp_norm=self.tr.gp_norm,
                                       input_grad=critic.frames_input_gradient if img_explicit else None)
            loss = loss + self.w_img * clips * li
            stats.update({f"img_{k}": v for k, v in s.items()})
        stats["wdist"] = stats.get("vid_wdist", stats.get("img_wdist"))
        stats["loss_d"] = loss.detach() * st.dp_size  # averaged over the replicas: the global sum
        return loss * st.sum_scale, stats

    def generator_loss(self, model: SinGANStack, critic: SinGANCritics, st: ScaleState, phase: int = 0):
        """Eq. 3, summed over the step's clips: adversarial (image + alpha video) + beta *
        reconstruction (Eq. 5: L1, or SinGAN's MSE, per ``singan.recon_loss``) + gamma * Eq. 6."""
        # D gets no gradient from this phase. It stays frozen through the backward too (the
        # critic phase unfreezes it), so activation checkpointing recomputes the same graph.
        critic.requires_grad_(False)
        if not st.pipe.owns(st.n):
            return None, {}
        fake, f = self._fake(model, st, phase), st.cache["factor"]
        real = self._real(st)
        clips = real.shape[0]
        adv = fake.new_zeros((), dtype=torch.float32)
        if self.w_img:
            adv = adv + self.w_img * clips * losses.wgan_generator(critic.frames, fake)
        if self.w_vid:
            adv = adv + self.w_vid * clips * losses.wgan_generator(critic.video, fake[:, :, ::f])
        rec = losses.RECONSTRUCTION[self.sg.recon_loss](self._reconstruction(model, st), real)
        loss = adv + self.tr.recon_weight * rec
        stats = {"adv": adv.detach() * st.dp_size, "rec": rec.detach() * st.dp_size}
        if self.sg.stat_weight:
            # The real statistics are those of every training frame (all clips, on every rank).
            stat = clips * losses.colour_statistics(fake, st.reals[st.n])
            loss = loss + self.sg.stat_weight * stat
            stats["stat"] = stat.detach() * st.dp_size
        stats["loss_g"] = loss.detach() * st.dp_size
        return loss * st.sum_scale, stats
