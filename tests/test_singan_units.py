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
