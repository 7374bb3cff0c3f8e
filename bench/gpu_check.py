"""Everything a GPU session should measure, in one call of under 5 minutes; writes JSON.

    python bench/gpu_check.py                 # on a GPU: bench/results/gpu_check.json
    python bench/gpu_check.py --smoke         # CPU smoke test at toy sizes (tiny.toml), seconds

Parts (``--parts``, comma-separated; all by default):
  conv       a 64-channel 3x3x3 Conv3d at 13x144x256: forward, dgrad (input gradient) and
             wgrad (weight gradient), fp32 and bf16, contiguous and channels-last-3d layouts
  critic     one critic phase (D(real), D(fake), penalty, backward) of the 64-channel,
             7-block patch critic at 13x144x256, with autograd's penalty and the explicit one
  train      one iteration per scale of each --configs preset (the trainer's run_iteration on
             DeepSpeed engines, bench/bench_train.py), with achieved TFLOP/s, and the run's
             projected hours from the measured s/iter
  patchnn    bench/bench_patchnn.py (144x256x13 and 1080x1920x13 generation; GPU only)

Times are CUDA-synchronised medians of ``--repeats`` after a warm-up. ``--smoke`` shrinks every
size so that the script is known to run end to end without a GPU.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import torch  # noqa: E402
from torch.nn.utils import parametrize  # noqa: E402

from hpgen import engine as eng  # noqa: E402
from hpgen import losses  # noqa: E402
from hpgen.config import load_config  # noqa: E402
from hpgen.models import PatchCritic  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def timer(fn, device, repeats: int) -> float:
    """Median seconds of fn() over ``repeats`` runs after one warm-up, device-synchronised."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def conv_part(device, thw, channels, repeats) -> list[dict]:
    out = []
    t, h, w = thw
    flops = 2 * channels * channels * 27 * t * h * w  # each of fwd, dgrad, wgrad
    for prec, dtype in DTYPES.items():
        for layout in ("contiguous", "channels_last_3d"):
            fmt = torch.channels_last_3d if layout == "channels_last_3d" else torch.contiguous_format
            conv = torch.nn.Conv3d(channels, channels, 3, padding=1).to(device, dtype).to(memory_format=fmt)
            x = torch.randn(1, channels, t, h, w, device=device, dtype=dtype).to(memory_format=fmt)
            xg = x.clone().requires_grad_(True)
            y = conv(xg)
            gy = torch.randn_like(y)
            row = {"precision": prec, "layout": layout, "shape": [1, channels, t, h, w]}
            for name, fn in (("fwd", lambda: conv(x)),
                             ("dgrad", lambda: torch.autograd.grad(y, xg, gy, retain_graph=True)),
                             ("wgrad", lambda: torch.autograd.grad(y, conv.weight, gy, retain_graph=True))):
                s = timer(fn, device, repeats)
                row[f"{name}_ms"] = s * 1e3
                row[f"{name}_tflops"] = flops / s / 1e12
            out.append(row)
            print(f"conv {prec} {layout}: " + ", ".join(f"{k} {row[k + '_ms']:.2f} ms ({row[k + '_tflops']:.1f} TFLOP/s)"
                                                         for k in ("fwd", "dgrad", "wgrad")), flush=True)
    return out


def critic_part(device, thw, channels, blocks, repeats) -> list[dict]:
    out = []
    for prec, dtype in DTYPES.items():
        torch.manual_seed(0)
        critic = PatchCritic(3, channels, blocks, 3, 3).to(device, dtype).train()
        real, fake = (torch.rand(2, 1, 3, *thw, device=device) * 2 - 1).to(dtype)
        row = {"precision": prec, "shape": [1, 3, *thw], "channels": channels, "blocks": blocks}
        for method in ("autograd", "explicit"):
            def phase():
                critic.zero_grad(set_to_none=True)
                with parametrize.cached():
                    loss, _ = losses.wgan_critic(critic, real, fake, 0.1, gp_norm="voxel",
                                                 input_grad=critic.input_gradient if method == "explicit" else None,
                                                 joint=method == "explicit")
                    loss.backward()
            row[f"{method}_ms"] = timer(phase, device, repeats) * 1e3
        row["speedup"] = row["autograd_ms"] / row["explicit_ms"]
        out.append(row)
        print(f"critic phase {prec}: autograd GP {row['autograd_ms']:.1f} ms, explicit GP {row['explicit_ms']:.1f} ms "
              f"({row['speedup']:.2f}x)", flush=True)
    return out


def train_part(device: str, configs: list[str], overrides: list[str], iters: int) -> list[dict]:
    import bench_train as bt
    from hpgen.data import plan
    from hpgen.methods import get_method

    out = []
    for path in configs:
        cfg = load_config(path, overrides)
        method = get_method(cfg.train.method)(cfg)
        _, shapes, _ = plan(cfg)
        reals = bt.synthetic_reals(shapes, 1, device)
        rows = []
        t_cfg = time.perf_counter()
        for n in range(len(shapes)):
            r = bt.bench_scale(method, cfg, shapes, reals, n, precision=cfg.dist.precision, checkpointing=False,
                               iters=iters, warmup=1, device=device, count_flops=True)
            r["iters_per_scale"] = cfg.train.iters(n)
            rows.append(r)
            print(f"{Path(path).name} scale {n} {shapes[n].thw} {cfg.dist.precision}: {r['seconds_per_iter'] * 1e3:.1f} "
                  f"ms/iter, {r.get('tflops_per_s', 0):.1f} TFLOP/s", flush=True)
        hours = sum(r["seconds_per_iter"] * r["iters_per_scale"] for r in rows) / 3600
        out.append({"config": path, "overrides": overrides, "precision": cfg.dist.precision, "scales": rows,
                    "projected_run_hours": hours, "measure_seconds": time.perf_counter() - t_cfg})
        print(f"{Path(path).name}: projected {hours:.2f} h for the whole run", flush=True)
    return out


def patchnn_part(device: str, out_dir: Path) -> dict:
    out = out_dir / "gpu_check_patchnn.json"
    cmd = [sys.executable, str(REPO / "bench" / "bench_patchnn.py"), "--device", device, "--out", str(out),
           "--no-breakdown"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(out.read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="toy sizes on any device (CPU check that it all runs)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--parts", default="conv,critic,train,patchnn")
    ap.add_argument("--configs", default=None,
                    help="comma-separated presets for 'train' (default: paper.toml,hd.toml; --smoke: tiny.toml)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None, help="timed iterations per scale (default 3; --smoke 1)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "gpu_check.json"))
    ap.add_argument("overrides", nargs="*", help="section.key=value for the 'train' presets")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else \
        ("cpu" if args.device == "auto" else args.device)
    dev = torch.device(device)
    eng.setup_distributed(device)
    if device == "cpu":
        torch.set_num_threads(1)
    smoke = args.smoke
    thw = (3, 16, 24) if smoke else (13, 144, 256)
    channels = 8 if smoke else 64
    repeats = args.repeats or (1 if smoke else 5)
    configs = (args.configs or ("configs/hpvaegan/tiny.toml" if smoke else
                                "configs/hpvaegan/paper.toml,configs/hpvaegan/hd.toml")).split(",")
    configs = [str(REPO / c) if not Path(c).is_absolute() else c for c in configs]
    overrides = list(args.overrides) + (["model.channels=4", "model.latent_channels=4"] if smoke else [])
    parts = args.parts.split(",")
    report = {"benchmark": "gpu_check", "device": device,
              "device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "cuda": torch.version.cuda, "smoke": smoke,
              "cudnn_benchmark": torch.backends.cudnn.benchmark,
              "tf32": torch.backends.cuda.matmul.allow_tf32 if device == "cuda" else None}
    print(f"gpu_check on {report['device_name']} ({device})", flush=True)
    if "conv" in parts:
        report["conv"] = conv_part(dev, thw, channels, repeats)
    if "critic" in parts:
        report["critic"] = critic_part(dev, thw, channels, 3 if smoke else 7, repeats)
    if "train" in parts:
        report["train"] = train_part(device, configs, overrides, args.iters or (1 if smoke else 3))
    if "patchnn" in parts:
        report["patchnn"] = patchnn_part(device, Path(args.out).parent) if device == "cuda" else \
            {"skipped": "GPU only (the CPU figures are bench/bench_patchnn.py's own)"}
    report["wall_seconds"] = time.perf_counter() - t_start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wall {report['wall_seconds']:.1f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
