"""Activation checkpointing (``dist.checkpoint_min_voxels``) on the production training path:
``hpgen train`` through the patch-VAE scales and into the GAN scales, with every conv block
recomputed in backward, completes and gives the same run, bit for bit, as without it.

Bit-identical is the right bar: non-reentrant checkpointing keeps the autograd graph as it
is and only drops saved activations, recomputing them in backward with the same kernels,
inputs, shapes and thread count (and hpgen/engine/activation_checkpointing.py replays the
BatchNorm, spectral-norm and parametrisation-cache state of each block's forward), so every
gradient is accumulated in the same order from the same values. Any difference, even one
ulp, means the recomputation ran something other than the forward did.

These runs go through the method's own phases (hpgen/methods/*.py: the critic phase's
spectral-norm cache, real and fake scored in separate calls, the explicit or the autograd
penalty), which unit tests of ``losses.wgan_critic`` alone do not."""
import json

import pytest
import torch

from conftest import BUNDLED, REPO, run_hpgen

# HP-VAE-GAN: 2 patch-VAE scales, then 2 GAN scales (D^2 is new at scale 2 and continues at
# scale 3), 2 iterations each, 2 critic steps per iteration; a few seconds per run.
HPVAEGAN = ["--config", str(REPO / "configs/hpvaegan/tiny.toml"), "--video", str(BUNDLED), "data.max_clips=2",
            "pyramid.num_scales=4", "pyramid.min_height=12", "pyramid.max_height=20", "pyramid.scale_factor=1.3",
            "pyramid.rates=[1,2]", "model.channels=8", "model.latent_channels=8", "train.vae_scales=2",
            "train.iters_per_scale=[2,2,2,2]", "train.critic_steps=2", "train.generator_steps=1",
            "train.log_every=1", "train.checkpoint_every=0", "train.seed=3"]
# SinGAN-GIF (two separable 3D scales, then the 2D hybrid) and the SinGAN-3D baseline.
GIF = ["--config", str(REPO / "configs/singan_gif/demo.toml"), "--video", str(BUNDLED), "pyramid.num_scales=3",
       "pyramid.min_height=12", "pyramid.max_height=20", "pyramid.frames=4", "model.channels=8",
       "data.max_clips=2", "singan.conv3d_scales=2", "train.iters_per_scale=2", "train.log_every=1",
       "train.checkpoint_every=0", "train.eval_metrics=[]", "train.eval_samples=1"]
SINGAN3D = ["--config", str(REPO / "configs/baselines/singan3d.toml"), "--video", str(BUNDLED),
            "pyramid.num_scales=3", "pyramid.min_height=12", "pyramid.max_height=20", "pyramid.scale_factor=1.3",
            "pyramid.rates=[1,2]", "model.channels=8", "train.iters_per_scale=2", "train.critic_steps=2",
            "train.generator_steps=1", "train.log_every=1", "train.checkpoint_every=0", "train.eval_metrics=[]"]

CASES = {
    "hpvaegan-explicit": HPVAEGAN + ["train.gp_method=\"explicit\""],
    "hpvaegan-autograd": HPVAEGAN + ["train.gp_method=\"autograd\""],
    "singan_gif": GIF,
    "singan3d": SINGAN3D,
}


def _train(out, args):
    run_hpgen("train", "--out", str(out), "--no-progress", "--no-memory-check", *args, check=True, timeout=300,
              env={"OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)})
    stats = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    # Wall-clock and memory figures are the only things allowed to differ.
    stats = [{k: v for k, v in s.items() if not (k.startswith("peak_gib") or k.endswith("_per_s") or k == "time")}
             for s in stats]
    payload = torch.load(out / "generator.pt", weights_only=True, map_location="cpu")
    return stats, payload


def _tensors(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}[{i}]")


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_training_with_activation_checkpointing_is_bit_identical(tmp_path, case):
    args = CASES[case]
    ref_stats, ref = _train(tmp_path / "plain", args)
    ck_stats, ck = _train(tmp_path / "ckpt", args + ["dist.checkpoint_min_voxels=1"])
    if case.startswith("hpvaegan"):  # the GAN scales ran: their critic and generator phases logged
        assert any("loss_g" in s and "wdist" in s for s in ref_stats), ref_stats[-1]
    assert len(ref_stats) == len(ck_stats) and len(ref_stats) >= 6
    for a, b in zip(ref_stats, ck_stats):
        assert a == b, (a, b)
    ta, tb = dict(_tensors(ref)), dict(_tensors(ck))
    assert ta.keys() == tb.keys() and len(ta) > 10
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
