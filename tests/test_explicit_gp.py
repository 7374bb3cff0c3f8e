"""The explicit gradient penalty (hpgen/models/input_grad.py) equals autograd's, in float64,
in value and in the gradient of every critic parameter; and one GAN iteration runs no
convolution whose kernel is larger than the model's (autograd's double backward runs one
whose kernel is a whole gradient video per critic layer)."""
import copy

import pytest
import torch
from torch.nn.utils import parametrize
from torch.utils._python_dispatch import TorchDispatchMode

from hpgen import losses
from hpgen.config import load_config
from hpgen.engine import set_cpu_conv3d_layout
from hpgen.methods import get_method
from hpgen.methods.base import ScaleState
from hpgen.models import PatchCritic
from hpgen.models.singan import SinGANCritics
from hpgen.pyramid import ScaleShape

from conftest import REPO

REL = 1e-10


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _penalty_and_grads(critic, real, fake, eps, norm, explicit, input_grad, score):
    """The penalty alone and its gradient in every critic parameter."""
    critic.zero_grad(set_to_none=True)
    with parametrize.cached():
        gp = losses.gradient_penalty(score(critic), real, fake, eps, norm, input_grad(critic) if explicit else None)
        gp.backward()
    # A parameter outside the penalty's graph (a bias: it never enters the input gradient)
    # has no gradient; it counts as 0.
    return gp.detach(), {k: torch.zeros_like(p) if p.grad is None else p.grad.clone()
                         for k, p in critic.named_parameters()}


def _check(critic, shape, input_grad=lambda c: c.input_gradient, norms=("voxel", "sample"), train=True,
           score=lambda c: c):
    torch.manual_seed(1)
    critic = critic.double().train(train)
    real = torch.rand(shape, dtype=torch.float64) * 2 - 1
    fake = torch.rand(shape, dtype=torch.float64) * 2 - 1
    eps = torch.rand(shape[0], dtype=torch.float64)
    for norm in norms:
        a, b = copy.deepcopy(critic), copy.deepcopy(critic)  # the same spectral-norm vectors
        gp_ref, g_ref = _penalty_and_grads(a, real, fake, eps, norm, False, input_grad, score)
        gp_exp, g_exp = _penalty_and_grads(b, real, fake, eps, norm, True, input_grad, score)
        assert gp_ref > 0
        assert _rel(gp_exp, gp_ref) < REL, norm
        assert g_ref.keys() == g_exp.keys()
        for k in g_ref:
            if k.endswith("bias") and g_ref[k].abs().max() == 0:
                # A bias never enters the input gradient: autograd's is 0 too.
                assert g_exp[k].abs().max() == 0, k
                continue
            assert _rel(g_exp[k], g_ref[k]) < REL, (norm, k, _rel(g_exp[k], g_ref[k]))
        # The state a phase leaves (spectral-norm vectors, BatchNorm running statistics) too.
        for (k, u), (_, v) in zip(a.named_buffers(), b.named_buffers()):
            assert torch.allclose(u, v, rtol=1e-12, atol=0), k


def test_explicit_gp_equals_autograd_3d_critic_with_spectral_norm():
    critic = PatchCritic(3, 8, num_blocks=5, kernel=3, dims=3)
    assert any(parametrize.is_parametrized(m) for m in critic.modules())  # spectral norm is on
    _check(critic, (2, 3, 5, 9, 11))


def test_explicit_gp_equals_autograd_3d_critic_on_the_cpu_conv_path():
    critic = set_cpu_conv3d_layout(PatchCritic(3, 8, num_blocks=3, kernel=3, dims=3), always=True)
    _check(critic, (1, 3, 4, 10, 12))


def test_explicit_gp_equals_autograd_2d_image_mode_critic():
    _check(PatchCritic(3, 8, num_blocks=4, kernel=3, dims=2), (2, 3, 1, 12, 14))


def test_explicit_gp_equals_autograd_kernel_5():
    _check(PatchCritic(3, 6, num_blocks=3, kernel=5, dims=3), (1, 3, 6, 9, 10), norms=("voxel",))


@pytest.mark.parametrize("train", [True, False])
def test_explicit_gp_equals_autograd_singan_gif_critics(train):
    """SinGAN-GIF's image (per-frame 2D) and video (3D) critics: conv-BatchNorm-LeakyReLU,
    exact through batch statistics (train) and running statistics (eval)."""
    c = SinGANCritics(8, 4, 3, image=True, video=True)
    if not train:  # non-trivial running statistics
        with torch.no_grad():
            c.train()(torch.randn(2, 3, 4, 9, 10) * 2 + 0.5)
            c.frames(torch.randn(2, 3, 4, 9, 10) * 2 + 0.5)
    _check(c.video, (2, 3, 4, 9, 10), train=train)
    c.image.train(train)
    _check(c, (2, 3, 4, 9, 10), input_grad=lambda m: m.frames_input_gradient, train=train, score=lambda m: m.frames)


@pytest.mark.parametrize("joint", [False, True], ids=["separate", "joint"])
def test_explicit_gp_through_wgan_critic(joint):
    """The whole critic phase with the explicit penalty, real and fake scored in separate
    calls (as HPVAEGANMethod.critic_loss runs it) or in one batch (``joint``, which no method
    uses today), equals the autograd phase (separate calls, double-backward penalty)."""
    torch.manual_seed(2)
    critic = PatchCritic(3, 8, num_blocks=4, kernel=3, dims=3).double()
    real, fake = torch.rand(2, 2, 3, 4, 8, 9, dtype=torch.float64) * 2 - 1
    eps = torch.rand(2, dtype=torch.float64)
    out = []
    for explicit in (False, True):
        c = copy.deepcopy(critic)
        with parametrize.cached():
            loss, _ = losses.wgan_critic(c, real, fake, 0.1, eps, "voxel",
                                         input_grad=c.input_gradient if explicit else None, joint=explicit and joint)
            loss.backward()
        out.append((loss.detach(), [p.grad for p in c.parameters()]))
    assert _rel(out[1][0], out[0][0]) < REL
    for a, b in zip(out[1][1], out[0][1]):
        assert _rel(a, b) < REL


def test_unsupported_layer_is_refused():
    from hpgen.models.input_grad import input_gradient

    with pytest.raises(NotImplementedError, match="Tanh"):
        input_gradient(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh()),
                       torch.randn(1, 3, 5, 5))


# ------------------------------------------------------------------- guard: kernel sizes

class ConvKernels(TorchDispatchMode):
    """Records the weight (kernel) shape of every convolution dispatched, forward and backward."""

    def __init__(self):
        super().__init__()
        self.kernels = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in ("convolution", "convolution_backward", "_convolution", "mkldnn_convolution",
                    "slow_conv3d_forward", "_slow_conv2d_forward", "slow_conv_transpose3d",
                    "slow_conv_transpose2d", "slow_conv_dilated3d", "_convolution_double_backward"):
            w = args[2] if name == "convolution_backward" else args[1]
            self.kernels.append((name, tuple(w.shape[2:])))
        return func(*args, **kwargs)


def _gan_iteration_kernels(overrides):
    cfg = load_config(REPO / "configs/hpvaegan/tiny.toml",
                      ["model.channels=4", "model.latent_channels=4", "model.num_blocks=3", "train.vae_scales=1",
                       *overrides])
    method = get_method("hpvaegan")(cfg)
    shapes = [ScaleShape(3, 8, 12, 2), ScaleShape(5, 11, 16, 1)]
    torch.manual_seed(0)
    reals = [torch.rand(1, 3, *s.thw) * 2 - 1 for s in shapes]
    model, critic = method.build_model(), None
    for k in range(2):
        critic = method.grow(model, critic, k)
    groups = method.param_groups(model, critic, 1)
    opts = {k: torch.optim.Adam([p for g in v for p in g["params"]], lr=1e-4) for k, v in groups.items()}
    st = ScaleState(1, shapes, reals)
    method.begin_scale(model, st)
    method.begin_iteration(model, st)
    with ConvKernels() as mode:
        for name, phase in method.phases(model, critic, st):
            loss, _, *after = phase()
            loss.backward()
            opts[name].step()
            opts[name].zero_grad()
    return cfg.model.kernel, mode.kernels


@pytest.mark.parametrize("dims", ["video", "image"])
def test_no_convolution_kernel_larger_than_the_model_kernel(dims):
    """Fails with train.gp_method = "autograd" (today's penalty before this change): its
    double backward convolves with the gradient video as the kernel, once per critic layer."""
    extra = ["pyramid.image=true"] if dims == "image" else []
    k, kernels = _gan_iteration_kernels(extra)
    assert kernels, "no convolution seen: the counter is broken"
    big = [(n, s) for n, s in kernels if any(d > k for d in s)]
    assert big == [], big


def test_the_guard_sees_autograd_double_backward():
    k, kernels = _gan_iteration_kernels(["train.gp_method=\"autograd\""])
    big = [(n, s) for n, s in kernels if any(d > k for d in s)]
    assert len(big) >= 3, kernels  # one per critic layer at least


# ------------------------------------------------------------------- lazy regularisation

def test_lazy_penalty_weight_every_kth_critic_step():
    cfg = load_config(REPO / "configs/hpvaegan/tiny.toml", ["train.gp_every=4", "train.gp_weight=0.1"])
    weights = [cfg.train.gp_weight_at(i) for i in range(9)]
    assert weights == pytest.approx([0.4, 0, 0, 0, 0.4, 0, 0, 0, 0.4])
    cfg = load_config(REPO / "configs/hpvaegan/tiny.toml")
    assert [cfg.train.gp_weight_at(i) for i in range(3)] == pytest.approx([0.1] * 3)
    with pytest.raises(Exception, match="gp_every"):
        load_config(REPO / "configs/hpvaegan/tiny.toml", ["train.gp_every=0"])
    with pytest.raises(Exception, match="gp_method"):
        load_config(REPO / "configs/hpvaegan/tiny.toml", ["train.gp_method=\"double\""])


def _gan_iterations(overrides, checkpointing, iterations=2):
    """``iterations`` GAN iterations of the hpvaegan method at its first GAN scale, phase by
    phase as the trainer runs them (the critic phase's spectral-norm cache, real and fake
    scored in separate calls, the configured penalty), with every conv block of G and D
    recomputed in backward or not: each phase's loss and gradients, and the buffers at the end."""
    from hpgen.engine import set_activation_checkpointing

    cfg = load_config(REPO / "configs/hpvaegan/tiny.toml",
                      ["model.channels=4", "model.latent_channels=4", "model.num_blocks=3", "train.vae_scales=1",
                       "train.critic_steps=2", *overrides])
    method = get_method("hpvaegan")(cfg)
    shapes = [ScaleShape(3, 8, 12, 2), ScaleShape(5, 11, 16, 1)]
    torch.manual_seed(0)
    reals = [torch.rand(2, 3, *s.thw) * 2 - 1 for s in shapes]
    model, critic = method.build_model(), None
    for k in range(2):
        critic = method.grow(model, critic, k)
    for net in (model, critic):
        set_activation_checkpointing(net, checkpointing)
    groups = method.param_groups(model, critic, 1)
    opts = {k: torch.optim.Adam([p for g in v for p in g["params"]], lr=1e-3) for k, v in groups.items()}
    st = ScaleState(1, shapes, reals)
    method.begin_scale(model, st)
    trace = []
    for step in range(iterations):
        st.step = step
        method.begin_iteration(model, st)
        for name, phase in method.phases(model, critic, st):
            loss, _, *after = phase()
            loss.backward()
            net = critic if name == "d" else model
            trace.append((name, loss.detach(), {k: p.grad.clone() for k, p in net.named_parameters()
                                                if p.grad is not None}))
            opts[name].step()
            opts[name].zero_grad(set_to_none=True)
    state = {**{f"g.{k}": v.clone() for k, v in model.state_dict().items()},
             **{f"d.{k}": v.clone() for k, v in critic.state_dict().items()}}
    for net in (model, critic):
        set_activation_checkpointing(net, False)
    return trace, state


@pytest.mark.parametrize("overrides", [[], ["train.gp_method=\"autograd\""], ["pyramid.image=true"]],
                         ids=["explicit", "autograd", "image"])
def test_activation_checkpointing_bit_identical_in_the_methods_gan_phases(overrides):
    """The GAN phases as hpvaegan runs them (HPVAEGANMethod.phases: the critic phase caches
    the spectral-norm weights, which D(real), D(fake) and the penalty share, and the backward
    runs after that cache is gone) give the same losses, gradients and buffers, bit for bit,
    with the blocks of G and D recomputed in backward. Before the recomputation replayed the
    parametrisation cache this raised CheckpointError: D(fake)'s blocks read the cached
    weights in forward but recomputed the spectral norm in backward."""
    t0, s0 = _gan_iterations(overrides, False)
    t1, s1 = _gan_iterations(overrides, True)
    assert [n for n, *_ in t0] == [n for n, *_ in t1] == ["d", "d", "g"] * 2
    for (name, l0, g0), (_, l1, g1) in zip(t0, t1):
        assert torch.equal(l0, l1), name
        assert g0.keys() == g1.keys() and g0, name
        for k in g0:
            assert torch.equal(g0[k], g1[k]), (name, k)
    assert s0.keys() == s1.keys() and any(k.endswith("_u") for k in s0)
    for k in s0:
        assert torch.equal(s0[k], s1[k]), k
