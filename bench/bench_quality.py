"""Quality benchmark: hpgen's samples against reference samples of the same clip, at one
size, in one run, with the same measures.

    # train a preset once per seed, sample, score against the HP-VAE-GAN authors' samples
    python bench/bench_quality.py --name balloons --config configs/hpvaegan/small.toml \\
        --video ../shared/data/hpvaegan_published/real_1.gif --seeds 0 1 2 \\
        --published ../shared/data/hpvaegan_published/fakes_1.gif [section.key=value ...]
    # score samples made elsewhere (one --fakes per seed), hpgen patchnn (VGPNN) as reference
    python bench/bench_quality.py --name mine --real clip.mp4 --fakes s0/*.mp4 --fakes s1/*.mp4 \\
        --reference-patchnn
    # hpgen patchnn (VGPNN) samples of a clip against VGPNN's published samples of it
    python bench/bench_quality.py --name airballoons --patchnn --num 3 \
        --real ../shared/data/vgpnn_published_airballoons/original.mp4 \
        --published ../shared/data/vgpnn_published_airballoons/vgpnn_{1,2,3}.mp4 [patchnn.key=value ...]
    # self-check: the published samples scored as ours and as the reference (every ratio is 1)
    python bench/bench_quality.py --name selfcheck --real .../real_1.gif \\
        --fakes .../fakes_1.gif --fakes-grid --published .../fakes_1.gif

Runs are bench/results/quality/<name>/seed<k> (a finished run is reused, an interrupted
one resumed: ``hpgen train`` in a subprocess, so runs are isolated), their samples
<name>/samples_seed<k>/. Every video (real, ours, reference) is resized to one (T, H, W),
that of our first sample, before scoring. The real video is --real, or the first run's
finest real (reals/scale_XX.mp4). With --patchnn, ours are --num ``hpgen patchnn``
samples of --real (seeds sample_seed + i; key=value overrides go to the patchnn preset)
at the size of the first published sample (else the real's), each timed. --published
takes one or more files, each one sample or a grid of them. Metrics: completeness,
coherence, shift_copy, sifid (null with the reason when its weights are missing),
diversity_lab, diversity_gray, max_psnr. With --patchnn, ``before:key=value`` arguments add a
second set of --num samples (the same preset and seeds with those overrides on top, e.g.
``before:patchnn.completeness_max_size=0`` for the defaults before issue 12's third pass),
scored in the same run: "before" and ratios_before_over_reference in the JSON, "before" rows
at the bottom of the contact sheet.
Writes <name>.json (per seed and mean/std over seeds for ours and the reference, and
ours/reference ratios) and <name>.png (input, reference rows, our rows) in --out-dir.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from hpgen.errors import HpgenError  # noqa: E402

METRICS = ("completeness", "coherence", "shift_copy", "sifid", "diversity_lab", "diversity_gray", "max_psnr")
RATIOS = ("completeness", "sifid", "diversity_lab", "diversity_gray", "shift_copy")
GRID_WIDTH, GRID_GAP = 256, 10   # the HP-VAE-GAN pages: 256-px samples, 10-px black gaps
OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")
BEFORE = "before:"  # before:key=value: a second set of --patchnn samples, scored in the same run


# ------------------------------------------------------------------------------ inputs

def split_grid(video: torch.Tensor, width: int = GRID_WIDTH, gap: int = GRID_GAP, name: str = "grid") -> list:
    """Samples side by side, ``width`` px each with ``gap``-px black columns between them
    (the published HP-VAE-GAN pages), (3, T, H, W) in [-1, 1] -> list of (3, T, H, width)."""
    total = video.shape[-1]
    n, rest = divmod(total + gap, width + gap)
    if n < 1 or rest:
        raise HpgenError(f"{name} is {total} px wide: not {width}-px samples with {gap}-px gaps "
                         f"(5 samples make {5 * width + 4 * gap}); set --grid-width/--grid-gap")
    for k in range(1, n):
        x = k * (width + gap) - gap
        if float(video[..., x:x + gap].mean()) > -0.8:  # black is -1
            raise HpgenError(f"{name}: columns {x}-{x + gap - 1} are not a black gap; is it a grid of "
                             f"{width}-px samples? (set --grid-width/--grid-gap)")
    return [video[..., k * (width + gap):k * (width + gap) + width].contiguous() for k in range(n)]


def load(path) -> torch.Tensor:
    from hpgen.video import read_video, to_tensor

    return to_tensor(read_video(path))


def load_fakes(paths, grid: bool, width: int, gap: int) -> list:
    out = []
    for p in paths:
        v = load(p)
        out += split_grid(v, width, gap, str(p)) if grid else [v]
    return out


# ------------------------------------------------------------------------------ our runs

def train_and_sample(args, base: Path) -> tuple[dict, list, dict]:
    """{seed label: [videos]}, run dirs, timings: one ``hpgen train`` per seed (skipped when
    the run has finished), then ``args.num`` samples from it."""
    from hpgen.sampling import sample_run

    groups, runs, times = {}, [], {}
    for k in args.seeds:
        run = base / f"seed{k}"
        runs.append(run)
        if (run / "generator.pt").is_file():
            print(f"seed {k}: reusing the finished run {run}", flush=True)
        else:
            cmd = [sys.executable, "-m", "hpgen", "train", "--config", args.config, "--out", str(run),
                   "--no-progress", *(["--video", args.video] if args.video else []), f"train.seed={k}",
                   *args.overrides]
            print(f"seed {k}: {' '.join(cmd[1:])}", flush=True)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            times[f"train_seed{k}_s"] = time.perf_counter() - t0
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()
                raise HpgenError(f"training seed {k} failed ({proc.returncode}): {tail[-1] if tail else ''}")
        t0 = time.perf_counter()
        paths = sample_run(run, args.num, base / f"samples_seed{k}", seed=k, device=args.device,
                           overwrite=True, progress=False)
        times[f"sample_seed{k}_s"] = time.perf_counter() - t0
        groups[f"seed{k}"] = [load(p) for p in paths]
    return groups, runs, times


PATCHNN_PRESET = ROOT / "configs" / "vgpnn" / "default.toml"


def patchnn_samples(real: torch.Tensor, num: int, device: str, preset=None, overrides=(), out_thw=None
                    ) -> tuple[list, list]:
    """``num`` hpgen patchnn (VGPNN) samples of ``real`` at ``out_thw`` (default: its size),
    with ``preset`` (default configs/vgpnn/default.toml) and key=value ``overrides``, and the
    seconds each took."""
    from hpgen.config import load_config
    from hpgen.inference import resolve_device
    from hpgen.patchnn import config as pcfg
    from hpgen.patchnn.generate import generate

    preset = preset or (PATCHNN_PRESET if PATCHNN_PRESET.is_file() else None)
    cfg = pcfg.validate(load_config(preset, list(overrides), cls=pcfg.VGPNNConfig)).patchnn
    dev = torch.device(resolve_device(device))
    x = real.to(dev)
    out, secs = [], []
    for i in range(num):
        t0 = time.perf_counter()
        y = generate(x, cfg, out_shape=tuple(out_thw or real.shape[1:]), seed=cfg.sample_seed + i)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        secs.append(time.perf_counter() - t0)
        out.append(y.clamp(-1, 1).cpu())
    return out, secs


def patchnn_reference(real: torch.Tensor, num: int, device: str) -> list:
    """``num`` hpgen patchnn (VGPNN, configs/vgpnn/default.toml) samples of ``real``, its size."""
    return patchnn_samples(real, num, device)[0]


# ------------------------------------------------------------------------------ scoring

def make_evaluator(real, metrics, device):
    """(Evaluator, reason sifid is missing or None): sifid is dropped, not fatal, when its
    weights cannot be loaded."""
    from hpgen.inference import resolve_device
    from hpgen.metrics.core import Evaluator

    dev = resolve_device(device)
    if "sifid" not in metrics:
        return Evaluator(real, metrics, dev), None
    ev = Evaluator(real, metrics, dev)
    try:
        ev.real_features()  # loads the Inception weights
        return ev, None
    except HpgenError as e:
        return Evaluator(real, [m for m in metrics if m != "sifid"], dev), str(e)


def score(ev, videos: list, names: list) -> dict:
    """One value per metric (pair metrics: mean over the videos), the worst copy, per video."""
    with torch.no_grad():
        rep = ev.evaluate(videos, names)
    values = {m: s.get("mean", s.get("value")) for m, s in rep["summary"].items()}
    if "max_psnr" in values:
        values["max_psnr_worst"] = max(r["max_psnr"] for r in rep["per_fake"])
    return {"values": values, "per_fake": rep["per_fake"]}


def over_seeds(groups: dict) -> dict:
    """Mean and population std over groups of each value (None where any group lacks it)."""
    keys = dict.fromkeys(k for g in groups.values() for k in g["values"])
    out = {"mean": {}, "std": {}, "n": len(groups)}
    for k in keys:
        vals = [g["values"].get(k) for g in groups.values()]
        if any(v is None for v in vals):
            out["mean"][k] = out["std"][k] = None
            continue
        mean = sum(vals) / len(vals)
        out["mean"][k] = mean
        out["std"][k] = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
    return out


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


# ------------------------------------------------------------------------------ main

def parse(argv):
    is_before = lambda a: a.startswith(BEFORE) and OVERRIDE.match(a[len(BEFORE):])  # noqa: E731
    before = [a[len(BEFORE):] for a in argv if is_before(a)]
    argv = [a for a in argv if not is_before(a)]
    overrides = [a for a in argv if OVERRIDE.match(a)]   # key=value anywhere: not eaten by nargs="+"
    rest = [a for a in argv if not OVERRIDE.match(a)]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="key=value arguments are passed to `hpgen train` (with --patchnn: "
                                        "to the patchnn preset, e.g. patchnn.completeness=false; before:key=value: a second, before set).")
    ap.add_argument("--name", required=True, help="results name: <out-dir>/<name>.json, .png and runs")
    ours = ap.add_mutually_exclusive_group(required=True)
    ours.add_argument("--config", help="train this preset once per seed, then sample it")
    ours.add_argument("--fakes", action="append", nargs="+", metavar="FILE",
                      help="our samples (any format/size); repeat --fakes for each seed")
    ours.add_argument("--patchnn", nargs="?", const=str(PATCHNN_PRESET), metavar="PRESET",
                      help="ours: --num hpgen patchnn samples of --real (preset default: %(const)s; "
                           "key=value arguments override it)")
    ap.add_argument("--fakes-grid", action="store_true", help="each --fakes file is a grid like --published")
    ap.add_argument("--video", help="training clip (overrides the preset's data.video)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: 0)")
    ap.add_argument("--num", type=int, default=5, help="samples per seed and patchnn references (default 5)")
    ref = ap.add_mutually_exclusive_group(required=True)
    ref.add_argument("--published", nargs="+", metavar="FILE",
                     help="reference samples: files of one sample each, or of samples side by side (HP-VAE-GAN pages)")
    ref.add_argument("--reference-patchnn", action="store_true",
                     help="reference: --num hpgen patchnn (VGPNN) samples of the real clip at the same size")
    ap.add_argument("--grid-width", type=int, default=GRID_WIDTH, help="sample width in a grid file (default 256)")
    ap.add_argument("--grid-gap", type=int, default=GRID_GAP, help="black gap between grid samples (default 10)")
    ap.add_argument("--real", help="the input clip (default: the first run's finest real video)")
    ap.add_argument("--frame-step", type=int, default=1,
                    help="score every k-th frame of every video, after the common resize (default 1: all). "
                         "The exact patch searches grow with frames squared: 3 makes a 75-frame clip 25 frames, "
                         "about 9x cheaper")
    ap.add_argument("--metrics", default=",".join(METRICS), help="comma-separated (default: %(default)s)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results" / "quality"))
    args = ap.parse_args(rest)
    args.overrides = overrides
    args.before = before
    if before and not args.patchnn:
        ap.error(f"{BEFORE}{before[0]}: before: overrides need --patchnn")
    if overrides and not (args.config or args.patchnn):
        ap.error(f"{overrides[0]}: key=value overrides need --config (training) or --patchnn")
    if args.patchnn and not args.real:
        ap.error("--patchnn needs --real (the clip to sample)")
    if args.num < 1:
        ap.error("--num must be >= 1")
    if args.frame_step < 1:
        ap.error("--frame-step must be >= 1")
    return args


def run(args) -> dict:
    from hpgen.commands.sample import finest_real
    from hpgen.contact_sheet import write_contact_sheet
    from hpgen.metrics.core import parse_metrics
    from hpgen.pyramid import resize

    metrics = parse_metrics(args.metrics)
    out_dir = Path(args.out_dir)
    base = out_dir / args.name
    timings = {}
    if args.config:
        ours, runs, timings = train_and_sample(args, base)
        source = {"config": args.config, "video": args.video, "seeds": args.seeds, "overrides": args.overrides,
                  "runs": [str(r) for r in runs], "num": args.num}
    elif args.fakes:
        ours = {f"fakes{i}": load_fakes(paths, args.fakes_grid, args.grid_width, args.grid_gap)
                for i, paths in enumerate(args.fakes)}
        runs, source = [], {"fakes": args.fakes, "grid": args.fakes_grid}
    else:
        runs = []
    before = None
    real_path = args.real or (finest_real(runs[0]) if runs else None)
    if real_path is None:
        raise HpgenError("no real video: pass --real")
    published = load_fakes(args.published, True, args.grid_width, args.grid_gap) if args.published else None
    if args.patchnn:
        clip = load(real_path)
        thw = tuple(published[0].shape[1:]) if published else tuple(clip.shape[1:])
        samples, secs = patchnn_samples(clip, args.num, args.device, args.patchnn, args.overrides, thw)
        ours = {"patchnn": samples}
        timings.update({f"patchnn_sample{i}_s": t for i, t in enumerate(secs)})
        source = {"patchnn": args.patchnn, "overrides": args.overrides, "num": args.num, "out_thw": list(thw)}
        if args.before:
            # The same preset with the before: overrides on top (e.g. a previous default), same seeds.
            bsamples, bsecs = patchnn_samples(clip, args.num, args.device, args.patchnn,
                                              list(args.overrides) + list(args.before), thw)
            before = {"patchnn": bsamples}
            timings.update({f"before_sample{i}_s": t for i, t in enumerate(bsecs)})
            source["before_overrides"] = args.before
    first = next(iter(ours.values()))[0]
    thw = tuple(first.shape[1:])

    def common(v):
        v = v if tuple(v.shape[1:]) == thw else resize(v.float(), thw).clamp(-1, 1)
        return v[:, ::args.frame_step].contiguous()

    real_full = load(real_path)
    # A real of another frame count is resampled in time to our samples' (e.g. a 13-frame clip
    # squeezed to a 7-frame model's samples): its motion and content then differ from what the
    # model trained on, and every measure is against a clip the model never saw. Said, not refused.
    resampled = real_full.shape[1] != thw[0]
    if resampled:
        print(f"bench_quality: warning: the real ({real_path}) has {real_full.shape[1]} frames, our samples "
              f"{thw[0]}: it is resampled in time; to score against the frames a run trained on, pass its "
              f"finest real (RUN/reals/scale_NN.mp4, the default with --config)", file=sys.stderr)
    real = common(real_full)
    ours = {k: [common(v) for v in vs] for k, vs in ours.items()}
    if before is not None:
        before = {k: [common(v) for v in vs] for k, vs in before.items()}
    t0 = time.perf_counter()
    if args.published:
        refs = {"published": [common(v) for v in published]}
        ref_source = {"published": args.published}
    else:
        refs = {"patchnn": patchnn_reference(real, args.num, args.device)}
        ref_source = {"patchnn": "configs/vgpnn/default.toml", "num": args.num}
        timings["reference_patchnn_s"] = time.perf_counter() - t0

    ev, sifid_missing = make_evaluator(real, metrics, args.device)
    t0 = time.perf_counter()
    scored = {}
    extra = (("before", before),) if before is not None else ()  # the before: set, scored and shown last
    for side, groups in (("ours", ours), ("reference", refs)) + extra:
        per = {k: score(ev, vs, [f"{k}/{i}" for i in range(len(vs))]) for k, vs in groups.items()}
        scored[side] = {"per_seed": per, **over_seeds(per)}
    timings["scoring_s"] = time.perf_counter() - t0
    means = {s: scored[s]["mean"] for s in scored}
    report = {
        "name": args.name,
        "common_thw": list(thw),
        "frame_step": args.frame_step,
        "real": str(real_path),
        "real_thw": list(real_full.shape[1:]),
        "real_resampled_in_time": resampled,
        "ours_source": source,
        "reference_source": ref_source,
        "metrics": metrics,
        "settings": ev.settings(),
        "ours": scored["ours"],
        "reference": scored["reference"],
        "ratios_ours_over_reference": {m: ratio(means["ours"].get(m), means["reference"].get(m))
                                       for m in RATIOS if m in metrics},
        "timings_s": timings,
        "note": "every video resized to common_thw with hpgen.pyramid.resize, then every frame_step-th frame "
                "kept, before scoring; pair metrics are "
                "means over a seed's samples; mean/std are over seeds (population std)",
    }
    if before is not None:
        means["before"] = scored["before"]["mean"]
        report["before"] = scored["before"]
        report["ratios_before_over_reference"] = {m: ratio(means["before"].get(m), means["reference"].get(m))
                                                  for m in RATIOS if m in metrics}
    if "sifid" in metrics and sifid_missing:
        report["sifid_missing"] = sifid_missing
        for side in scored:
            scored[side]["mean"]["sifid"] = scored[side]["std"]["sifid"] = None
        report["ratios_ours_over_reference"]["sifid"] = None

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{args.name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    rows, labels = [real], ["input"]
    for side, groups in (("ref", refs), ("ours", ours)) + extra:
        for k, vs in groups.items():
            rows += vs
            labels += [f"{side} {k} {i}" for i in range(len(vs))]
    write_contact_sheet(out_dir / f"{args.name}.png", rows, labels)
    report["json"], report["sheet"] = str(path), str(out_dir / f"{args.name}.png")
    return report


def show(report: dict) -> None:
    def fmt(s, m):
        mean, std = s["mean"].get(m), s["std"].get(m)
        return "n/a" if mean is None else f"{mean:.4g} ± {std:.2g}" if s["n"] > 1 else f"{mean:.4g}"

    keys = list(report["ours"]["mean"])
    print(f"{'metric':16s} {'ours':>20s} {'reference':>20s} {'ratio':>8s}")
    for m in keys:
        r = report["ratios_ours_over_reference"].get(m)
        print(f"{m:16s} {fmt(report['ours'], m):>20s} {fmt(report['reference'], m):>20s} "
              f"{'' if r is None else f'{r:.3f}':>8s}")
    if "before" in report:
        for m in keys:
            r = report["ratios_before_over_reference"].get(m)
            print(f"before {m:9s} {fmt(report['before'], m):>20s} {'' if r is None else f'{r:.3f}':>8s}")
    if "sifid_missing" in report:
        print(f"sifid: n/a ({report['sifid_missing']})")
    print(f"wrote {report['json']}\nwrote {report['sheet']}")


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else list(argv))
    try:
        report = run(args)
    except HpgenError as e:
        print(f"bench_quality: error: {e}", file=sys.stderr)
        return 2
    show(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
