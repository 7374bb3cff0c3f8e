"""Scale-out: a 2-rank data-parallel run (deepspeed launcher, gloo on CPU) equals a 1-rank run
on the same clips; the export samples with no DeepSpeed; bf16 runs end to end; activation
checkpointing changes memory, not gradients."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from hpgen import engine as eng
from hpgen import losses
from hpgen.models import HPVAEGAN, PatchCritic
from hpgen.pyramid import ScaleShape

from conftest import BUNDLED, REPO, child_pids, clean_env, free_port, run_hpgen

# 6 iterations at each VAE scale, 2 at each GAN scale: a critic that learns (the per-position
# penalty norm) feeds rounding differences between rank layouts back into the generator, and
# GAN steps amplify them: one rank against two measured 6.3e-5 relative in the weights after
# 6 GAN iterations per scale, 3.4e-7 after 2 (the flat critic of the whole-clip norm hid this:
# 1.7e-7 after 6). Equality is what these tests check, not training.
TINY = ["--video", str(BUNDLED), "data.max_clips=2", "pyramid.num_scales=4", "pyramid.min_height=12",
        "pyramid.max_height=20", "pyramid.scale_factor=1.3", "pyramid.rates=[1,2]", "model.channels=8",
        "model.latent_channels=8", "train.vae_scales=2", "train.iters_per_scale=[6,6,2,2]", "train.checkpoint_every=0",
        "train.log_every=1", "train.critic_steps=2", "train.generator_steps=1", "train.seed=3"]


def _env():
    return clean_env(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", DS_ACCELERATOR="cpu")


def _stats(run):
    return [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def one_and_two_ranks(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp")
    one, two = root / "one", root / "two"
    p1 = subprocess.run([sys.executable, "launchers/train.py", "--out", str(one), "--no-progress", *TINY],
                        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert p1.returncode == 0, p1.stdout[-2000:] + p1.stderr[-2000:]
    deepspeed = [sys.executable, "-m", "deepspeed.launcher.runner"]
    p2 = subprocess.run([*deepspeed, "--num_gpus", "2", "--master_port", str(free_port()), "launchers/train.py",
                         "--out", str(two), "--no-progress", *TINY],
                        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert p2.returncode == 0, p2.stdout[-3000:] + p2.stderr[-3000:]
    assert "cpu x2" in p2.stdout
    return one, two


@pytest.mark.slow
@pytest.mark.dist
def test_two_rank_data_parallel_matches_one_rank(one_and_two_ranks):
    one, two = one_and_two_ranks
    a = torch.load(one / "generator.pt", weights_only=False)["state_dict"]
    b = torch.load(two / "generator.pt", weights_only=False)["state_dict"]
    params = [k for k in a if a[k].is_floating_point() and "running" not in k]
    diff = math.sqrt(sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in params))
    norm = math.sqrt(sum(float((a[k].double() ** 2).sum()) for k in params))
    assert diff / norm < 1e-5, diff / norm
    # And no single tensor drifts. BatchNorm biases get tiny gradients that Adam normalises,
    # so rounding shows there first (measured 4e-4 after two GAN scales; a prefix drawn per
    # rank instead of for the global batch puts the same tensor 0.12 off).
    for k in params:
        rel = float((a[k].double() - b[k].double()).norm() / (a[k].double().norm() + 1e-12))
        assert rel < 1e-3, (k, rel)
    sa, sb = _stats(one), _stats(two)
    assert [(r["scale"], r["step"]) for r in sa] == [(r["scale"], r["step"]) for r in sb]
    for ra, rb in zip(sa, sb):
        for key in ("kl", "rec0", "rec", "loss_vae", "loss_g"):
            if key in ra:
                assert abs(ra[key] - rb[key]) <= 1e-5 * abs(ra[key]), (ra["step"], key, ra[key], rb[key])
        # Critic means are small differences of O(0.1) patch scores (values ~1e-2): rounding of the
        # all-reduced gradients shows there first, so they are compared absolutely.
        for key in ("d_real", "d_fake"):
            if key in ra:
                assert abs(ra[key] - rb[key]) <= 1e-4, (ra["step"], key, ra[key], rb[key])


@pytest.mark.slow
@pytest.mark.dist
def test_sample_from_the_two_rank_export_without_deepspeed(one_and_two_ranks, tmp_path):
    _, two = one_and_two_ranks
    payload = torch.load(two / "generator.pt", weights_only=False)
    assert all(v.dtype != torch.bfloat16 for v in payload["state_dict"].values())
    proc = run_hpgen("sample", str(two), "--num", "2", "--out", str(tmp_path), check=True)
    assert "deepspeed" not in proc.stderr.lower()
    from hpgen.video import mp4_size, read_video

    a, b = (read_video(tmp_path / f"sample_{i:03d}.mp4") for i in range(2))
    fin = payload["shapes"][-1]
    assert a.shape == (fin["frames"], *mp4_size(fin["height"], fin["width"]), 3) and (a != b).any()


@pytest.mark.slow
def test_bf16_runs_end_to_end_with_finite_losses(tmp_path):
    run = tmp_path / "bf16"
    args = [a for a in TINY if a != "data.max_clips=2"] + ["data.max_clips=1", "dist.precision=bf16",
                                                           "dist.zero_stage=1"]
    run_hpgen("train", "--out", str(run), "--no-progress", *args, check=True, env={"OMP_NUM_THREADS": "1"})
    rows = _stats(run)
    assert rows and all(math.isfinite(v) for r in rows for k, v in r.items() if isinstance(v, float))
    assert {r["scale"] for r in rows} == {0, 1, 2, 3}
    run_hpgen("sample", str(run), "--num", "1", "--out", str(tmp_path / "s"), check=True)


def _torchrun(nproc, out, *extra, timeout=900):
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(nproc), "launchers/train.py", "--out", str(out), "--no-progress", *extra],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _assert_same_run(one, other, weights_rel=1e-5):
    a = torch.load(one / "generator.pt", weights_only=False)["state_dict"]
    b = torch.load(other / "generator.pt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys()
    params = [k for k in a if a[k].is_floating_point()]  # BatchNorm statistics included
    diff = math.sqrt(sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in params))
    norm = math.sqrt(sum(float((a[k].double() ** 2).sum()) for k in params))
    assert diff / norm < weights_rel, diff / norm
    sa, sb = _stats(one), _stats(other)
    assert [(r["scale"], r["step"]) for r in sa] == [(r["scale"], r["step"]) for r in sb]
    compared = set()
    for ra, rb in zip(sa, sb):
        for key in ("kl", "rec0", "rec", "loss_vae", "loss_g"):
            if key in ra and key in rb:
                compared.add(key)
                assert abs(ra[key] - rb[key]) <= 1e-5 * abs(ra[key]) + 1e-7, (ra["step"], key, ra[key], rb[key])
        for key in ("d_real", "d_fake", "adv"):  # critic means: compared absolutely (see above)
            if key in ra and key in rb:
                assert abs(ra[key] - rb[key]) <= 1e-4, (ra["step"], key, ra[key], rb[key])
    assert {"kl", "rec0", "rec", "loss_g"} <= compared


@pytest.fixture(scope="module")
def pipelined(tmp_path_factory):
    """P=2 with scale 0 on stage 0 and scales 1-3 on stage 1, so that the patch-VAE scale 1
    back-propagates from stage 1 into E and G^0 on stage 0, and the GAN scales take their
    prefix from stage 0; and P=2 x D=2 on four ranks."""
    root = tmp_path_factory.mktemp("pp")
    p2 = _torchrun(2, root / "p2", *TINY, "dist.pipeline_stages=2", "dist.stage_starts=[1]")
    assert "stage 0: scales 0-0" in p2.stdout and "stage 1: scales 1-3" in p2.stdout
    _torchrun(4, root / "p2d2", *TINY, "dist.pipeline_stages=2", "dist.stage_starts=[1]")
    return root


@pytest.mark.slow
@pytest.mark.dist
def test_two_stage_pipeline_matches_one_rank(one_and_two_ranks, pipelined):
    one, _ = one_and_two_ranks
    _assert_same_run(one, pipelined / "p2")


@pytest.mark.slow
@pytest.mark.dist
def test_pipeline_times_data_parallel_on_four_ranks_matches_one_rank(one_and_two_ranks, pipelined):
    one, _ = one_and_two_ranks
    _assert_same_run(one, pipelined / "p2d2")
    rows = _stats(pipelined / "p2d2")
    assert {f"peak_gib/rank{r}" for r in range(4)} <= set(rows[-1])  # every rank's peak memory is logged


@pytest.mark.slow
@pytest.mark.dist
def test_micro_batched_pipeline_with_balanced_placement_matches_one_rank(tmp_path):
    """Micro-batches are part of the recipe (BatchNorm statistics are per micro-batch): a
    one-rank run with the same micro-batches is the reference."""
    args = [*TINY, "dist.micro_batches=2", "train.eval_metrics=[]"]
    one = subprocess.run([sys.executable, "launchers/train.py", "--out", str(tmp_path / "one"), "--no-progress",
                          *args], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    p2 = _torchrun(2, tmp_path / "p2", *args, "dist.pipeline_stages=2")
    assert "stage 0: scales 0-2" in p2.stdout and "stage 1: scales 3-3" in p2.stdout  # balanced by cost
    _assert_same_run(tmp_path / "one", tmp_path / "p2")


@pytest.mark.slow
@pytest.mark.dist
def test_two_rank_pipeline_interrupted_by_sigusr1_resumes_to_the_same_weights(tmp_path):
    args = [*TINY, "dist.pipeline_stages=2", "dist.stage_starts=[1]", "train.iters_per_scale=24",
            "train.checkpoint_every=3", "train.log_every=3", "train.eval_metrics=[]"]
    _torchrun(2, tmp_path / "ref", *args)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "launchers/train.py", "--out", str(run), "--no-progress", *args]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    latest = run / "checkpoints" / "latest"
    deadline = time.time() + 600
    while proc.poll() is None and not (latest.exists() and latest.read_text().startswith("scale02-")):
        assert time.time() < deadline
        time.sleep(0.02)
    assert proc.poll() is None, proc.stdout.read()
    workers = child_pids(proc.pid)
    assert len(workers) == 2
    os.kill(max(workers), signal.SIGUSR1)  # one rank sees the pre-emption signal; all must stop together
    out, _ = proc.communicate(timeout=600)
    assert "SIGUSR1 received; checkpoint saved" in out or "stop request from another rank" in out, out[-3000:]
    assert not (run / "generator.pt").exists()
    tag = latest.read_text()
    assert tag.startswith("scale02-") and not tag.endswith("0000024"), tag
    # DeepSpeed client state: the meta, the resolved config and every rank's RNG state.
    states = torch.load(run / "checkpoints" / tag / "g" / "mp_rank_00_model_states.pt", weights_only=False)
    assert states["meta"]["scale"] == 2 and states["config"]["dist"]["pipeline_stages"] == 2
    assert len(states["rng"]) == 2 and all("torch" in r for r in states["rng"])
    _torchrun(2, run, *args)
    a = torch.load(tmp_path / "ref" / "generator.pt", weights_only=False)["state_dict"]
    b = torch.load(run / "generator.pt", weights_only=False)["state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"


# ---------------------------------------------------------------------------
# in-process pieces of the engine

@pytest.fixture(scope="module")
def group():
    eng.setup_distributed("cpu")


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def test_activation_checkpointing_gives_bit_identical_gradients(group):
    torch.manual_seed(0)
    model = HPVAEGAN(channels=8, latent_channels=8, vae_scales=3)
    model.grow()
    model.grow()
    shapes = [ScaleShape(3, 8, 10, 2), ScaleShape(3, 11, 13, 2), ScaleShape(5, 14, 17, 1)]
    x0, x2 = torch.randn(2, 3, 3, 8, 10), torch.randn(2, 3, 5, 14, 17)
    eps = torch.randn(2, 8, 3, 8, 10)
    critic = PatchCritic(3, channels=8)
    fake, gp_eps = torch.randn(2, 3, 5, 14, 17), torch.rand(2)

    def run(checkpointing):
        for net in (model, critic):
            net.zero_grad(set_to_none=True)
            eng.set_activation_checkpointing(net, checkpointing)
        bn_before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
        mu, logvar = model.encode(x0)
        out = model.synthesize(losses.reparameterize(mu, logvar, eps), shapes, noise=False)
        loss = losses.reconstruction(out, x2) + 0.1 * losses.kl_divergence(mu, logvar)
        loss.backward()
        d_loss, _ = losses.wgan_critic(critic, x2, fake, 0.1, gp_eps)  # GP: double backward
        d_loss.backward()
        buffers_after = {**{f"g.{k}": v.clone() for k, v in model.state_dict().items()},
                         **{f"d.{k}": v.clone() for k, v in critic.state_dict().items()}}
        return _grads(model), _grads(critic), bn_before, buffers_after

    start = ({k: v.clone() for k, v in model.state_dict().items()},
             {k: v.clone() for k, v in critic.state_dict().items()})
    g0, c0, b0, a0 = run(False)
    # Restore the buffers the first pass moved (BatchNorm statistics, spectral-norm u, v).
    model.load_state_dict(start[0])
    critic.load_state_dict(start[1])
    g1, c1, b1, a1 = run(True)
    assert g0.keys() == g1.keys() and len(g0) > 10
    for k in g0:
        assert torch.equal(g0[k], g1[k]), k
    for k in c0:
        assert torch.equal(c0[k], c1[k]), k
    # Recomputation must not move BatchNorm statistics or spectral-norm vectors a second time.
    assert any(k.endswith("running_mean") for k in a0) and any(k.endswith("_u") for k in a0)
    for k in a0:
        assert torch.equal(a0[k], a1[k]), k
    eng.set_activation_checkpointing(model, False)
    assert "forward" not in model.generators[0].body[0].__dict__


def test_all_reduce_batchnorm_equals_batchnorm_on_one_rank(group):
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3, padding=1, bias=False), torch.nn.BatchNorm3d(4))
    ours = eng.sync_batchnorm(torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3, padding=1, bias=False),
                                                  torch.nn.BatchNorm3d(4)))
    ours.load_state_dict(ref.state_dict())
    assert isinstance(ours[1], eng.AllReduceBatchNorm)
    x = torch.randn(2, 3, 4, 6, 6)
    ya, yb = ref(x), ours(x)
    assert torch.allclose(ya, yb, atol=1e-5)
    w = torch.randn_like(ya)  # not y^2: normalised outputs make that loss constant
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    for (n, p), (_, q) in zip(ref.named_parameters(), ours.named_parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-5), n
    for k in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.allclose(ref[1].state_dict()[k].float(), ours[1].state_dict()[k].float(), atol=1e-6), k
    ref.eval(), ours.eval()
    assert torch.allclose(ref(x), ours(x), atol=1e-5)
