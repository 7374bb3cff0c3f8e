"""Pipeline stages on this machine: peak memory per rank and time per iteration, P=1 vs P=2.

Runs the real trainer (``launchers/train.py``; torchrun for P=2) on a small HP-VAE-GAN
pyramid for a few iterations per scale and reads what the trainer logs: every rank's
peak memory (``peak_gib/rank<r>``: CUDA allocator peak on GPUs, peak RSS on CPUs) and the
time between logged steps. With P=2 the finest scale (about half the cost) sits alone on
stage 1, so that rank carries the fine-scale activations and stage 0 only the coarse ones.

    python bench/bench_pipeline.py [--height 96] [--iters 6] [--out bench/results/pipeline.json]

On CPU each rank gets half the cores (OMP_NUM_THREADS), so compare memory across
configurations and time only within a configuration: progressive training trains one scale
at a time, and P > 1 buys memory headroom and prefix overlap, not P-fold speed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(out: Path, stages: int, micro: int, args) -> dict:
    common = ["--video", str(REPO / "hpgen/assets/bikes.mp4"), "--no-progress", "--out", str(out),
              "data.max_clips=2", "pyramid.num_scales=5", "pyramid.min_height=24", f"pyramid.max_height={args.height}",
              "pyramid.rates=[1,2]", "model.channels=32", "model.latent_channels=16", "train.vae_scales=2",
              f"train.iters_per_scale={args.iters}", "train.log_every=1", "train.checkpoint_every=0",
              "train.critic_steps=1", "train.generator_steps=1", "train.eval_metrics=[]", "train.eval_samples=1",
              f"train.device={args.device}", f"dist.pipeline_stages={stages}", f"dist.micro_batches={micro}"]
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE",
                                                            "LOCAL_RANK")}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // stages)))
    if stages == 1:
        cmd = [sys.executable, "launchers/train.py", *common]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(stages),
               "launchers/train.py", *common]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:])
    rows = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    finest = max(r["scale"] for r in rows)
    fine = [r for r in rows if r["scale"] == finest]
    steps = [b["time"] - a["time"] for a, b in zip(fine, fine[1:])]
    peaks = {k.split("rank")[1]: v for k, v in rows[-1].items() if k.startswith("peak_gib/rank")}
    placement = next((line for line in proc.stdout.splitlines() if "pipeline stages" in line), "one stage")
    return {"pipeline_stages": stages, "micro_batches": micro, "placement": placement,
            "finest_scale_seconds_per_iter": sorted(steps)[len(steps) // 2] if steps else None,
            "peak_gib_per_rank": peaks}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--height", type=int, default=96, help="finest frame height")
    ap.add_argument("--iters", type=int, default=6, help="iterations per scale")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(REPO / "bench/results/pipeline.json"))
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for stages, micro in ((1, 1), (2, 1), (2, 2)):
            r = run(Path(tmp) / f"p{stages}m{micro}", stages, micro, args)
            results.append(r)
            print(json.dumps(r), flush=True)
    base = results[0]["peak_gib_per_rank"]["0"]
    summary = {f"P{r['pipeline_stages']}_M{r['micro_batches']}_rank{k}_peak_vs_P1": v / base
               for r in results[1:] for k, v in r["peak_gib_per_rank"].items()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "args": vars(args),
                                          "results": results, "summary": summary}, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
