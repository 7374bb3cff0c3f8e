"""SinGAN-family pieces without training: separable 3D convolution, the colour-statistics loss,
the 2D frame+neighbour generator, the latent path, z_opt chunks, the stack's export round trip,
ConSinGAN's learning-rate scale and the geometric parts of the applications."""
import math

import pytest
import torch

from hpgen import applications as apps
from hpgen.config import load_config
from hpgen.errors import HpgenError
from hpgen.losses import colour_statistics
from hpgen.methods import get_method
from hpgen.models.generator import ScaleGenerator
from hpgen.models.separable import FrameGenerator, SeparableConv3d, SeparableGenerator
from hpgen.models.singan import SinGANStack, latent_path
from hpgen.pyramid import ScaleShape, rescale_shapes

from conftest import REPO


def test_separable_conv_parameter_count_and_dense_equivalence():
    cin, cout, k = 5, 7, 3
    sep = SeparableConv3d(cin, cout, k)
    # 1xkxk spatial (no bias) + kx1x1 per output channel (+ bias): what Sec. 3.3.1 implies.
    assert sum(p.numel() for p in sep.parameters()) == cin * cout * k * k + cout * k + cout
    dense = torch.nn.Conv3d(cin, cout, k, padding=k // 2)
    assert sum(p.numel() for p in dense.parameters()) == cin * cout * k ** 3 + cout
    with torch.no_grad():
        dense.weight.copy_(sep.dense_weight())
        dense.bias.copy_(sep.temporal.bias)
    x = torch.randn(2, cin, 6, 9, 11)
    torch.testing.assert_close(sep(x), dense(x), atol=1e-5, rtol=1e-4)  # borders included
    w = sep.dense_weight()
    assert torch.allclose(w[:, :, 1], sep.spatial.weight[:, :, 0] * sep.temporal.weight[:, 0, 1, 0, 0][:, None, None, None])


def test_separable_generator_has_fewer_parameters_than_dense():
    sep = SeparableGenerator(3, 16, 3, 5, 3)
    dense = ScaleGenerator(3, 16, 3, 5, 3, dims=3)
    n_sep = sum(p.numel() for p in sep.parameters())
    n_dense = sum(p.numel() for p in dense.parameters())
    assert n_sep < 0.45 * n_dense, (n_sep, n_dense)


def test_colour_statistics_closed_form():
    real = torch.empty(1, 3, 2, 4, 4)
    real[:, 0], real[:, 1], real[:, 2] = 0.5, -0.5, 0.0
    real[:, 2, :, :, :2] = 1.0  # channel 2: half 1, half 0 -> mean 0.5, variance 0.25
    fake = torch.zeros(2, 3, 3, 4, 4)  # constant frames: mean 0, variance 0
    expected = ((0.5 + 0) + (0.5 + 0) + (0.5 + 0.25)) / 3  # |mu_f - mu_r| + |var_f - var_r| per channel
    assert colour_statistics(fake, real).item() == pytest.approx(expected)
    assert colour_statistics(real, real).item() == pytest.approx(0.0, abs=1e-7)
    # A generated frame is compared with the statistics of all training frames together.
    fake2 = real[:, :, :1].clone()
    assert colour_statistics(fake2, real).item() == pytest.approx(0.0, abs=1e-7)
    g = torch.randn(1, 3, 2, 4, 4, requires_grad=True)
    colour_statistics(g, real).backward()
    assert g.grad.abs().sum() > 0


def test_frame_generator_sees_only_its_temporal_neighbours():
    torch.manual_seed(0)
    gen = FrameGenerator(ScaleGenerator(9, 8, 3, 2, 3, dims=2), neighbours=1).eval()
    x = torch.randn(1, 3, 6, 8, 8)
    y = gen(x)
    assert y.shape == (1, 3, 6, 8, 8)
    x2 = x.clone()
    x2[:, :, 0] += 1.0
    y2 = gen(x2)
    changed = [(y2[:, :, t] - y[:, :, t]).abs().max().item() > 1e-6 for t in range(6)]
    assert changed == [True, True, False, False, False, False]


def test_latent_path_endpoints_and_slow_down():
    g = torch.Generator().manual_seed(0)
    z = latent_path(64, 8, (6, 6), step=7, generator=g)
    assert z.shape == (64, 3, 8, 6, 6)
    assert z[:, :, 0].mean().item() == pytest.approx(-1, abs=0.1)
    assert z[:, :, 7].mean().item() == pytest.approx(1, abs=0.1)
    # Interior frames are exact interpolations of the two end maps.
    torch.testing.assert_close(z[:, :, 3], (4 / 7) * z[:, :, 0] + (3 / 7) * z[:, :, 7])
    # Twice slower: 16 frames with knots 14 apart; every second frame is on the factor-1 path.
    z2 = latent_path(1, 16, (2, 2), step=14, generator=torch.Generator().manual_seed(1))
    for t in range(8):
        a = (2 * t) / 14
        torch.testing.assert_close(z2[:, :, 2 * t], (1 - a) * z2[:, :, 0] + a * z2[:, :, 14])


def _stack(**kw):
    args = dict(channels=8, num_blocks=3, kernel=3, dims=3, conv3d_scales=2, separable=True, neighbours=1,
                latent_path=False)
    args.update(kw)
    return args


def test_hybrid_stack_kinds_noise_and_export_round_trip():
    args = _stack()
    m = SinGANStack(**args)
    for _ in range(4):
        m.grow()
    assert [m.kind(n) for n in range(4)] == ["sep3d", "sep3d", "hybrid", "hybrid"]
    shape = ScaleShape(8, 10, 12, 1)
    assert m.make_noise(1, shape).shape == (1, 3, 8, 10, 12)
    assert m.make_noise(2, shape).shape == (1, 3, 1, 10, 12)  # one map for every frame (Sec. 3.3.2)
    m.draw_z_opt(3, ScaleShape(4, 5, 6, 1))
    assert m.z_opt.shape == (1, 3, 12, 5, 6)
    chunks = m.z_opt_chunks([2, 0], 4)
    torch.testing.assert_close(chunks[0], m.z_opt[0, :, 8:12])
    torch.testing.assert_close(chunks[1], m.z_opt[0, :, 0:4])
    m.noise_amps[1:] = torch.tensor([0.3, 0.2, 0.1])
    m2 = get_method("singan").model_from_args(args, 4)
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2.z_opt, m.z_opt)
    assert m2.noise_amps.tolist() == pytest.approx([1.0, 0.3, 0.2, 0.1])
    assert int(m2.path_frames) == 4


def test_consingan_trains_stages_concurrently_with_scaled_lr():
    cfg = load_config(REPO / "configs" / "baselines" / "consingan3d.toml", ["model.channels=4", "model.num_blocks=2"])
    method = get_method("singan")(cfg)
    model = method.build_model()
    critic = method.grow(model, None, 4)
    groups = method.param_groups(model, critic, 4)
    assert [g["lr"] for g in groups["g"]] == pytest.approx([5e-4 * 0.01, 5e-4 * 0.1, 5e-4])
    trained = {id(p) for g in groups["g"] for p in g["params"]}
    for n, gen in enumerate(model.generators):
        assert all(p.requires_grad == (n >= 2) for p in gen.parameters())
        assert all((id(p) in trained) == (n >= 2) for p in gen.parameters())


def test_gif_critics_are_image_and_video():
    cfg = load_config(REPO / "configs" / "singan_gif" / "demo.toml")
    method = get_method("singan")(cfg)
    critic = method.grow(method.build_model(), None, 0)
    assert critic.image is not None and critic.video is not None
    assert (method.w_img, method.w_vid) == (1.0, 5.0)
    assert (cfg.train.recon_weight, cfg.singan.stat_weight) == (50.0, 2.0)
    b = load_config(REPO / "configs" / "baselines" / "singan3d.toml")
    critic = get_method("singan")(b).grow(get_method("singan")(b).build_model(), None, 0)
    assert critic.image is None and critic.video is not None


def test_super_resolution_sizes_and_passes():
    m = SinGANStack(**_stack())
    for _ in range(3):
        m.grow()
    m.eval()
    x = torch.rand(1, 3, 5, 11, 17) * 2 - 1
    with torch.no_grad():
        y = apps.super_resolve(m, x, 2, 4 / 3)
    assert y.shape == (1, 3, 5, 22, 34)
    assert math.ceil(math.log(2) / math.log(4 / 3)) == 3  # three passes of 2**(1/3) <= 4/3


def test_feather_mask_is_one_inside_and_zero_far_away():
    mask = torch.zeros(1, 1, 2, 20, 20)
    mask[..., 8:12, 8:12] = 1
    soft = apps.feather_mask(mask, 2)
    assert (soft[..., 8:12, 8:12] == 1).all()
    assert (soft[..., :4, :] == 0).all() and (soft[..., 16:, :] == 0).all()
    assert ((soft >= 0) & (soft <= 1)).all()


def test_application_errors_are_one_line():
    m = SinGANStack(**_stack())
    for _ in range(3):
        m.grow()
    shapes = [ScaleShape(4, 8 + 2 * i, 10 + 2 * i, 1) for i in range(3)]
    with pytest.raises(HpgenError, match="injection scale"):
        apps.inject(m, torch.zeros(1, 3, 4, 12, 14), shapes, 0)
    with pytest.raises(HpgenError, match="slo-mo"):
        apps.slomo(get_method("singan"), m, shapes, 2)
    with pytest.raises(HpgenError, match="trained on an image"):
        rescale_shapes([ScaleShape(1, 8, 8, 1)], 4, 8, 8)


# ---------------------------------------------------------------------------
# Eq. 5, separable blocks under activation checkpointing, the super-resolution recipe,
# the parallel-run checks (issue 15)

def test_l1_reconstruction_equals_a_hand_computed_l1():
    from hpgen.losses import RECONSTRUCTION, l1_reconstruction

    fake = torch.tensor([0.5, -1.0, 0.25, 0.0, 1.0, -0.5, 0.75, 0.0]).reshape(2, 1, 1, 2, 2)
    real = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5]).reshape(2, 1, 1, 2, 2)
    # clip 0: |.5| + |-1| + |.25| + |0| = 1.75 over 4 voxels; clip 1: .5 + 1 + .25 + .5 = 2.25 over 4
    assert l1_reconstruction(fake, real).item() == pytest.approx(1.75 / 4 + 2.25 / 4)
    assert l1_reconstruction(fake[:1], real[:1]).item() == pytest.approx(0.4375)
    assert RECONSTRUCTION["l1"] is l1_reconstruction
    # The SinGAN-GIF presets use Eq. 5's L1; the 3D baselines keep SinGAN's MSE, and say so.
    for preset, loss in (("singan_gif/demo.toml", "l1"), ("singan_gif/paper.toml", "l1"),
                         ("singan_gif/superres.toml", "l1"), ("baselines/singan3d.toml", "mse"),
                         ("baselines/consingan3d.toml", "mse")):
        assert f'recon_loss = "{loss}"' in (REPO / "configs" / preset).read_text(), preset
        assert load_config(REPO / "configs" / preset).singan.recon_loss == loss


def test_the_gif_generator_phase_uses_the_l1_term():
    """The generator phase's ``rec`` is Eq. 5 on the step's clips (z_opt path), as a hand L1."""
    from hpgen.methods.base import ScaleState

    cfg = load_config(REPO / "configs" / "singan_gif" / "demo.toml", ["model.channels=4", "model.num_blocks=2"])
    method = get_method("singan")(cfg)
    model = method.build_model()
    critic = method.grow(model, None, 0)
    method.param_groups(model, critic, 0)
    shapes = [ScaleShape(4, 12, 16, 1)]
    torch.manual_seed(0)
    st = ScaleState(0, shapes, [torch.rand(2, 3, 4, 12, 16) * 2 - 1])
    method.begin_scale(model, st)
    method.begin_iteration(model, st)
    _, stats = method.generator_loss(model, critic, st, phase=1)
    c = st.cache["clips"]
    with torch.no_grad():
        rec = model.reconstruct(shapes, c, 0)
    hand = (rec - st.reals[0][c]).abs().mean().item()
    assert stats["rec"].item() == pytest.approx(hand, rel=1e-5)


def _saved_tensors(fn):
    count = [0]

    def pack(t):
        count[0] += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, count[0]


def test_activation_checkpointing_covers_separable_blocks():
    from hpgen import engine as eng
    from hpgen.models.separable import SeparableBlock

    torch.manual_seed(0)
    gen = SeparableGenerator(3, 8, 3, 4, 3)
    x = torch.randn(2, 3, 5, 9, 11)
    start = {k: v.clone() for k, v in gen.state_dict().items()}

    def run():
        gen.zero_grad(set_to_none=True)
        out, saved = _saved_tensors(lambda: gen(x))
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        return {n: p.grad.clone() for n, p in gen.named_parameters()}, saved, \
            {k: v.clone() for k, v in gen.state_dict().items()}

    g0, saved0, after0 = run()
    gen.load_state_dict(start)
    eng.set_activation_checkpointing(gen, True)
    assert all("forward" in m.__dict__ for m in gen.modules() if isinstance(m, SeparableBlock))
    g1, saved1, after1 = run()
    assert saved1 < saved0 / 2, (saved1, saved0)  # activations are recomputed, not stored
    for k in g0:
        assert torch.equal(g0[k], g1[k]), k
    for k in after0:  # BatchNorm statistics moved once, as without checkpointing
        assert torch.equal(after0[k], after1[k]), k
    eng.set_activation_checkpointing(gen, False)
    assert not any("forward" in m.__dict__ for m in gen.modules())


def test_generators_saved_with_a_bias_before_batchnorm_load_exactly():
    """Separable blocks lost the temporal conv bias that BatchNorm cancels; a stack saved with
    it loads with the bias folded into the running mean, and samples the same."""
    from hpgen.models.separable import SeparableBlock

    torch.manual_seed(0)
    new = SeparableBlock(3, 4)
    assert new[0].temporal.bias is None
    old = {k: v.clone() for k, v in new.state_dict().items()}
    old["0.temporal.bias"] = torch.randn(4)
    old["1.running_mean"] = torch.randn(4)
    old["1.running_var"] = torch.rand(4) + 0.5
    x = torch.randn(2, 3, 4, 6, 6)
    ref = torch.nn.functional.conv3d(new[0].spatial(x), new[0].temporal.weight, old["0.temporal.bias"],
                                     padding=(1, 0, 0), groups=4)
    ref = torch.nn.functional.batch_norm(ref, old["1.running_mean"], old["1.running_var"], old["1.weight"],
                                         old["1.bias"], False, 0.0, 1e-5)
    new.load_state_dict(old)
    new.eval()
    torch.testing.assert_close(new(x), torch.nn.functional.leaky_relu(ref, 0.2), atol=1e-5, rtol=1e-5)


def test_superres_recipe_is_the_papers_and_refuses_other_runs():
    r = apps.superres_recipe(2)
    assert r == {"scale_factor": pytest.approx(2 ** 0.5), "recon_weight": 125.0, "passes": 2}
    assert apps.superres_recipe(3)["scale_factor"] ** 3 == pytest.approx(3)
    cfg = load_config(REPO / "configs" / "singan_gif" / "superres.toml")
    assert cfg.pyramid.scale_factor == pytest.approx(2 ** 0.5) and cfg.train.recon_weight == 125.0
    good = {"pyramid": {"scale_factor": cfg.pyramid.scale_factor}, "train": {"recon_weight": 125.0}}
    assert apps.check_superres_run(good, 2)["passes"] == 2
    with pytest.raises(HpgenError, match=r"recon_weight=50.*configs/singan_gif/superres.toml") as e:
        apps.check_superres_run({"pyramid": {"scale_factor": 4 / 3}, "train": {"recon_weight": 50.0}}, 2)
    assert "\n" not in str(e.value)
    with pytest.raises(HpgenError, match="integer --factor"):
        apps.superres_recipe(2.5)
    # k passes of k**(1/k) through the finest generator.
    m = SinGANStack(**_stack())
    for _ in range(3):
        m.grow()
    m.eval()
    calls = []
    m.generators[-1].register_forward_hook(lambda mod, i, o: calls.append(o.shape))
    with torch.no_grad():
        y = apps.super_resolve(m, torch.rand(1, 3, 4, 10, 14) * 2 - 1, 3, r["scale_factor"], passes=3)
    assert y.shape == (1, 3, 4, 30, 42) and len(calls) == 3


def test_parallel_runs_that_cannot_be_split_are_one_line_errors():
    cfg = load_config(REPO / "configs" / "singan_gif" / "demo.toml", ["pyramid.frames=4"])
    method = get_method("singan")(cfg)
    method.check_parallel(2, 2, 1)
    with pytest.raises(HpgenError, match=r"gives 3 clip\(s\) of 4 frames, but 4 data-parallel replica\(s\) x 1 "
                                         r"clip\(s\) per step \(data.clips_per_step\) need 4 clips \(16 frames\)"):
        method.check_parallel(3, 4, 1)
    con = get_method("singan")(load_config(REPO / "configs" / "baselines" / "consingan3d.toml"))
    con.check_parallel(1, 1, 1)
    with pytest.raises(HpgenError, match="concurrent=3 cannot run on dist.pipeline_stages=2"):
        con.check_parallel(4, 1, 2)
