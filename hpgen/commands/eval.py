"""``hpgen eval``: score generated videos against the real one, offline.

    hpgen eval --real input.mp4 --fake out/samples/*.mp4 other_tool/frames_dir \
               [--metrics sifid,svfid,...] [--c3d-weights c3d.pt] --json scores.json

Fakes may be mp4/gif/frame folders/images of any size; each is resized to the real
video's (T, H, W) and the JSON says which were. ``--frames`` limits how many frames
of the real video are used (all by default; the first N).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def register(subparsers) -> None:
    from ..metrics.core import DEFAULT_METRICS, REGISTRY

    p = subparsers.add_parser(
        "eval", help="compute SIFID, SVFID, diversity, NNF-diversity, coherence/completeness, max PSNR of generated videos",
        description="Score generated videos against the real video. Metrics: " +
                    "; ".join(f"{k}: {v.help}" for k, v in REGISTRY.items()) +
                    ". Numbers from different backbones/layers/sizes are not comparable (docs/metrics.md).")
    p.add_argument("--real", required=True, help="the real video (mp4/gif/frame folder/image)")
    p.add_argument("--fake", required=True, nargs="+", help="generated videos, any size (resized to the real's)")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                   help=f"comma-separated subset of {', '.join(REGISTRY)} or 'all' (default: %(default)s)")
    p.add_argument("--json", dest="json_out", default=None, help="write the full report here (default: stdout)")
    p.add_argument("--frames", type=int, default=0, help="use only the first N frames of the real video")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="resize the real video (and so the fakes) to H W first")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--c3d-weights", default=None, help="C3D state dict (c3d-pytorch layout) for svfid_c3d")
    p.add_argument("--c3d-sha256", default=None, help="expected sha256 of --c3d-weights")
    p.add_argument("--i3d-short-side", type=int, default=224, help="I3D input shorter side (default 224)")
    p.add_argument("--nnf-short-side", type=int, default=48, help="NNFDIV search shorter side (default 48; 0 = native)")
    p.add_argument("--bidir-height", type=int, default=36,
                   help="coherence/completeness search height (default 36; aspect kept, never enlarged; 0 = native)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (per fake and metric, on stderr)")
    p.set_defaults(func=run)


def _load(path: str, frames: int = 0, size=None):
    from ..video import VideoSource, to_tensor

    src = VideoSource(path)
    idx = list(range(min(frames, src.num_frames))) if frames else None
    return to_tensor(src.read(idx, tuple(size) if size else None))


def run(args) -> int:
    import torch

    from ..errors import HpgenError
    from ..inference import InferenceContext
    from ..metrics.core import Evaluator, parse_metrics

    ctx = InferenceContext.create(args.device)
    metrics = parse_metrics(args.metrics, c3d=bool(args.c3d_weights))
    real = _load(args.real, args.frames, args.size)
    from tqdm import tqdm

    names, fakes = [], []
    for f in tqdm(args.fake, desc="reading fakes", unit="video", disable=args.no_progress, file=sys.stderr):
        names.append(str(f))
        fakes.append(_load(f))
    if not fakes:
        raise HpgenError("no fake videos given")
    ev = Evaluator(real, metrics, ctx.device, c3d_weights=args.c3d_weights, c3d_sha256=args.c3d_sha256,
                   i3d_short_side=args.i3d_short_side or None, nnf_short_side=args.nnf_short_side or None,
                   bidir_height=args.bidir_height or None)
    with torch.no_grad():
        report = ev.evaluate(fakes, names, progress=not args.no_progress)
    report["real"] = str(args.real)
    report["note"] = ("fakes are resized to the real video's TxHxW with hpgen.pyramid.resize before scoring; "
                      "SVFID values from different backbones, layers or input sizes are not comparable")
    text = json.dumps(report, indent=2)
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
        tmp.write_text(text + "\n")
        os.replace(tmp, out)
    else:
        print(text)
    # one line per metric on stderr, so --json users still see the result
    for m, s in report["summary"].items():
        v = s.get("mean", s.get("value"))
        extra = f" ± {s['std']:.4g}" if "std" in s and s["n"] > 1 else ""
        shown = "n/a (" + s.get("note", "") + ")" if v is None else f"{v:.6g}{extra}"
        print(f"{m}: {shown}", file=sys.stderr)
    if report["resized_fakes"]:
        print(f"note: {report['resized_fakes']} fake(s) resized to the real video's size "
              f"{'x'.join(map(str, report['settings']['real_thw']))} (TxHxW)", file=sys.stderr)
    return 0
