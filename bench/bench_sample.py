"""Sampling one video, whole frame vs tiles: time and peak memory (HP-VAE-GAN).

    python bench/bench_sample.py --height 360 --frames 13 --tiles 0,128   # CPU, each in its own process
    python bench/bench_sample.py --device cuda --height 1080 --frames 32 --tiles 0,256

Builds the generator stack of ``--config`` (untrained weights: the cost does not depend on
them) over a pyramid whose finest scale is ``--frames`` x ``--height`` x 16:9, and times
``hpgen sample``'s call (``method.sample``, fp32 or ``--precision bf16``) with ``tile=0``
(whole frame) and with each tile size. Peak memory is the CUDA allocator's peak on a GPU
and the process's peak RSS on a CPU, where each configuration runs in a fresh process.
Writes JSON (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from hpgen.config import load_config  # noqa: E402
from hpgen.inference import resolve_device  # noqa: E402
from hpgen.methods import get_method  # noqa: E402
from hpgen.monitor import peak_memory_gib  # noqa: E402
from hpgen.pyramid import rescale_shapes, shapes_from_config  # noqa: E402


def measure(args, tile: int) -> dict:
    device = torch.device(resolve_device(args.device))
    cfg = load_config(args.config, args.overrides)
    method = get_method(cfg.train.method)(cfg)
    h, w = args.height, round(args.height * 16 / 9)
    shapes = rescale_shapes(shapes_from_config(cfg.pyramid, (h, w)), args.frames, h, w)
    model = method.model_from_args(method.model_args(), len(shapes)).to(device).eval()
    model.noise_amps.fill_(0.1)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    model.to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        method.sample(model, shapes[:2], batch=1, generator=g, stop=1)  # warm-up (kernels, allocator)
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        video = method.sample(model, shapes, batch=1, generator=g, tile=tile)
        sync()
    out = {"tile": tile, "seconds": time.perf_counter() - t0, "shape": list(video.shape), "precision": args.precision}
    out["peak_gpu_memory_gib" if device.type == "cuda" else "peak_rss_gib"] = peak_memory_gib(device)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs/hpvaegan/paper.toml"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--frames", type=int, default=13)
    ap.add_argument("--tiles", default="0,128", help="comma-separated tile sizes; 0 is the whole frame")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # child process: one tile size
    ap.add_argument("--out", default=str(REPO / "bench/results/sample.json"))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    if args.one is not None:
        Path(args.out).write_text(json.dumps(measure(args, args.one)))
        return 0
    results = []
    for tile in [int(t) for t in args.tiles.split(",")]:
        if resolve_device(args.device) == "cuda":
            r = measure(args, tile)
        else:  # a fresh process per configuration: peak RSS is then its own
            with tempfile.TemporaryDirectory() as tmp:
                f = Path(tmp) / "r.json"
                rest = [a for a in (argv if argv is not None else sys.argv[1:])]
                subprocess.run([sys.executable, __file__, *rest, "--one", str(tile), "--out", str(f)], check=True)
                r = json.loads(f.read_text())
        results.append(r)
        print(json.dumps(r), flush=True)
    base = results[0]
    mem = "peak_gpu_memory_gib" if "peak_gpu_memory_gib" in base else "peak_rss_gib"
    summary = {f"tile{r['tile']}_vs_tile{base['tile']}": {"time": r["seconds"] / base["seconds"],
                                                          "memory": r[mem] / base[mem]} for r in results[1:]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(),
                                          "args": {k: v for k, v in vars(args).items() if k != "one"},
                                          "results": results, "summary": summary}, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
