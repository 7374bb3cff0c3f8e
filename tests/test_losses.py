import math

import torch

from hpgen import losses


def test_kl_matches_closed_form():
    mu = torch.tensor([0.5, -1.0]).view(1, 2, 1, 1, 1).expand(1, 2, 2, 3, 3).contiguous()
    sigma2 = torch.tensor([4.0, 0.25]).view(1, 2, 1, 1, 1).expand(1, 2, 2, 3, 3).contiguous()
    kl = losses.kl_divergence(mu, sigma2.log())
    # KL(N(m, s^2) || N(0, 1)) = 0.5 (m^2 + s^2 - 1 - log s^2), averaged over the 2 channels.
    closed = sum(0.5 * (m * m + s - 1 - math.log(s)) for m, s in ((0.5, 4.0), (-1.0, 0.25))) / 2
    assert math.isclose(float(kl), closed, rel_tol=1e-6)
    assert float(losses.kl_divergence(torch.zeros(2, 8, 2, 2, 2), torch.zeros(2, 8, 2, 2, 2))) == 0.0


def test_kl_sums_over_clips_and_matches_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.randn(1, 1, 1, 1, 1), torch.randn(1, 1, 1, 1, 1)
    z = losses.reparameterize(mu.expand(200000, 1, 1, 1, 1), logvar.expand(200000, 1, 1, 1, 1))
    s = torch.exp(0.5 * logvar)
    log_q = torch.distributions.Normal(mu, s).log_prob(z)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z)
    assert abs(float((log_q - log_p).mean()) - float(losses.kl_divergence(mu, logvar))) < 0.02
    assert math.isclose(float(losses.kl_divergence(mu.repeat(3, 1, 1, 1, 1), logvar.repeat(3, 1, 1, 1, 1))),
                        3 * float(losses.kl_divergence(mu, logvar)), rel_tol=1e-6)


def test_reconstruction_is_per_clip_mean_summed_over_clips():
    a, b = torch.zeros(2, 3, 2, 4, 4), torch.ones(2, 3, 2, 4, 4)
    b[1] = 2
    assert float(losses.reconstruction(a, b)) == 1.0 + 4.0


def test_gradient_penalty_zero_for_unit_gradient_critic_and_positive_otherwise():
    w = torch.randn(3 * 2 * 4 * 4)
    unit = lambda x: (x.flatten(1) @ (w / w.norm())).view(-1, 1)
    double = lambda x: 2 * unit(x)
    real, fake = torch.randn(4, 3, 2, 4, 4), torch.randn(4, 3, 2, 4, 4)
    assert float(losses.gradient_penalty(unit, real, fake)) < 1e-10
    assert math.isclose(float(losses.gradient_penalty(double, real, fake)), 1.0, rel_tol=1e-5)


def test_wgan_critic_is_one_scalar_with_the_right_signs():
    critic = lambda x: x.mean(dim=(1, 2, 3, 4), keepdim=True)
    real, fake = torch.full((2, 3, 1, 2, 2), 1.0), torch.full((2, 3, 1, 2, 2), -1.0)
    loss, stats = losses.wgan_critic(critic, real, fake, gp_weight=0.0)
    assert loss.dim() == 0 and float(loss) == -2.0 and float(stats["wdist"]) == 2.0
    assert float(losses.wgan_generator(critic, fake)) == 1.0


def test_critic_phase_gives_the_critics_constant_offset_exactly_no_gradient():
    """The WGAN critic loss ignores a constant added to D, so the gradient of the patch
    critic's last bias is 0 in maths. Scored in separate calls (as HPVAEGANMethod does) it is
    0 exactly, on any batch split; in one joint batch it is rounding noise that depends on the
    per-rank batch, which Adam turns into lr-sized steps of D's offset that differ between 1
    and 2 ranks (4.6e-5 relative in loss_g, over tests/test_distributed.py's 1e-5 bound)."""
    from torch.nn.utils import parametrize

    from hpgen.models import PatchCritic

    torch.manual_seed(0)
    critic = PatchCritic(3, channels=8, num_blocks=4)
    last_bias = critic.body[-1][0].bias
    real, fake = torch.rand(2, 2, 3, 4, 12, 20) * 2 - 1
    grads = {}
    for joint in (False, True):
        for lo, hi in ((0, 2), (0, 1), (1, 2)):  # one rank's batch, or each half on two ranks
            critic.zero_grad(set_to_none=True)
            with parametrize.cached():
                loss, _ = losses.wgan_critic(critic, real[lo:hi], fake[lo:hi], 0.1, torch.rand(hi - lo), "voxel",
                                             input_grad=critic.input_gradient, joint=joint)
            loss.backward()
            grads[joint, lo, hi] = float(last_bias.grad)
    # Joint batches give 6.5e-8, 1.9e-8, 1.9e-8 here (rounding: not asserted, it is the
    # platform's); separate calls give 0 on every split.
    assert all(grads[False, lo, hi] == 0.0 for lo, hi in ((0, 2), (0, 1), (1, 2))), grads
