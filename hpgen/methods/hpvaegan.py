"""HP-VAE-GAN (Gur et al.): which networks train at each scale, and the loss of each phase.

Scales 0..M (patch-VAE, Eq. 8): one phase. E and G^0 fine-tune with a learning rate
decayed by ``lr_decay_vae`` per scale, G^n trains, G^1..G^{n-1} are frozen but stay in
the graph so that the reconstruction at scale n reaches E and G^0.

Scales n > M (patch-GAN, Eq. 9-11): ``critic_steps`` critic phases and ``generator_steps``
generator phases per iteration; only G^n and D^n train. The reconstruction path uses the
encoder's mean and no noise; it is frozen, so its up-sampled input to G^n is computed
once per scale. z_n is scaled by ``noise_amp`` x RMSE(that input, x^n), as in SinGAN.
"""
from __future__ import annotations

from typing import Callable

import torch

from .. import losses
from ..models import HPVAEGAN, PatchCritic
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
        m = self.cfg.model
        return HPVAEGAN(m.channels, m.latent_channels, m.num_blocks, m.kernel, self.dims, self.tr.vae_scales)

    def build_critic(self) -> PatchCritic:
        m = self.cfg.model
        return PatchCritic(3, m.channels, m.num_blocks, m.kernel, self.dims)

    def model_args(self) -> dict:
        m = self.cfg.model
        return dict(channels=m.channels, latent_channels=m.latent_channels, num_blocks=m.num_blocks,
                    kernel=m.kernel, dims=self.dims, vae_scales=self.tr.vae_scales)

    @classmethod
    def model_from_args(cls, args: dict, num_scales: int) -> HPVAEGAN:
        model = HPVAEGAN(**args)
        for _ in range(num_scales - 1):
            model.grow()
        return model

    @staticmethod
    def sample(model: HPVAEGAN, shapes, batch: int = 1, generator=None, stop=None) -> torch.Tensor:
        return model.sample(shapes, batch=batch, generator=generator, stop=stop)

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

    # -- per scale / per iteration set-up -------------------------------------
    @torch.no_grad()
    def _recon_input(self, model: HPVAEGAN, st: ScaleState) -> torch.Tensor:
        """up(x^{n-1}) on the reconstruction path (encoder mean, no noise). The stack below
        scale n is frozen, so it is cached until the clips change (streaming clears it)."""
        if "recon_up" not in st.cache:
            mu, _ = model.encode(st.reals[0])
            prev = model.synthesize(mu, st.shapes, stop=st.n - 1, noise=False)
            st.cache["recon_up"] = resize(prev, st.shapes[st.n].thw)
        return st.cache["recon_up"]

    @torch.no_grad()
    def begin_scale(self, model: HPVAEGAN, st: ScaleState) -> None:
        """Set z_n's amplitude once per scale (a resumed scale keeps the checkpointed one)."""
        n = st.n
        if not model.is_gan_scale(n) or float(model.noise_amps[n]) != 0.0:
            return
        up = self._recon_input(model, st)
        mse = st.all_mean((up.float() - st.reals[n].float()).pow(2).mean())
        model.noise_amps[n] = self.tr.noise_amp * mse.sqrt()

    @torch.no_grad()
    def begin_iteration(self, model: HPVAEGAN, st: ScaleState) -> None:
        if not model.is_gan_scale(st.n):
            return
        self._recon_input(model, st)
        batch = st.reals[st.n].shape[0]
        dtype = st.reals[st.n].dtype
        z = st.randn(model.latent_shape(batch, st.shapes[0]), dtype=dtype)
        # z_k of the frozen GAN scales below n, drawn for the global batch like every other
        # random draw, so that data-parallel runs equal one-rank runs.
        noises = [st.randn((batch, 3, *st.shapes[k].thw), dtype=dtype) * model.noise_amps[k].to(dtype)
                  if k and model.is_gan_scale(k) else None for k in range(st.n)]
        prev = model.synthesize(z, st.shapes, stop=st.n - 1, noises=noises)
        st.cache["fake_up"] = resize(prev, st.shapes[st.n].thw)

    def _random_fake(self, model: HPVAEGAN, st: ScaleState) -> torch.Tensor:
        up = st.cache["fake_up"]
        zn = st.randn(up.shape, dtype=up.dtype) * model.noise_amps[st.n].to(up.dtype)
        return up + model.refine_upsampled(up, st.n, zn)

    # -- phases ----------------------------------------------------------------
    def phases(self, model: HPVAEGAN, critic, st: ScaleState) -> list[Phase]:
        if not model.is_gan_scale(st.n):
            return [("g", lambda: self.vae_loss(model, st))]
        return ([("d", lambda: self.critic_loss(model, critic, st))] * self.tr.critic_steps
                + [("g", lambda: self.generator_loss(model, critic, st))] * self.tr.generator_steps)

    def vae_loss(self, model: HPVAEGAN, st: ScaleState):
        """Eq. 8 (Eq. 5 at scale 0): recon at n + recon at 0 + beta * KL."""
        x0 = st.reals[0]
        mu, logvar = model.encode(x0)
        z = losses.reparameterize(mu, logvar, st.randn(mu.shape))
        outs = model.synthesize(z, st.shapes, stop=st.n, noise=False, return_all=True)
        # Sums over clips: scaled so that DeepSpeed's mean over ranks gives the global sum.
        kl = losses.kl_divergence(mu, logvar) * st.sum_scale
        rec0 = losses.reconstruction(outs[0], x0) * st.sum_scale
        loss = rec0 + self.tr.beta_kl * kl
        stats = {"kl": kl.detach(), "rec0": rec0.detach()}
        if st.n > 0:
            rec = losses.reconstruction(outs[st.n], st.reals[st.n]) * st.sum_scale
            loss = loss + rec
            stats["rec"] = rec.detach()
        stats["loss_vae"] = loss.detach()
        return loss, stats

    def critic_loss(self, model: HPVAEGAN, critic, st: ScaleState):
        critic.requires_grad_(True)  # the generator phase froze it
        with torch.no_grad():
            fake = self._random_fake(model, st)
        eps = st.rand((fake.shape[0],))
        return losses.wgan_critic(critic, st.reals[st.n], fake, self.tr.gp_weight, eps)

    def generator_loss(self, model: HPVAEGAN, critic, st: ScaleState):
        """Eq. 11: recon (Eq. 7, deterministic path) + beta_adv * adversarial (Eq. 10)."""
        # D gets no gradient from this phase. It stays frozen through the backward too (the
        # critic phase unfreezes it), so activation checkpointing recomputes the same graph.
        critic.requires_grad_(False)
        adv = losses.wgan_generator(critic, self._random_fake(model, st))
        up = self._recon_input(model, st)
        rec = losses.reconstruction(up + model.refine_upsampled(up, st.n), st.reals[st.n]) * st.sum_scale
        loss = self.tr.recon_weight * rec + self.tr.beta_adv * adv
        return loss, {"rec": rec.detach(), "adv": adv.detach(), "loss_g": loss.detach()}
