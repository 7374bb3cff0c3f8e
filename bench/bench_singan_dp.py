"""SinGAN-GIF data parallelism on this machine: the finest scale at D=1 vs D=2, time per
iteration and peak memory per rank, read from what the real trainer logs.

Runs ``launchers/train.py`` (torchrun for D=2) with the SinGAN-GIF demo preset on the
bundled clip (2 clips of 8 frames), one iteration at each coarse scale and ``--iters`` at
the finest (the 2D hybrid scale), and reads ``stats.jsonl``: the time between logged steps
of the finest scale (median) and every rank's ``peak_gib/rank<r>`` (peak RSS on CPU, CUDA
allocator peak on GPUs). Three runs:

    D1_k1   one rank, 1 clip per step
    D1_k2   one rank, 2 clips per step (the same global batch as D2_k1: the same run)
    D2_k1   two replicas, 1 clip each per step

On CPU each rank gets cpus // D threads (OMP_NUM_THREADS), so D=2 splits the same cores:
the ratio D2_k1 / D1_k2 says what data parallelism costs or saves at equal work, and
clips_per_s says the throughput.

    python bench/bench_singan_dp.py [--iters 8] [--out bench/results/singan_dp.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(out: Path, replicas: int, per_replica: int, args) -> dict:
    preset = REPO / "configs/singan_gif/demo.toml"
    scales = tomllib.loads(preset.read_text())["pyramid"]["num_scales"]  # the demo preset's
    iters = [1] * (scales - 1) + [args.iters]
    common = ["--config", str(preset), "--no-progress", "--out", str(out),
              "data.max_clips=2", f"data.clips_per_step={per_replica}", f"train.iters_per_scale={iters}",
              "train.log_every=1", "train.checkpoint_every=0", "train.eval_metrics=[]", "train.eval_samples=1",
              f"train.device={args.device}"]
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE",
                                                            "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(max(1, args.threads // replicas))
    env["PYTHONPATH"] = str(REPO)
    if replicas == 1:
        cmd = [sys.executable, "launchers/train.py", *common]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(replicas),
               "launchers/train.py", *common]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:])
    rows = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    fine = [r for r in rows if r["scale"] == scales - 1]
    steps = sorted(b["time"] - a["time"] for a, b in zip(fine, fine[1:]))
    per_iter = steps[len(steps) // 2]
    peaks = {k.split("rank")[1]: v for k, v in rows[-1].items() if k.startswith("peak_gib/rank")}
    clips = replicas * per_replica
    return {"replicas": replicas, "clips_per_replica": per_replica, "global_clips_per_step": clips,
            "threads_per_rank": int(env["OMP_NUM_THREADS"]), "finest_scale_seconds_per_iter": per_iter,
            "finest_scale_seconds_per_iter_all": steps, "clips_per_s": clips / per_iter, "peak_gib_per_rank": peaks,
            "loss_g_last": fine[-1]["loss_g"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=8, help="iterations at the finest scale")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="CPU threads shared by the ranks")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", default="D1_k1,D1_k2,D2_k1", help="which of D1_k1, D1_k2, D2_k1 to run")
    ap.add_argument("--out", default=str(REPO / "bench/results/singan_dp.json"))
    args = ap.parse_args(argv)
    plan = {"D1_k1": (1, 1), "D1_k2": (1, 2), "D2_k1": (2, 1)}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.runs.split(","):
            results[name] = run(Path(tmp) / name, *plan[name], args)
            print(name, json.dumps(results[name]), flush=True)
    two = results.get("D2_k1")
    summary = {}
    for ref, what in (("D1_k2", "same_global_batch"), ("D1_k1", "same_clips_per_rank")):
        if two and ref in results:
            one = results[ref]
            summary[f"time_per_iter_D2_vs_D1_{what}"] = (two["finest_scale_seconds_per_iter"]
                                                         / one["finest_scale_seconds_per_iter"])
            summary[f"clips_per_s_D2_vs_D1_{what}"] = two["clips_per_s"] / one["clips_per_s"]
            summary[f"peak_per_rank_D2_vs_D1_{what}"] = (max(two["peak_gib_per_rank"].values())
                                                         / one["peak_gib_per_rank"]["0"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "args": vars(args),
                                          "results": results, "summary": summary}, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
