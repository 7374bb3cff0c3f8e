"""A run killed mid-scale and resumed ends with the same weights as an uninterrupted run.

Two interruptions: SIGTERM during a patch-VAE scale (the trainer checkpoints at the next
step and exits 3), then SIGKILL during a patch-GAN scale (nothing is saved at the kill;
the run resumes from its last periodic checkpoint)."""
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import BUNDLED, REPO, clean_env

ITERS = 40
TINY = [f'data.video="{BUNDLED}"', "data.max_clips=1", "pyramid.num_scales=3", "pyramid.min_height=12",
        "pyramid.max_height=20", "pyramid.scale_factor=1.3", "pyramid.rates=[1,2]", "model.channels=8",
        "model.latent_channels=8", "train.vae_scales=2", f"train.iters_per_scale={ITERS}",
        "train.checkpoint_every=4", "train.log_every=4", "train.keep_checkpoints=2",
        "train.critic_steps=2", "train.generator_steps=1", "train.seed=3"]


def _cmd(run_dir):
    return [sys.executable, "-m", "hpgen", "train", "--out", str(run_dir), "--no-progress", *TINY]


def _env():
    return clean_env(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _latest(run_dir):
    f = run_dir / "checkpoints" / "latest"
    try:
        return f.read_text().strip()
    except FileNotFoundError:
        return ""


def _run_until(run_dir, ready, sig):
    proc = subprocess.Popen(_cmd(run_dir), cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.time() + 300
    while proc.poll() is None and not ready(_latest(run_dir)):
        assert time.time() < deadline, "run never reached the interruption point"
        time.sleep(0.02)
    assert proc.poll() is None, "run finished before it could be interrupted:\n" + proc.stdout.read()
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


@pytest.mark.slow
def test_killed_and_resumed_run_matches_uninterrupted(tmp_path):
    ref = tmp_path / "ref"
    done = subprocess.run(_cmd(ref), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr

    run = tmp_path / "run"
    rc, out = _run_until(run, lambda tag: tag.startswith("scale00-"), signal.SIGTERM)
    assert rc == 3 and "SIGTERM received; checkpoint saved" in out, out
    tag = _latest(run)
    assert tag.startswith("scale00-") or tag.startswith("scale01-")

    def mid_gan(tag):
        return tag.startswith("scale02-") and not tag.endswith(f"{ITERS:07d}")

    rc, out = _run_until(run, mid_gan, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    assert mid_gan(_latest(run)) or _latest(run).startswith("scale02-"), _latest(run)
    assert not (run / "generator.pt").exists()

    final = subprocess.run(_cmd(run), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "resuming from" in final.stdout

    a = torch.load(ref / "generator.pt", weights_only=False)["state_dict"]
    b = torch.load(run / "generator.pt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    # Only the newest K checkpoints are kept, and no temporary directory is left behind.
    kept = [p.name for p in (run / "checkpoints").iterdir() if p.is_dir()]
    assert len(kept) == 2 and not any(n.startswith(".tmp") for n in kept)
