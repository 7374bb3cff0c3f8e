import torch

from hpgen.models import HPVAEGAN, PatchCritic, PatchEncoder, ScaleGenerator
from hpgen.pyramid import ScaleShape


def test_blocks_preserve_shape_and_receptive_field_is_11():
    g = ScaleGenerator(3, channels=8).eval()
    x = torch.zeros(1, 3, 13, 23, 23, requires_grad=True)
    y = g(x)
    assert y.shape == x.shape and y.abs().max() <= 1  # tanh output
    y[0, :, 6, 11, 11].sum().backward()
    nz = x.grad[0].abs().sum(0).nonzero()
    extent = (nz.max(0).values - nz.min(0).values + 1).tolist()
    assert extent == [11, 11, 11]  # five 3x3x3 convs: r = 11 (appendix A.1)


def test_encoder_heads_and_spectral_norm():
    e = PatchEncoder(3, channels=8, latent_channels=16)
    mu, logvar = e(torch.randn(2, 3, 4, 10, 12))
    assert mu.shape == logvar.shape == (2, 16, 4, 10, 12)
    assert sum("parametrizations.weight" in n for n, _ in e.named_parameters()) == 5  # SN on all five blocks
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in e.modules())


def test_critic_is_a_patch_critic_with_spectral_norm():
    d = PatchCritic(3, channels=8)
    out = d(torch.randn(2, 3, 5, 9, 9))
    assert out.shape == (2, 1, 5, 9, 9)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in d.modules())


def test_grow_initialises_from_previous_generator_and_noise_amps_track_scales():
    m = HPVAEGAN(channels=8, latent_channels=8, vae_scales=2)
    m.grow()
    m.grow()
    assert m.num_scales == 3 and m.noise_amps.shape == (3,)
    a, b = m.generators[0].state_dict(), m.generators[1].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert m.generators[0] is not m.generators[1]
    assert not m.is_gan_scale(1) and m.is_gan_scale(2)


def test_synthesis_follows_the_pyramid_and_noise_only_at_gan_scales():
    m = HPVAEGAN(channels=8, latent_channels=8, vae_scales=2).eval()
    for _ in range(2):
        m.grow()
    shapes = [ScaleShape(3, 8, 12, 2), ScaleShape(3, 11, 16, 2), ScaleShape(5, 14, 21, 1)]
    z = torch.randn(m.latent_shape(1, shapes[0]))
    outs = m.synthesize(z, shapes, noise=True, return_all=True)
    assert [tuple(o.shape[2:]) for o in outs] == [s.thw for s in shapes]
    m.noise_amps[2] = 0.5
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    with torch.no_grad():
        a, b = m.synthesize(z, shapes, generator=g1), m.synthesize(z, shapes, generator=g2)
        c = m.synthesize(z, shapes, noise=False)
    assert not torch.allclose(a, b) and torch.allclose(c, m.synthesize(z, shapes, noise=False))


def test_image_mode_uses_2d_convolutions():
    m = HPVAEGAN(channels=8, latent_channels=8, vae_scales=1, dims=2).eval()
    m.grow()
    assert any(isinstance(x, torch.nn.Conv2d) for x in m.modules())
    assert not any(isinstance(x, torch.nn.Conv3d) for x in m.modules())
    shapes = [ScaleShape(1, 10, 14, 1), ScaleShape(1, 13, 19, 1)]
    out = m.sample(shapes, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 1, 13, 19)


def test_tiled_sample_equals_the_whole_frame_sample():
    """Windows of the frame, each from windows of the scales below, make the same video."""
    torch.manual_seed(0)
    model = HPVAEGAN(channels=8, latent_channels=8, num_blocks=3, vae_scales=1)
    for _ in range(3):
        model.grow()
    model.noise_amps.fill_(0.2)
    model.eval()
    shapes = [ScaleShape(3, 10, 17, 2), ScaleShape(4, 14, 24, 2), ScaleShape(5, 19, 33, 1), ScaleShape(5, 26, 45, 1)]
    with torch.no_grad():
        whole = model.sample(shapes, batch=2, generator=torch.Generator().manual_seed(5))
        for tile in (7, 16, 64):
            tiled = model.sample(shapes, batch=2, generator=torch.Generator().manual_seed(5), tile=tile)
            assert tiled.shape == whole.shape
            torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)
