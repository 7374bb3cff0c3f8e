"""Loss terms as pure functions of tensors (and, for the critic terms, a critic callable).

Each training phase adds these into one scalar so that every engine does exactly one
backward per phase (WGAN-GP's penalty is folded into the critic loss).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Critic = Callable[[torch.Tensor], torch.Tensor]


def reconstruction(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Eq. 4/7: squared L2 error, averaged over voxels and summed over the clips of the
    batch (Sec. 3.1: a long video's loss is the sum over its fixed-size samples)."""
    per_clip = (fake.float() - real.float()).pow(2).flatten(1).mean(1)
    return per_clip.sum()


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Eq. 3: sum_i KL[N(mu_i, sigma_i) || N(0, I)] per space-time position i.

    Per position the KL of a diagonal Gaussian is summed over the latent channels; it is
    then averaged over positions (like the reconstruction term is averaged over voxels,
    so beta keeps its meaning at every resolution) and summed over clips.
    """
    mu, logvar = mu.float(), logvar.float()
    per_position = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
    return per_position.flatten(1).mean(1).sum()


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
                   ) -> torch.Tensor:
    eps = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
    return mu + eps * torch.exp(0.5 * logvar)


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al.): E[(||grad D(x_hat)||_2 - 1)^2] on random interpolates."""
    eps_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(eps_shape, device=real.device, dtype=real.dtype, generator=generator)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return (grad.float().flatten(1).norm(2, dim=1) - 1.0).pow(2).mean()


def wgan_critic(critic: Critic, real: torch.Tensor, fake: torch.Tensor, gp_weight: float,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """Critic phase of Eq. 10 as one scalar: -E[D(x)] + E[D(fake)] + lambda * GP."""
    d_real = critic(real).float().mean()
    d_fake = critic(fake.detach()).float().mean()
    gp = gradient_penalty(critic, real, fake, generator) if gp_weight > 0 else d_real.new_zeros(())
    loss = d_fake - d_real + gp_weight * gp
    return loss, {"d_real": d_real.detach(), "d_fake": d_fake.detach(), "gp": gp.detach(),
                  "wdist": (d_real - d_fake).detach()}


def wgan_generator(critic: Critic, fake: torch.Tensor) -> torch.Tensor:
    """Generator side of Eq. 10: -E[D(fake)]."""
    return -critic(fake).float().mean()


def rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(F.mse_loss(a.float(), b.float()))
