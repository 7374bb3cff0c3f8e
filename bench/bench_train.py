"""Training-iteration benchmark: time and peak memory of one iteration per scale.

    python bench/bench_train.py                                   # paper preset, every scale, this device
    python bench/bench_train.py --scales finest --precision fp32,bf16 --checkpointing off,on
    python bench/bench_train.py --scales finest --height 1080 --frames 32 --synthetic
    python bench/bench_train.py --scales finest --height 1080 --frames 32 --synthetic --precision bf16 \
        --checkpointing on --sample train.crop_height=256 train.crop_width=256   # full HD on crops
    python bench/bench_train.py --fit                              # GPU: largest finest scale that fits

It runs exactly the trainer's iteration (``hpgen.trainer.run_iteration``: the method's
phases on DeepSpeed engines) on the scale's networks, after ``--warmup`` untimed
iterations. Peak memory is the CUDA allocator's peak on a GPU and the sampled resident
set size above the pre-scale baseline on a CPU. Achieved TFLOP/s comes from counting the
iteration's FLOPs with ``torch.utils.flop_counter``. Scales whose predicted time exceeds
``--max-seconds`` are not run; their time is *projected* from the measured scales in
proportion to voxels and is marked so. Results go to JSON (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from hpgen import engine as eng  # noqa: E402
from hpgen.config import load_config  # noqa: E402
from hpgen.inference import resolve_device  # noqa: E402
from hpgen.methods import get_method  # noqa: E402
from hpgen.methods.base import ScaleState  # noqa: E402
from hpgen.pyramid import ScaleShape, rescale_shapes, shapes_from_config  # noqa: E402
from hpgen.trainer import run_iteration  # noqa: E402


class RssPeak:
    """Peak resident set size of this process, sampled every 5 ms in a thread."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.base = self._rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.005)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())


class ConvFlops:
    """FLOPs (torch's per-op formulas: convolutions, matmuls, ...) run inside the context.

    torch's FlopCounterMode also tracks modules, with multi-grad hooks that break the
    gradient penalty's autograd.grad; this dispatch mode only counts."""

    def __init__(self):
        self.total = 0

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        outer = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                count = flop_registry.get(func._overloadpacket)
                if count is not None:
                    outer.total += count(*args, **kwargs, out_val=out)
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)


def synthetic_reals(shapes, clips: int, device) -> list[torch.Tensor]:
    """Smooth moving patterns in [-1, 1] at every scale (content does not change the cost)."""
    out = []
    for s in shapes:
        t = torch.linspace(0, 1, s.frames, device=device).view(1, 1, -1, 1, 1)
        h = torch.linspace(0, 6.28, s.height, device=device).view(1, 1, 1, -1, 1)
        w = torch.linspace(0, 6.28, s.width, device=device).view(1, 1, 1, 1, -1)
        phase = torch.arange(3, device=device).view(1, 3, 1, 1, 1).float()
        v = torch.sin(3 * h + 2 * w + 4 * t + phase) * 0.8
        out.append(v.expand(clips, 3, s.frames, s.height, s.width).contiguous())
    return out


def real_reals(cfg, device) -> tuple[list, list[torch.Tensor]]:
    from hpgen.data import load_training_data

    data = load_training_data(cfg)
    return data.shapes, [r.to(device) for r in data.reals]


def bench_scale(method, cfg, shapes, reals, n: int, *, precision: str, checkpointing: bool, iters: int,
                warmup: int, device, count_flops: bool, sample: bool = False, profile: bool = False,
                cpu_conv: str = "hpgen") -> dict:
    dev = torch.device(device)
    rss = RssPeak().__enter__()  # baseline before the scale's networks exist: they, their
    # optimiser states and the activations all count
    model = method.build_model().to(dev)
    critic = None
    for k in range(n + 1):
        critic = method.grow(model, critic, k)
    if critic is not None:
        critic.to(dev)
    for net in [model] + ([critic] if critic is not None else []):
        eng.set_activation_checkpointing(net, checkpointing)
        eng.set_channels_last(net, cfg.dist.channels_last)
        # As the trainer does on a CPU (hpgen/engine/cpu_conv.py), or a baseline without it:
        # "permute" leaves out the frames path of the smallest inputs, "pytorch" everything.
        eng.set_cpu_conv3d_layout(net, dev.type == "cpu" and cpu_conv != "pytorch", frames=cpu_conv == "hpgen")
    groups = method.param_groups(model, critic, n)
    engines = {name: eng.build_engine(critic if name == "d" else model, g, precision=precision,
                                      zero_stage=cfg.dist.zero_stage, betas=cfg.train.betas,
                                              grad_clip=cfg.train.grad_clip)
               for name, g in groups.items()}
    dtype = eng.param_dtype(model)
    st = ScaleState(n, list(shapes), [r.to(dtype) for r in reals])
    method.begin_scale(model, st)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        run_iteration(method, model, critic, st, engines)
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(iters):
        stats = run_iteration(method, model, critic, st, engines)
    sync()
    dt = (time.perf_counter() - t0) / iters
    rss.__exit__(None, None, None)
    flops = None
    if count_flops:
        with ConvFlops() as fc:
            run_iteration(method, model, critic, st, engines)
        sync()
        flops = fc.total
    s = shapes[n]
    gan = critic is not None  # a patch-VAE scale trains no critic (SinGAN's scales all do)
    crop = [cfg.train.crop_height, cfg.train.crop_width] if gan and (
        cfg.train.crop_height or cfg.train.crop_width) else None
    out = {
        "scale": n, "kind": "gan" if gan else "vae", "crop": crop,
        "frames": s.frames, "height": s.height,
        "width": s.width, "clips": reals[0].shape[0], "voxels_per_clip": s.voxels, "precision": precision,
        "activation_checkpointing": checkpointing, "channels_last": cfg.dist.channels_last, "cpu_conv": cpu_conv,
        "seconds_per_iter": dt, "measured": True,
        "finite": all(torch.isfinite(v).all().item() for v in stats.values()),
    }
    if dev.type == "cuda":
        out["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        out["peak_rss_above_baseline_gib"] = (rss.peak - rss.base) / 2**30
        out["peak_rss_gib"] = rss.peak / 2**30
    if flops is not None:
        out["flops_per_iter"] = flops
        out["tflops_per_s"] = flops / dt / 1e12
    if profile:  # where one iteration's time goes: the top operators by self device (or CPU) time
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with torch_profile(activities=acts) as prof:
            run_iteration(method, model, critic, st, engines)
            sync()
        key = "self_device_time_total" if dev.type == "cuda" else "self_cpu_time_total"
        ops = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)[:25]
        out["profile_top_ops"] = [{"op": e.key, "self_ms": getattr(e, key) / 1e3, "calls": e.count} for e in ops]
    if sample:  # one full-frame sample through G^0..G^n (what `hpgen sample` does), after training on crops
        del engines
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        model.eval()
        with torch.no_grad():
            t0 = time.perf_counter()
            video = method.sample(model, shapes, batch=1, stop=n)
            sync()
        out["full_frame_sample_seconds"] = time.perf_counter() - t0
        out["full_frame_sample_shape"] = list(video.shape)
        if dev.type == "cuda":
            out["full_frame_sample_peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        engines = None
    del engines, model, critic, st
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return out


def run_isolated(argv: list[str], n: int, precision: str, checkpointing: bool) -> dict:
    """One configuration in a fresh process: its peak RSS is then its own (a process never
    gives freed memory back to the OS, so sequential CPU measurements would mix)."""
    import subprocess
    import tempfile

    drop = {"--scales", "--precision", "--checkpointing", "--out"}
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in drop:
            skip = True
            continue
        if a == "--isolate" or any(a.startswith(d + "=") for d in drop):
            continue
        rest.append(a)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        # The child starts its own process group: drop the variables ours exported.
        env = {k: v for k, v in os.environ.items()
               if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
        subprocess.run([sys.executable, __file__, *rest, "--scales", str(n), "--precision", precision,
                        "--checkpointing", "on" if checkpointing else "off", "--out", str(out)], check=True,
                       stdout=subprocess.DEVNULL, env=env)
        return json.loads(out.read_text())["results"][0]


def fits(method, cfg, shapes, n, clips, device, precision, checkpointing) -> tuple[bool, str]:
    try:
        reals = synthetic_reals(shapes, clips, device)
        r = bench_scale(method, cfg, shapes, reals, n, precision=precision, checkpointing=checkpointing, iters=1,
                        warmup=0, device=device, count_flops=False)
        return True, f"{r['seconds_per_iter']:.2f} s/iter, {r.get('peak_gpu_memory_gib', 0):.1f} GiB"
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return False, "out of memory"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs/hpvaegan/paper.toml"))
    ap.add_argument("--video", default=str(REPO / "hpgen/assets/bikes.mp4"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--scales", default="all", help="all | finest | comma-separated scale indices")
    ap.add_argument("--precision", default="fp32", help="comma-separated: fp32,bf16")
    ap.add_argument("--checkpointing", default="off", help="comma-separated: off,on")
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--clips", type=int, default=1, help="clips per iteration (the multi-sample loss)")
    ap.add_argument("--synthetic", action="store_true", help="synthetic video at --height/--frames instead of --video")
    ap.add_argument("--height", type=int, help="finest frame height (width keeps the input's aspect ratio)")
    ap.add_argument("--width", type=int)
    ap.add_argument("--frames", type=int, help="finest frame count")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="skip (and project) scales predicted slower")
    ap.add_argument("--flops", action="store_true", help="count FLOPs for achieved TFLOP/s (one more iteration)")
    ap.add_argument("--profile", action="store_true", help="record the top operators of one iteration (torch.profiler)")
    ap.add_argument("--sample", action="store_true",
                    help="also time one full-frame sample at the scale (e.g. after training on train.crop_* crops)")
    ap.add_argument("--fit", action="store_true", help="GPU: try finest-scale sizes (--fit-sizes) and report which fit")
    ap.add_argument("--fit-sizes", default="256x13,512x13,720x13,1080x13,1080x32",
                    help="comma-separated HEIGHTxFRAMES (16:9 frames) for --fit")
    ap.add_argument("--iters-per-scale", type=int, default=None,
                    help="for the projected run time (default: the preset's train.iters_per_scale)")
    ap.add_argument("--isolate", action="store_true",
                    help="run each configuration in its own process (clean per-configuration peak RSS on CPU)")
    ap.add_argument("--cpu-conv", default="hpgen",
                    help="comma-separated CPU Conv3d paths (hpgen/engine/cpu_conv.py): hpgen (the trainer's), "
                         "permute (no frames path), pytorch (none); the first is the ratios' baseline")
    ap.add_argument("--out", default=None)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    eng.setup_distributed(device)
    cfg = load_config(args.config, [f'data.video="{args.video}"', f"data.max_clips={args.clips}", *args.overrides])
    method = get_method(cfg.train.method)(cfg)
    if args.synthetic or args.height or args.frames:
        h = args.height or 256
        w = args.width or round(h * 16 / 9)
        base = shapes_from_config(cfg.pyramid, (h, w))
        shapes = rescale_shapes(base, args.frames, h, w) if args.frames else base
        reals = synthetic_reals(shapes, args.clips, device)
        source = f"synthetic {h}x{w}"
    else:
        shapes, reals = real_reals(cfg, device)
        source = args.video
    n_all = list(range(len(shapes)))
    scales = n_all if args.scales == "all" else [n_all[-1]] if args.scales == "finest" else \
        [int(x) for x in args.scales.split(",")]
    precisions = args.precision.split(",")
    ckpts = [c == "on" for c in args.checkpointing.split(",")]
    convs = args.cpu_conv.split(",")
    if any(c not in ("hpgen", "permute", "pytorch") for c in convs):
        ap.error(f"--cpu-conv: choose from hpgen, permute, pytorch (got {args.cpu_conv})")
    if args.isolate and len(convs) > 1:
        ap.error("--isolate takes one --cpu-conv at a time")

    results = []
    for n in scales:
        for prec in precisions:
            for ck in ckpts:
                measured = [r for r in results if r["measured"] and r["precision"] == prec
                            and r["activation_checkpointing"] == ck and r.get("cpu_conv", convs[0]) == convs[0]]
                if measured:  # predict from the largest measured scale, linear in voxels
                    ref = max(measured, key=lambda r: r["voxels_per_clip"])
                    pred = ref["seconds_per_iter"] * shapes[n].voxels / ref["voxels_per_clip"]
                    if pred > args.max_seconds:
                        results.append({"scale": n, "precision": prec, "activation_checkpointing": ck,
                                        "frames": shapes[n].frames, "height": shapes[n].height,
                                        "width": shapes[n].width, "voxels_per_clip": shapes[n].voxels,
                                        "seconds_per_iter": pred, "measured": False,
                                        "projected_from_scale": ref["scale"]})
                        print(f"scale {n} {prec} ckpt={ck}: projected {pred:.1f} s/iter (not run)", flush=True)
                        continue
                if args.isolate:
                    r = run_isolated(argv if argv is not None else sys.argv[1:], n, prec, ck)
                    results.append(r)
                    continue
                for cc in convs:
                    r = bench_scale(method, cfg, shapes, reals, n, precision=prec, checkpointing=ck,
                                    iters=args.iters, warmup=args.warmup, device=device, count_flops=args.flops,
                                    sample=args.sample, profile=args.profile, cpu_conv=cc)
                    results.append(r)
                    mem = r.get("peak_gpu_memory_gib", r.get("peak_rss_above_baseline_gib"))
                    extra = f", {r['tflops_per_s']:.1f} TFLOP/s" if "tflops_per_s" in r else ""
                    conv = f" cpu_conv={cc}" if len(convs) > 1 else ""
                    print(f"scale {n} ({r['frames']}x{r['height']}x{r['width']}) {prec} ckpt={ck}{conv}: "
                          f"{r['seconds_per_iter']:.3f} s/iter, peak {mem:.2f} GiB{extra}", flush=True)

    # Steps of each scale: the preset's (one number or one per scale), or --iters-per-scale for all.
    steps = {n: args.iters_per_scale or cfg.train.iters(n) for n in n_all}
    summary = {}
    for prec in precisions:
        for ck in ckpts:
            for cc in convs:
                rows = [r for r in results if r["precision"] == prec and r["activation_checkpointing"] == ck
                        and r.get("cpu_conv", cc) == cc]
                conv = f"_{cc}" if len(convs) > 1 else ""
                if scales == n_all and rows:
                    summary[f"{prec}_ckpt{'on' if ck else 'off'}{conv}_projected_run_hours"] = \
                        sum(r["seconds_per_iter"] * steps[r["scale"]] for r in rows) / 3600
    # Ratios between configurations measured in this same run (CPU figures are reported so).
    for n in scales:
        for r in results:  # each CPU Conv3d path against the first one, same precision and checkpointing
            if r["scale"] == n and r["measured"] and r.get("cpu_conv", convs[0]) != convs[0]:
                base = next(b for b in results if b["scale"] == n and b["measured"] and b["cpu_conv"] == convs[0]
                            and b["precision"] == r["precision"]
                            and b["activation_checkpointing"] == r["activation_checkpointing"])
                tag = f"scale{n}_{r['precision']}_ckpt{'on' if r['activation_checkpointing'] else 'off'}"
                summary[f"{tag}_cpu_conv_{r['cpu_conv']}_vs_{convs[0]}_time_ratio"] = \
                    r["seconds_per_iter"] / base["seconds_per_iter"]
        by = {(r["precision"], r["activation_checkpointing"]): r for r in results if r["scale"] == n and r["measured"]
              and r.get("cpu_conv", convs[0]) == convs[0]}
        base = by.get(("fp32", False))
        if base is None:
            continue
        for key, r in by.items():
            if key == ("fp32", False):
                continue
            tag = f"scale{n}_{key[0]}_ckpt{'on' if key[1] else 'off'}_vs_fp32"
            summary[tag + "_time_ratio"] = r["seconds_per_iter"] / base["seconds_per_iter"]
            mk = "peak_gpu_memory_gib" if "peak_gpu_memory_gib" in r else "peak_rss_above_baseline_gib"
            if base.get(mk):
                summary[tag + "_memory_ratio"] = r[mk] / base[mk]
    fit = None
    if args.fit:
        if device != "cuda":
            print("--fit needs a GPU; skipped", file=sys.stderr)
        else:
            fit = []
            for h, t in [tuple(int(v) for v in item.split("x")) for item in args.fit_sizes.split(",")]:
                base = shapes_from_config(cfg.pyramid, (h, round(h * 16 / 9)))
                base = [ScaleShape(s.frames, s.height, s.width, s.rate) for s in base]
                sh = rescale_shapes(base, t, h, round(h * 16 / 9))
                for ck in [c == "on" for c in args.checkpointing.split(",")]:
                    ok, note = fits(method, cfg, sh, len(sh) - 1, 1, device, "bf16", ck)
                    fit.append({"height": h, "width": round(h * 16 / 9), "frames": t, "precision": "bf16",
                                "activation_checkpointing": ck, "fits": ok, "note": note})
                    print(f"fit {t}x{h}x{round(h * 16 / 9)} bf16 ckpt={ck}: {ok} ({note})", flush=True)
    report = {
        "benchmark": "train_iteration", "config": args.config, "source": source, "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(), "torch": torch.__version__, "iters": args.iters, "warmup": args.warmup,
        "iters_per_scale": [steps[n] for n in n_all], "results": results, "summary": summary, "fit": fit,
    }
    out = Path(args.out or REPO / "bench" / "results" / f"train_{device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
