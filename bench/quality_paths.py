"""Where a trained HP-VAE-GAN run's quality gap comes from: the same run's videos along four
paths through the pyramid, each scored against the reference samples with bench_quality.py.

    python bench/quality_paths.py RUN_DIR --real real_1.gif --published fakes_1.gif --out-dir D

Paths (5 videos each, at the run's finest size):
- ``rec``: the encoder's mean of the input, no z_n (Eq. 6's reconstruction path): what the
  generators do when the coarse scales hold the input's own layout.
- ``posterior``: z = mu + sigma * eps, with the z_n noise: a sample whose coarse layout comes
  from the input; its spread says how much diversity the GAN scales' noise adds.
- ``prior_nonoise``: z ~ N(0, I) (Sec. 3.3), no z_n: the sample path without the GAN noise.
- ``prior``: z ~ N(0, I) with z_n: the samples ``hpgen sample`` writes.

If ``rec`` and ``posterior`` score near the reference and ``prior`` does not, the gap is in
the prior samples of the patch-VAE scales, not in the GAN scales; if ``prior_nonoise``
equals ``prior``, the z_n noise adds nothing. Writes D/<path>/*.mp4, bench_quality's
JSON and contact sheet (D/paths.json/.png; rows "fakes0".."fakes3" are the paths in the
order above), and D/quality_paths.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality  # noqa: E402

from hpgen.export import load_generator  # noqa: E402
from hpgen.pyramid import resize  # noqa: E402
from hpgen.sampling import load_model  # noqa: E402
from hpgen.video import write_video  # noqa: E402

PATHS = ("rec", "posterior", "prior_nonoise", "prior")


def path_videos(model, shapes, real: torch.Tensor, num: int, seed: int) -> dict:
    """``num`` videos per path; video i of every path shares its generator seed."""
    out = {p: [] for p in PATHS}
    with torch.no_grad():
        mu, logvar = model.encode(resize(real[None], shapes[0].thw))
        sigma = (0.5 * logvar).exp()
        out["rec"] = [model.synthesize(mu, shapes, noise=False)[0]] * num  # deterministic: one video
        for i in range(num):
            g = torch.Generator().manual_seed(seed * 1_000_003 + i)
            eps = torch.randn(mu.shape, generator=g)
            prior = torch.randn(mu.shape, generator=g)
            state = g.get_state()
            out["posterior"].append(model.synthesize(mu + sigma * eps, shapes, generator=g)[0])
            out["prior_nonoise"].append(model.synthesize(prior, shapes, noise=False)[0])
            g.set_state(state)  # the same z_n draws as the posterior video
            out["prior"].append(model.synthesize(prior, shapes, generator=g)[0])
    return {p: [v.clamp(-1, 1).float() for v in vs] for p, vs in out.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--real", required=True, help="the input clip (scored at the run's finest size)")
    ap.add_argument("--published", nargs="+", default=None, help="reference samples (else hpgen patchnn's)")
    ap.add_argument("--num", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    payload = load_generator(args.run)
    _, model = load_model(payload, "cpu")
    shapes = payload["shapes"]
    real = resize(bench_quality.load(args.real)[None].float(), shapes[-1].thw)[0].clamp(-1, 1)
    fps = payload["fps"] / shapes[-1].rate
    groups = []
    for p, vids in path_videos(model, shapes, real, args.num, args.seed).items():
        groups += ["--fakes", *(str(write_video(args.out_dir / p / f"{i:03d}.mp4", v, fps=fps))
                                for i, v in enumerate(vids))]
    # One bench_quality run, each path one --fakes group (fakes0..3 in PATHS order): the
    # references (patchnn samples are generated) and the real's features are made once.
    q = ["--name", "paths", "--real", args.real, *groups, "--out-dir", str(args.out_dir)]
    q += ["--published", *args.published] if args.published else ["--reference-patchnn", "--num", str(args.num)]
    report = bench_quality.run(bench_quality.parse(q))
    ref = report["reference"]["mean"]
    summary = {"run": str(args.run), "reference": ref, "sheet": report["sheet"], "paths": {}}
    for i, p in enumerate(PATHS):
        ours = report["ours"]["per_seed"][f"fakes{i}"]["values"]
        r = summary["paths"][p] = {"ours": ours, "ratios": {m: bench_quality.ratio(ours.get(m), ref.get(m))
                                                            for m in bench_quality.RATIOS if m in ours}}
        print(f"{p:14s} completeness {ours['completeness']:.3f} ({r['ratios']['completeness']:.2f}x)  "
              f"sifid {ours.get('sifid') or float('nan'):.2f} ({r['ratios'].get('sifid') or float('nan'):.2f}x)  "
              f"diversity_lab {ours['diversity_lab']:.3f} ({r['ratios']['diversity_lab']:.2f}x)", flush=True)
    (args.out_dir / "quality_paths.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
