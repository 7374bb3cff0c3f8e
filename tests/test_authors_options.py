"""The choices where the HP-VAE-GAN paper and its authors' code differ, each a config key
(docs/methods.md, "Paper and code"): BatchNorm statistics at sampling, the gradient-penalty
norm, the measured frame side, per-scale iteration counts and the encoder depth."""
import math

import pytest
import torch

from hpgen import losses
from hpgen.config import load_config
from hpgen.errors import HpgenError
from hpgen.models import HPVAEGAN
from hpgen.pyramid import ScaleShape, pyramid_shapes

from conftest import REPO


def _shapes():
    return [ScaleShape(3, 8, 12, 2), ScaleShape(5, 11, 16, 1)]


@torch.no_grad()
def test_batch_norm_stats_normalise_each_sample_by_itself():
    torch.manual_seed(0)
    m = HPVAEGAN(channels=8, latent_channels=4, num_blocks=3, vae_scales=2, norm_stats="batch")
    m.grow()
    assert not any("running_mean" in k for k in m.state_dict())  # nothing kept from training
    z = torch.randn(1, 4, 3, 8, 12)
    trained, frozen = m.train().synthesize(z, _shapes()), m.eval().synthesize(z, _shapes())
    assert torch.equal(trained, frozen)  # eval() changes nothing: a sample brings its own statistics
    # A sample's own statistics: its output does not depend on what else is in the batch.
    pair = m.synthesize(torch.cat([z, 3 * torch.randn(1, 4, 3, 8, 12)]), _shapes())
    assert not torch.allclose(pair[:1], frozen, atol=1e-3)  # normalised with the batch at hand

    r = HPVAEGAN(channels=8, latent_channels=4, num_blocks=3, vae_scales=2, norm_stats="running")
    r.grow()
    r.load_state_dict({**r.state_dict(), **{k: v for k, v in m.state_dict().items()}})
    assert not torch.allclose(r.train().synthesize(z, _shapes()), r.eval().synthesize(z, _shapes()))


def test_tiled_sampling_is_refused_with_per_sample_statistics():
    m = HPVAEGAN(channels=4, latent_channels=4, num_blocks=3, vae_scales=2, norm_stats="batch")
    m.grow()
    with pytest.raises(HpgenError, match="tiled sampling needs running"):
        m.sample(_shapes(), tile=8)


def test_gradient_penalty_norm_per_voxel_and_per_sample():
    # A 1x1x1 linear critic: the gradient of its summed score map is w at every voxel.
    w = torch.tensor([0.6, 0.0, 0.8]) * 2.0  # |w| = 2
    critic = lambda x: torch.einsum("bcthw,c->bthw", x, w).unsqueeze(1)  # noqa: E731
    real, fake = torch.randn(2, 3, 2, 3, 4), torch.randn(2, 3, 2, 3, 4)
    voxels = 2 * 3 * 4
    assert math.isclose(float(losses.gradient_penalty(critic, real, fake, norm="voxel")), (2 - 1) ** 2, rel_tol=1e-6)
    assert math.isclose(float(losses.gradient_penalty(critic, real, fake, norm="sample")),
                        (2 * math.sqrt(voxels) - 1) ** 2, rel_tol=1e-6)


def test_longer_side_pyramid_is_the_authors_geometry():
    shapes = pyramid_shapes((144, 256), num_scales=10, min_size=32, max_size=256, factor=8 ** (1 / 9),
                            rates=[1, 2, 3, 4], side="longer")
    assert [s.width for s in shapes] == [32, 40, 51, 64, 81, 102, 128, 161, 203, 256]
    assert (shapes[0].height, shapes[-1].height) == (18, 144)
    assert len({s.thw for s in shapes}) == 10  # no duplicate size at the top
    assert [s.frames for s in shapes][0] == 4 and shapes[-1].frames == 13
    portrait = pyramid_shapes((256, 144), num_scales=2, min_size=32, max_size=256, factor=8.0, rates=[1],
                              side="longer")
    assert [(s.height, s.width) for s in portrait] == [(32, 18), (256, 144)]


def test_iters_per_scale_takes_a_number_or_one_per_scale(tmp_path):
    demo = REPO / "configs" / "hpvaegan" / "demo.toml"
    cfg = load_config(demo, ["train.iters_per_scale=7"])
    assert [cfg.train.iters(n) for n in range(cfg.pyramid.num_scales)] == [7] * cfg.pyramid.num_scales
    n = cfg.pyramid.num_scales
    cfg = load_config(demo, [f"train.iters_per_scale={list(range(1, n + 1))}"])
    assert [cfg.train.iters(k) for k in range(n)] == list(range(1, n + 1))
    assert cfg.train.steps_before(2) == 1 + 2
    with pytest.raises(HpgenError, match="one per scale"):
        load_config(demo, ["train.iters_per_scale=[1, 2]"])
    with pytest.raises(HpgenError, match="expected a list"):  # other list keys still want a list
        load_config(demo, ["train.betas=0.5"])


def test_encoder_depth_is_its_own_key():
    m = HPVAEGAN(channels=8, latent_channels=4, num_blocks=7, encoder_blocks=3)
    convs = [k for k in m.encoder.body.state_dict() if k.endswith("parametrizations.weight.original")]
    assert len(convs) == 3  # spectrally normalised blocks before the mu/logvar heads
    dec = [mod for mod in m.decoder.modules() if isinstance(mod, torch.nn.Conv3d)]
    assert len(dec) == 7  # receptive field 15, as the authors' head + 5 blocks + tail


@torch.no_grad()
def test_tanh_output_is_tanh_of_the_sum():
    torch.manual_seed(0)
    m = HPVAEGAN(channels=8, latent_channels=4, num_blocks=3, vae_scales=1, output="tanh").eval()
    m.grow()
    assert not any(isinstance(mod, torch.nn.Tanh) for mod in m.generators[0].modules())  # linear last conv
    assert any(isinstance(mod, torch.nn.Tanh) for mod in m.decoder.modules())  # G^0 still ends in tanh
    for p in m.generators[0].parameters():
        p.mul_(50)  # a residual large enough that up + G^1 leaves [-1, 1]
    z = torch.randn(1, 4, 3, 8, 12)
    x0, x1 = m.synthesize(z, _shapes(), noise=False, return_all=True)
    from hpgen.pyramid import resize
    up = resize(x0, _shapes()[1].thw)
    assert torch.allclose(x1, torch.tanh(up + m.generators[0](up)), atol=1e-6)
    assert x1.abs().max() <= 1 < (up + m.generators[0](up)).abs().max()  # bounded although the sum is not
    r = HPVAEGAN(channels=8, latent_channels=4, num_blocks=3, vae_scales=1).eval()
    r.grow()
    assert isinstance(list(r.generators[0].modules())[-1], torch.nn.Tanh)  # the default: up + tanh(G)
    with pytest.raises(HpgenError, match="unknown output"):
        HPVAEGAN(output="sigmoid")
    with pytest.raises(HpgenError, match="model.output"):
        load_config(REPO / "configs" / "hpvaegan" / "tiny.toml", ["model.output=sigmoid"])


def test_critic_gradient_clip_is_its_own_key():
    tiny = REPO / "configs" / "hpvaegan" / "tiny.toml"
    cfg = load_config(tiny, ["train.grad_clip=0.5"])
    assert (cfg.train.clip_for("g"), cfg.train.clip_for("d")) == (0.5, 0.5)  # -1: the same as the generator
    cfg = load_config(tiny, ["train.grad_clip=0.5", "train.grad_clip_critic=0"])
    assert (cfg.train.clip_for("g"), cfg.train.clip_for("d")) == (0.5, 0.0)  # the authors: the critic unclipped
    with pytest.raises(HpgenError, match="grad_clip_critic"):
        load_config(tiny, ["train.grad_clip_critic=-2"])
