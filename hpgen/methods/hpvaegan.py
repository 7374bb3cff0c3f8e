"""HP-VAE-GAN (Gur et al.): which networks train at each scale, and the loss of each phase.

Scales 0..M (patch-VAE, Eq. 8): one phase. E and G^0 fine-tune with a learning rate
decayed by ``lr_decay_vae`` per scale, G^n trains, G^1..G^{n-1} are frozen but stay in
the graph so that the reconstruction at scale n reaches E and G^0.

Scales n > M (patch-GAN, Eq. 9-11): ``critic_steps`` critic phases and ``generator_steps``
generator phases per iteration; only G^n and D^n train. The reconstruction path uses the
encoder's mean and no noise; it is frozen, so its up-sampled input to G^n is computed
once per scale. z_n is scaled by ``noise_amp`` x RMSE(that input, x^n), as in SinGAN.
With ``train.crop_height/width`` the GAN phases see the same random crop of the real clip,
the random prefix and the reconstruction input (the prefix itself runs full-frame, without
gradients), so the finest scales of a full-HD pyramid train in bounded memory.
``train.gan_recon = "posterior"`` draws the reconstruction path's latent from the posterior
each iteration, as the authors' code does, instead of using the mean; the path is then
recomputed every iteration instead of cached.

Every pass over the scales is a chain of per-scale steps run by ``st.pipe``: locally in a
one-stage run, split over pipeline stages otherwise (hpgen/engine/pipeline.py).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.nn.utils import parametrize

from .. import losses
from ..models import HPVAEGAN, PatchCritic
from ..models.hpvaegan import Windows
from ..pyramid import resize
from .base import ScaleState

Phase = tuple[str, Callable[[], tuple[torch.Tensor, dict]]]


class HPVAEGANMethod:
    name = "hpvaegan"
    data_parallel = True

    def __init__(self, cfg):
        self.cfg, self.tr = cfg, cfg.train
        self.dims = 2 if cfg.pyramid.image else 3

    # -- networks --------------------------------------------------------------
    def build_model(self) -> HPVAEGAN:
        return HPVAEGAN(**self.model_args())

    def build_critic(self) -> PatchCritic:
        m = self.cfg.model
        return PatchCritic(3, m.channels, m.num_blocks, m.kernel, self.dims)

    def model_args(self) -> dict:
        m = self.cfg.model
        return dict(channels=m.channels, latent_channels=m.latent_channels, num_blocks=m.num_blocks,
                    kernel=m.kernel, dims=self.dims, vae_scales=self.tr.vae_scales,
                    encoder_blocks=m.encoder_blocks, norm_stats=m.norm_stats, output=m.output)

    @classmethod
    def model_from_args(cls, args: dict, num_scales: int) -> HPVAEGAN:
        model = HPVAEGAN(**args)
        for _ in range(num_scales - 1):
            model.grow()
        return model

    @staticmethod
    def sample(model: HPVAEGAN, shapes, batch: int = 1, generator=None, stop=None, tile: int = 0) -> torch.Tensor:
        return model.sample(shapes, batch=batch, generator=generator, stop=stop, tile=tile)

    def uses_critic(self, model: HPVAEGAN, n: int) -> bool:
        return model.is_gan_scale(n)

    def grow(self, model: HPVAEGAN, critic: PatchCritic | None, n: int) -> PatchCritic | None:
        """Add G^n (from G^{n-1}) and return D^n (from D^{n-1}, new at the first GAN scale)."""
        while model.num_scales <= n:
            model.grow()
        if not self.uses_critic(model, n):
            return None
        if critic is None:
            critic = self.build_critic()
        return critic  # D^n continues from D^{n-1}: the same module keeps training

    def param_groups(self, model: HPVAEGAN, critic, n: int) -> dict[str, list[dict]]:
        """Freeze everything, then unfreeze (and put in train mode) what scale n trains."""
        model.requires_grad_(False).eval()
        lr = self.tr.lr
        groups: dict[str, list[dict]] = {}
        if not model.is_gan_scale(n):
            vae = [model.encoder, model.decoder]
            for mod in vae:
                mod.requires_grad_(True).train()
            g = [{"params": [p for mod in vae for p in mod.parameters()], "lr": lr * self.tr.lr_decay_vae ** n}]
            if n > 0:
                model.generators[n - 1].requires_grad_(True).train()
                g.append({"params": list(model.generators[n - 1].parameters()), "lr": lr})
            groups["g"] = g
        else:
            model.generators[n - 1].requires_grad_(True).train()
            groups["g"] = [{"params": list(model.generators[n - 1].parameters()), "lr": lr}]
            critic.requires_grad_(True).train()
            groups["d"] = [{"params": list(critic.parameters()), "lr": lr}]
        return groups

    # -- chains over the scales (pipelined across stages by st.pipe) --------------
    def _chain(self, st: ScaleState, step, last: int, grad: bool = False):
        return st.pipe.chain(step, last, st.batch, lambda k, b: (b, 3, *st.shapes[k].thw), st.reals[0].dtype, grad)

    @torch.no_grad()
    def _recon_chain(self, model: HPVAEGAN, st: ScaleState, eps: torch.Tensor | None = None) -> torch.Tensor | None:
        """up(x^{n-1}) on the reconstruction path (no z_n noise) on the stage that owns scale n
        (None elsewhere): from the encoder's mean, or from mu + sigma * eps when ``eps`` is
        given. Every rank must call it together."""
        def step(k, x, m):
            if k == 0:
                mu, logvar = model.encode(st.micro(st.reals[0], m))
                x = model.decode(mu if eps is None else losses.reparameterize(mu, logvar, st.micro(eps, m)))
            elif k < st.n:
                x = model.refine(x, k, st.shapes[k])
            if k == st.n:
                x = resize(x, st.shapes[k].thw)
            return x, None

        return self._chain(st, step, st.n).output()

    def _recon_input(self, model: HPVAEGAN, st: ScaleState) -> torch.Tensor | None:
        """The mean path's up(x^{n-1}). The stack below scale n is frozen, so it is cached
        until the clips change (streaming clears it)."""
        if "recon_up" not in st.cache:
            st.cache["recon_up"] = self._recon_chain(model, st)
        return st.cache["recon_up"]

    @torch.no_grad()
    def begin_scale(self, model: HPVAEGAN, st: ScaleState) -> None:
        """Set z_n's amplitude once per scale (a resumed scale keeps the checkpointed one)."""
        n = st.n
        if not model.is_gan_scale(n) or float(model.noise_amps[n]) != 0.0:
            return
        up = self._recon_input(model, st)
        mse = (up.float() - st.reals[n].float()).pow(2).mean() if up is not None else \
            torch.zeros((), device=st.reals[n].device)
        model.noise_amps[n] = self.tr.noise_amp * st.all_mean(mse).sqrt()

    def _crop_size(self, st: ScaleState) -> tuple[int, int] | None:
        s = st.shapes[st.n]
        h = min(self.tr.crop_height, s.height) if self.tr.crop_height else s.height
        w = min(self.tr.crop_width, s.width) if self.tr.crop_width else s.width
        return None if (h, w) == (s.height, s.width) else (h, w)

    @torch.no_grad()
    def begin_iteration(self, model: HPVAEGAN, st: ScaleState) -> None:
        """Draw all of this iteration's random numbers, on every rank and in the same order
        (a stage that skips a phase must not fall out of step with the shared RNG), then
        run the frozen random prefix G^0..G^{n-1} through the stages."""
        batch, dtype, n = st.batch, st.reals[0].dtype, st.n
        if not model.is_gan_scale(n):
            st.cache["eps"] = st.randn(model.latent_shape(batch, st.shapes[0]), dtype=dtype)
            return
        z = st.randn(model.latent_shape(batch, st.shapes[0]), dtype=dtype)
        # train.gan_recon = "posterior": this iteration's eps of the reconstruction path (drawn
        # only then, so that "mean" runs keep their random stream).
        eps_rec = st.randn(z.shape, dtype=dtype) if self.tr.gan_recon == "posterior" else None
        # z_k of the frozen GAN scales below n, drawn for the global batch.
        noises = [st.randn((batch, 3, *st.shapes[k].thw), dtype=dtype) * model.noise_amps[k].to(dtype)
                  if k and model.is_gan_scale(k) else None for k in range(n)]
        crop = self._crop_size(st)
        t, h, w = st.shapes[n].thw
        if crop is not None:
            u = st.rand((batch, 2))
            offsets = [(int(a * (h - crop[0] + 1)), int(b * (w - crop[1] + 1))) for a, b in u.tolist()]
            h, w = crop
        steps = self.tr.critic_steps + self.tr.generator_steps
        st.cache["zn"] = [st.randn((batch, 3, t, h, w), dtype=dtype) * model.noise_amps[n].to(dtype)
                          for _ in range(steps)]
        st.cache["gp_eps"] = [st.rand((batch,)) for _ in range(self.tr.critic_steps)]

        def step(k, x, m):
            x = model.decode(st.micro(z, m)) if k == 0 else x
            if 0 < k < n:
                x = model.refine(x, k, st.shapes[k], None if noises[k] is None else st.micro(noises[k], m))
            if k == n:
                x = resize(x, st.shapes[n].thw)
            return x, None

        cut = (lambda v: v) if crop is None else (lambda v: _crop(v, offsets, crop))
        if crop is not None and not st.pipe.pipelined and model.norm_stats == "running":
            # Only the windows under the crops, not the whole frame below them (with per-batch
            # BatchNorm statistics a window would be normalised by itself, so those runs
            # compute the full-frame prefix and crop it).
            fake_up = self._windowed_prefix(model, st, z, noises, offsets, crop)
        else:
            fake_up = self._chain(st, step, n).output()
            fake_up = None if fake_up is None else cut(fake_up)
        recon_up = self._recon_input(model, st) if eps_rec is None else self._recon_chain(model, st, eps_rec)
        if fake_up is None:
            return  # another stage trains scale n
        st.cache["fake_up"], st.cache["recon_in"], st.cache["real"] = fake_up, cut(recon_up), cut(st.reals[n])

    @staticmethod
    def _windowed_prefix(model: HPVAEGAN, st: ScaleState, z, noises, offsets, crop) -> torch.Tensor:
        """up(x^{n-1}) of the random path on each clip's crop window, computed from windows of
        the scales below (``models.hpvaegan.Windows``) instead of whole frames: equal to
        cropping the full-frame prefix up to rounding, and at full HD most of the prefix's
        work and memory is saved."""
        out = []
        for i, (y, x) in enumerate(offsets):
            clip = [None if v is None else v[i:i + 1] for v in noises]
            win = Windows(model, z[i:i + 1], st.shapes, clip)
            out.append(win.up(st.n, (y, y + crop[0], x, x + crop[1])))
        return torch.cat(out)

    def _random_fake(self, model: HPVAEGAN, st: ScaleState, i: int) -> torch.Tensor:
        up = st.cache["fake_up"]
        return model.combine(up, model.refine_upsampled(up, st.n, st.cache["zn"][i]))

    # -- phases ----------------------------------------------------------------
    def phases(self, model: HPVAEGAN, critic, st: ScaleState) -> list[Phase]:
        if not model.is_gan_scale(st.n):
            return [("g", lambda: self.vae_loss(model, st))]
        c = self.tr.critic_steps
        return ([("d", lambda i=i: self.critic_loss(model, critic, st, i)) for i in range(c)]
                + [("g", lambda i=i: self.generator_loss(model, critic, st, c + i))
                   for i in range(self.tr.generator_steps)])

    def vae_loss(self, model: HPVAEGAN, st: ScaleState):
        """Eq. 8 (Eq. 5 at scale 0): recon at n + recon at 0 + beta * KL, through the stages."""
        s = st.sum_scale  # sums over clips, scaled so that the mean over ranks is the global sum
        stats: dict[str, torch.Tensor] = {}

        def note(key, v):
            stats[key] = stats.get(key, 0) + v.detach() / st.mean_scale

        def step(k, x, m):
            if k == 0:
                x0 = st.micro(st.reals[0], m)
                mu, logvar = model.encode(x0)
                x = model.decode(losses.reparameterize(mu, logvar, st.micro(st.cache["eps"], m)))
                kl = losses.kl_divergence(mu, logvar) * s
                rec0 = losses.reconstruction(x, x0) * s
                note("kl", kl)
                note("rec0", rec0)
                term = rec0 + self.tr.beta_kl * kl
            else:
                x, term = model.refine(x, k, st.shapes[k]), None
            if k == st.n and k > 0:
                rec = losses.reconstruction(x, st.micro(st.reals[k], m)) * s
                note("rec", rec)
                term = rec if term is None else term + rec
            return x, term

        res = self._chain(st, step, st.n, grad=True)
        loss = st.pipe.surrogate(res)
        if res.active and res.prev is None and res.next is None:  # the whole chain ran here
            stats["loss_vae"] = loss.detach() / st.mean_scale
        return loss, stats, lambda: st.pipe.send_input_grads(res)

    def critic_loss(self, model: HPVAEGAN, critic, st: ScaleState, i: int):
        critic.requires_grad_(True)  # the generator phase froze it
        if not st.pipe.owns(st.n):
            return None, {}
        with torch.no_grad():
            fake = self._random_fake(model, st, i)
        # The critic's spectral-norm weights are computed once for the phase (one power
        # iteration), shared by D(real), D(fake) and the penalty. Real and fake are scored in
        # separate batches: one joint batch (exact in maths, the patch critic has no BatchNorm)
        # moved a 2-rank run away from the 1-rank run in loss_g (1e-3 when first measured,
        # 4.6e-5 at the first GAN step of tests/test_distributed.py's run, which bounds it at
        # 1e-5; separate batches: 1.9e-7), for ~30 fewer ops per iteration. Why: the loss
        # ignores a constant offset of D, so the gradient of D's last bias is 0 in maths.
        # Separate calls give it as two sums of the same shape, of +1/N and of -1/N, which
        # cancel exactly; a joint batch sums both in one reduction, leaving rounding noise
        # (~1e-8) whose size depends on the per-rank batch, and Adam's normalisation turns that
        # into a step of a sizeable fraction of lr, different on 1 and 2 ranks. D's output then
        # shifts by a constant: no gradient sees it (wdist and G's weights agree to ~1e-7), but
        # d_real, d_fake, adv and so loss_g do.
        # The backward runs after this cache is gone: with activation checkpointing each
        # block's recomputation is given the cache entries its forward read
        # (hpgen/engine/activation_checkpointing.py), D(fake)'s included.
        with parametrize.cached():
            loss, stats = losses.wgan_critic(
                critic, st.cache["real"], fake, self.tr.gp_weight_at(st.step * self.tr.critic_steps + i),
                st.cache["gp_eps"][i], gp_norm=self.tr.gp_norm,
                input_grad=critic.input_gradient if self.tr.gp_method == "explicit" else None)
        return loss * st.mean_scale, stats

    def generator_loss(self, model: HPVAEGAN, critic, st: ScaleState, i: int):
        """Eq. 11: recon (Eq. 7, deterministic path) + beta_adv * adversarial (Eq. 10)."""
        # D gets no gradient from this phase. It stays frozen through the backward too (the
        # critic phase unfreezes it), so activation checkpointing recomputes the same graph.
        critic.requires_grad_(False)
        if not st.pipe.owns(st.n):
            return None, {}
        adv = losses.wgan_generator(critic, self._random_fake(model, st, i))
        up = st.cache["recon_in"]
        rec = losses.reconstruction(model.combine(up, model.refine_upsampled(up, st.n)), st.cache["real"]) * st.sum_scale
        loss = self.tr.recon_weight * rec + self.tr.beta_adv * adv * st.mean_scale
        return loss, {"rec": rec.detach() / st.mean_scale, "adv": adv.detach(), "loss_g": loss.detach() / st.mean_scale}

    def owners(self, model: HPVAEGAN, critic, n: int) -> list[tuple[torch.nn.Module, int]]:
        """The networks scale n updates, each with the scale whose stage runs it (their
        buffers are copied from there to every rank)."""
        if not model.is_gan_scale(n):
            out = [(model.encoder, 0), (model.decoder, 0)]
            return out + ([(model.generators[n - 1], n)] if n > 0 else [])
        return [(model.generators[n - 1], n), (critic, n)]


def _crop(v: torch.Tensor, offsets: list[tuple[int, int]], size: tuple[int, int]) -> torch.Tensor:
    """Per-clip spatial crops of a (B, C, T, H, W) batch."""
    h, w = size
    return torch.stack([v[i, :, :, y:y + h, x:x + w] for i, (y, x) in enumerate(offsets)])
