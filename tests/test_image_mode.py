"""Image mode (HP-VAE-GAN Sec. 4.2): HP-VAE-GAN and the SinGAN baseline trained on one image with
2D convolutions and a spatial-only pyramid; samples are single diverse frames made of the
image's patches, and the image applications (super-resolution, editing) work on them."""
from __future__ import annotations

import pytest
import torch

from hpgen import applications as apps
from hpgen.config import load_config
from hpgen.data import load_training_data
from hpgen.export import load_generator
from hpgen.sampling import load_model
from hpgen.trainer import train

from conftest import BUNDLED, REPO, nearest_patch_distance

TINY = ["pyramid.num_scales=3", "pyramid.min_height=12", "pyramid.max_height=24", "model.channels=8",
        "train.iters_per_scale=60", "train.checkpoint_every=0", "train.log_every=30", f'data.video="{BUNDLED}"']
PRESETS = {
    "hpvaegan": ("hpvaegan/image.toml", ["model.channels=16", "model.latent_channels=16", "train.vae_scales=2", "train.iters_per_scale=100"]),
    "singan": ("baselines/singan3d.toml", ["pyramid.image=true", "train.critic_steps=1", "train.generator_steps=1"]),
}


@pytest.fixture(scope="module", params=sorted(PRESETS))
def image_run(request, tmp_path_factory):
    preset, extra = PRESETS[request.param]
    cfg = load_config(REPO / "configs" / preset, TINY + extra)
    run = tmp_path_factory.mktemp(request.param) / "run"
    train(cfg, run, progress=False)
    payload = load_generator(run)
    method, model = load_model(payload, "cpu")
    return request.param, load_training_data(cfg), payload, method, model


@pytest.mark.slow
def test_image_samples_are_diverse_single_frames_of_input_patches(image_run):
    name, data, payload, method, model = image_run
    assert all(s.frames == 1 for s in data.shapes)
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert convs and all(isinstance(m, torch.nn.Conv2d) for m in convs)  # 2D networks only
    real = data.reals[-1][0]
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        samples = torch.stack([method.sample(model, payload["shapes"], 1, g)[0] for _ in range(4)])
    assert samples.shape == (4, *real.shape) and real.shape[1] == 1
    assert (samples.std(0).mean() / real.std()).item() > 0.05
    for s in samples:
        assert ((s - real).abs().mean() / real.std()).item() > 0.05
    noise = (real.mean(dim=(1, 2, 3), keepdim=True)
             + real.std(dim=(1, 2, 3), keepdim=True) * torch.randn(real.shape, generator=g)).clamp(-1, 1)
    base = nearest_patch_distance(noise, real, (1, 7, 7))
    for s in samples:
        assert nearest_patch_distance(s, real, (1, 7, 7)) < 0.5 * base


@pytest.mark.slow
def test_image_applications(image_run):
    name, data, payload, method, model = image_run
    real = data.reals[-1][:1]
    with torch.no_grad():
        sr = apps.super_resolve(model, real, 2, payload["config"]["pyramid"]["scale_factor"])
        assert sr.shape == (1, 3, 1, 2 * real.shape[3], 2 * real.shape[4])
        mask = torch.zeros(1, 1, 1, *real.shape[3:])
        mask[..., 4:10, 10:20] = 1
        out = apps.edit(model, payload["shapes"], real, mask, 1, feather=1)
    far = (apps.feather_mask(mask, 1) == 0).expand_as(real)
    torch.testing.assert_close(out[far], real[far], atol=1e-6, rtol=0)
