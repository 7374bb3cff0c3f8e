"""Per-iteration time of SinGAN-GIF's generators at equal resolution (Sec. 3.3): dense 3D,
channel-wise separable 3D, and the 2D frame+neighbour ("hybrid") generator.

One iteration = forward of G on up(x)+z, a loss, and backward (what a generator phase does,
without the critics, which are the same for every generator kind). The paper reports the
hybrid about 20% faster than its 3D generator. Writes JSON to bench/results/singan_gif.json.

    python bench/bench_singan_gif.py [--device cpu|cuda] [--frames 8 --height 64 --width 64]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hpgen.models.singan import SinGANStack  # noqa: E402


def time_kind(kind: str, args, device) -> dict:
    stack = SinGANStack(channels=args.channels, num_blocks=5, kernel=3, dims=3, separable=kind == "sep3d",
                        conv3d_scales=-1 if kind != "hybrid" else 0, neighbours=1)
    gen = stack._new_generator(kind).to(device).train()
    x = torch.randn(1, 3, args.frames, args.height, args.width, device=device)
    opt = torch.optim.Adam(gen.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        y = x + gen(x)
        y.square().mean().backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"params": sum(p.numel() for p in gen.parameters()), "median_s": times[len(times) // 2],
            "min_s": times[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "singan_gif.json"))
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench: --device cuda but no GPU", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    torch.manual_seed(0)
    res = {k: time_kind(k, args, device) for k in ("3d", "sep3d", "hybrid")}
    out = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "shape_TxHxW": [args.frames, args.height, args.width], "channels": args.channels, "iters": args.iters,
        "generators": res,
        "hybrid_vs_sep3d_time_ratio": res["hybrid"]["median_s"] / res["sep3d"]["median_s"],
        "hybrid_vs_dense3d_time_ratio": res["hybrid"]["median_s"] / res["3d"]["median_s"],
        "sep3d_vs_dense3d_time_ratio": res["sep3d"]["median_s"] / res["3d"]["median_s"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
