"""Where a trained run falls behind reference samples: the reference scored at every scale of
the run, next to the trainer's own end-of-scale measures.

    python bench/bench_scale_gap.py --run bench/results/quality/lava/seed0 \\
        --published ../shared/data/hpvaegan_published/fakes_6.gif --out lava_gap.json

For each scale n of the run, every reference sample is cut to the frames the run trained on
(its first T_finest frames: a sample is taken to run at the input's frame rate), sampled in
time at that scale's rate ((T_finest - 1) / (T_n - 1), the pyramid's frame step), resized to
the scale's frame size and scored against the run's real at that scale (reals/scale_NN.mp4)
with the same bidirectional measures the trainer's metric hook uses (coherence, completeness).
The run's own values at each scale come from its metrics.jsonl (train.eval_metrics on
train.eval_samples fixed prior samples). A scale where "ours" rises above the reference's
profile is where the run loses what the reference keeps.

Writes JSON (per scale: size, rate, the reference's mean and per-sample values, ours) and
prints a table. --published takes files of one sample each, or grids of samples side by side
(the HP-VAE-GAN pages; --grid-width/--grid-gap as in bench_quality.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_quality import GRID_GAP, GRID_WIDTH, load, split_grid  # noqa: E402
from hpgen.errors import HpgenError  # noqa: E402

MEASURES = ("coherence", "completeness")


def scale_reals(run: Path) -> dict[int, Path]:
    from hpgen.commands.sample import run_reals

    paths = run_reals(run)
    if not paths:
        raise HpgenError(f"{run}: no reals/scale_NN.mp4 (is it an hpgen train run directory?)")
    return paths


def ours_by_scale(run: Path) -> dict[int, dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out[int(rec["scale"])] = {m: rec[m] for m in MEASURES if m in rec}
    return out


def frame_rate(t_finest: int, t_scale: int) -> int:
    """The pyramid's frame step at a scale of ``t_scale`` frames below a finest of ``t_finest``."""
    if t_scale <= 1:
        return 1
    rate, rest = divmod(t_finest - 1, t_scale - 1)
    if rest:
        raise HpgenError(f"{t_scale} frames are not every k-th of {t_finest}: not one run's pyramid")
    return rate


def run(args) -> dict:
    from hpgen.metrics.bidirectional import BidirectionalReference
    from hpgen.pyramid import resize

    run_dir = Path(args.run)
    reals = {n: load(p).float() for n, p in scale_reals(run_dir).items()}
    t_finest = reals[max(reals)].shape[1]
    refs = []
    for p in args.published:
        v = load(p)
        refs += split_grid(v, args.grid_width, args.grid_gap, str(p)) if args.grid else [v]
    short = [i for i, v in enumerate(refs) if v.shape[1] < t_finest]
    if short:
        raise HpgenError(f"reference samples {short} have fewer than the run's {t_finest} frames")
    ours = ours_by_scale(run_dir)
    scales = []
    for n, real in reals.items():
        t, h, w = real.shape[1:]
        rate = frame_rate(t_finest, t)
        ref = BidirectionalReference(real)
        per = [ref.score(resize(v[:, :t_finest:rate].float(), (t, h, w)).clamp(-1, 1)) for v in refs]
        mean = {m: sum(s[m] for s in per) / len(per) for m in MEASURES}
        scales.append({"scale": n, "thw": [t, h, w], "rate": rate, "reference": mean,
                       "reference_per_sample": [{m: s[m] for m in MEASURES} for s in per],
                       "ours": ours.get(n)})
    return {"run": str(run_dir), "published": args.published, "grid": args.grid,
            "frames_trained": t_finest, "scales": scales,
            "note": "reference samples cut to their first frames_trained frames, every rate-th frame, resized "
                    "to the scale's size; ours: the run's metrics.jsonl (train.eval_metrics at the end of each scale)"}


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="an hpgen train run directory (reals/, metrics.jsonl)")
    ap.add_argument("--published", nargs="+", required=True, help="reference samples: files or grids")
    ap.add_argument("--single", dest="grid", action="store_false",
                    help="each --published file is one sample (default: a grid of samples side by side)")
    ap.add_argument("--grid-width", type=int, default=GRID_WIDTH)
    ap.add_argument("--grid-gap", type=int, default=GRID_GAP)
    ap.add_argument("--out", required=True, help="JSON path")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else list(argv))
    try:
        report = run(args)
    except HpgenError as e:
        print(f"bench_scale_gap: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'scale':>5s} {'T x H x W':>12s} {'rate':>4s} {'completeness ref':>17s} {'ours':>7s} "
          f"{'coherence ref':>14s} {'ours':>7s}")
    for s in report["scales"]:
        o = s["ours"] or {}
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"{s['scale']:5d} {'x'.join(map(str, s['thw'])):>12s} {s['rate']:4d} "
              f"{fmt(s['reference']['completeness']):>17s} {fmt(o.get('completeness')):>7s} "
              f"{fmt(s['reference']['coherence']):>14s} {fmt(o.get('coherence')):>7s}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
