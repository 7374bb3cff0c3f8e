"""Loss terms as pure functions of tensors (and, for the critic terms, a critic callable).

Each training phase adds these into one scalar so that every engine does exactly one
backward per phase (WGAN-GP's penalty is folded into the critic loss).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Critic = Callable[[torch.Tensor], torch.Tensor]
InputGrad = Callable[[torch.Tensor], torch.Tensor]  # x -> grad_x sum(critic(x)), differentiable in the weights


def reconstruction(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Eq. 4/7: squared L2 error, averaged over voxels and summed over the clips of the
    batch (Sec. 3.1: a long video's loss is the sum over its fixed-size samples)."""
    per_clip = (fake.float() - real.float()).pow(2).flatten(1).mean(1)
    return per_clip.sum()


def l1_reconstruction(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """SinGAN-GIF Eq. 5: || G_n(z_opt, up(x~_{n-1})) + up(x~_{n-1}) - x_n ||_1, the absolute
    error averaged over the voxels and colours of a clip (as PyTorch's L1Loss) and summed over
    the clips of the batch, like ``reconstruction``."""
    per_clip = (fake.float() - real.float()).abs().flatten(1).mean(1)
    return per_clip.sum()


RECONSTRUCTION = {"l1": l1_reconstruction, "mse": reconstruction}


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Eq. 3: KL[N(mu_i, sigma_i) || N(0, I)] of every latent element, averaged over the
    latent channels and space-time positions of a clip and summed over clips.

    Averaging over latent elements matches the reconstruction term (averaged over voxels
    and colours), so beta is a ratio that does not change with the latent width or the
    resolution; with it, beta = 0.1 is the paper's value. (Summing over the 128 latent
    channels instead makes the KL 128x stronger and the posterior collapses to the prior.)
    """
    mu, logvar = mu.float(), logvar.float()
    per_element = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
    return per_element.flatten(1).mean(1).sum()


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """z = mu + eps * sigma; ``eps`` ~ N(0, I) is drawn here unless given."""
    if eps is None:
        eps = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype)
    return mu + eps.to(mu.dtype) * torch.exp(0.5 * logvar)


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor,
                     eps: torch.Tensor | None = None, norm: str = "sample",
                     input_grad: InputGrad | None = None) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al.): E[(||grad D(x_hat)||_2 - 1)^2] on random interpolates
    x_hat = eps * real + (1 - eps) * fake, eps ~ U(0, 1) per sample (drawn unless given).

    The gradient is that of the sum of the critic's score map: ``input_grad(x_hat)`` when
    given (the critic's explicit chain rule, hpgen/models/input_grad.py: the same function
    of the weights, differentiated to first order), otherwise autograd's, whose graph then
    needs a double backward. ``norm`` says over what the 2-norm is taken:
      "sample": over the whole clip, as in the WGAN-GP paper, whose critic gives one score
                per sample;
      "voxel":  over the colour channels at each space-time position, the mean of the
                penalty taken over positions; the SinGAN family's and HP-VAE-GAN's released
                code (a patch critic scores every patch, so each position is one sample).
    On a V-voxel clip the "sample" norm is about sqrt(V) times the "voxel" one, so
    "sample" pins each voxel's gradient near 1/sqrt(V): a far flatter critic.
    """
    if eps is None:
        eps = torch.rand((real.shape[0],), device=real.device)
    eps = eps.reshape((real.shape[0],) + (1,) * (real.dim() - 1)).to(real.dtype)
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()
    if input_grad is not None:
        grad = input_grad(x_hat)
    else:
        x_hat.requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    if norm == "voxel":
        return (grad.float().norm(2, dim=1) - 1.0).pow(2).mean()
    if norm != "sample":
        raise ValueError(f"unknown gradient-penalty norm {norm!r}")
    return (grad.float().flatten(1).norm(2, dim=1) - 1.0).pow(2).mean()


def wgan_critic(critic: Critic, real: torch.Tensor, fake: torch.Tensor, gp_weight: float,
                eps: torch.Tensor | None = None, gp_norm: str = "sample", input_grad: InputGrad | None = None,
                joint: bool = False) -> tuple[torch.Tensor, dict]:
    """Critic phase of Eq. 10 as one scalar: -E[D(x)] + E[D(fake)] + lambda * GP.

    ``joint``: score real and fake clips in one batch (exact when a clip's scores do not
    depend on the rest of its batch: no BatchNorm with batch statistics). ``gp_weight`` 0
    skips the penalty (lazy regularisation's steps without it)."""
    if joint:
        d_real, d_fake = critic(torch.cat([real, fake.detach()])).float().split([real.shape[0], fake.shape[0]])
        d_real, d_fake = d_real.mean(), d_fake.mean()
    else:
        d_real = critic(real).float().mean()
        d_fake = critic(fake.detach()).float().mean()
    gp = gradient_penalty(critic, real, fake, eps, gp_norm, input_grad) if gp_weight > 0 else d_real.new_zeros(())
    loss = d_fake - d_real + gp_weight * gp
    return loss, {"d_real": d_real.detach(), "d_fake": d_fake.detach(), "gp": gp.detach(),
                  "wdist": (d_real - d_fake).detach()}


def wgan_generator(critic: Critic, fake: torch.Tensor) -> torch.Tensor:
    """Generator side of Eq. 10: -E[D(fake)]."""
    return -critic(fake).float().mean()


def rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(F.mse_loss(a.float(), b.float()))


def colour_statistics(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """SinGAN-GIF Eq. 6: match the mean and variance of each colour channel of each generated
    frame to those of the training frames.

    ``fake`` and ``real`` are (B, C, T, H, W). The real statistics are taken over the set of
    training frames (all clips, frames and pixels), because a random sample has no
    corresponding real frame. Per generated frame and channel the term is
    |mu_fake - mu_real| + |var_fake - var_real| (the 2-norm of a scalar); it is averaged over
    frames and channels, so gamma keeps its meaning for any clip length.
    """
    f = fake.float().transpose(1, 2).flatten(3)  # (B, T, C, HW)
    r = real.float().transpose(0, 1).flatten(1)  # (C, B*T*H*W)
    mu_r, var_r = r.mean(1), r.var(1, unbiased=False)
    mu_f, var_f = f.mean(3), f.var(3, unbiased=False)  # (B, T, C)
    return ((mu_f - mu_r).abs() + (var_f - var_r).abs()).mean()
