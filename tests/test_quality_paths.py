"""bench/quality_paths.py: the four paths through a trained HP-VAE-GAN pyramid. The
reconstruction path is the encoder mean with no z_n; a prior draw without z_n equals the
one with it exactly when the GAN scales' noise amplitude is zero, and differs otherwise."""
from __future__ import annotations

import importlib.util

import torch

from hpgen.models import HPVAEGAN
from hpgen.pyramid import ScaleShape, resize

from conftest import REPO

spec = importlib.util.spec_from_file_location("quality_paths", REPO / "bench" / "quality_paths.py")
qp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(qp)

SHAPES = [ScaleShape(3, 8, 12, 2), ScaleShape(5, 11, 16, 1), ScaleShape(5, 14, 20, 1)]


def _model(amp: float) -> HPVAEGAN:
    torch.manual_seed(0)
    m = HPVAEGAN(channels=8, latent_channels=4, num_blocks=3, vae_scales=2, norm_stats="batch")
    m.grow()
    m.grow()
    m.noise_amps = torch.tensor([0.0, 0.0, amp])  # scale 2 is the one GAN scale
    return m.eval()


def test_paths_rec_is_the_encoder_mean_and_prior_noise_is_the_gan_scales():
    real = torch.rand(3, 5, 14, 20) * 2 - 1
    quiet = qp.path_videos(_model(0.0), SHAPES, real, num=2, seed=0)
    assert set(quiet) == set(qp.PATHS)
    assert all(len(v) == 2 and v[0].shape == (3, 5, 14, 20) for v in quiet.values())
    m = _model(0.5)
    with torch.no_grad():
        mu, _ = m.encode(resize(real[None], SHAPES[0].thw))
        rec = m.synthesize(mu, SHAPES, noise=False)[0].clamp(-1, 1)
    loud = qp.path_videos(m, SHAPES, real, num=2, seed=0)
    assert torch.allclose(loud["rec"][0], rec, atol=1e-5) and torch.equal(loud["rec"][0], loud["rec"][1])
    # Without GAN noise the z_n-free prior path is the sample path; with it, it is not.
    assert all(torch.equal(a, b) for a, b in zip(quiet["prior"], quiet["prior_nonoise"]))
    assert not any(torch.allclose(a, b) for a, b in zip(loud["prior"], loud["prior_nonoise"]))
    # ... and the z_n-free path does not depend on the amplitude at all (same weights, same z).
    assert all(torch.equal(a, b) for a, b in zip(loud["prior_nonoise"], quiet["prior"]))
    assert not torch.allclose(loud["prior"][0], loud["prior"][1])  # distinct draws per video
    again = qp.path_videos(m, SHAPES, real, num=2, seed=0)
    assert all(torch.equal(a, b) for p in qp.PATHS for a, b in zip(loud[p], again[p]))  # seeded
