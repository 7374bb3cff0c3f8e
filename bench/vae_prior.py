"""Prior samples of a trained HP-VAE-GAN run stopped at one of its scales (default: the last
patch-VAE scale), against the input and published samples downscaled to that size: does the
coarse part of the pyramid keep the input's layout? (docs/BENCHMARKS.md, "Realism")

    python bench/vae_prior.py RUN_DIR --published .../fakes_1.gif [--stop 0] [--sheet out.png]

Prints the encoder's posterior statistics on the input (mean spread, sigma, KL per element),
the RMSE of a posterior sample decoded through the same scales, the mean RMSE of 6 prior samples
(seeds 0..5, reconstruction path, no GAN noise) and of the published samples against the
input, and the per-voxel std over samples of each; ``--sheet`` writes a contact sheet
(input, 3 published, 4 ours, upsampled to the finest size).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import GRID_GAP, GRID_WIDTH, load, load_fakes  # noqa: E402

from hpgen.contact_sheet import write_contact_sheet  # noqa: E402
from hpgen.export import load_generator  # noqa: E402
from hpgen.pyramid import resize  # noqa: E402
from hpgen.sampling import load_model  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--published", required=True, help="a grid of published samples (HP-VAE-GAN pages)")
    ap.add_argument("--stop", type=int, default=None, help="scale to stop at (default: the last VAE scale)")
    ap.add_argument("--sheet", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    payload = load_generator(args.run)
    _, model = load_model(payload, "cpu")
    shapes = payload["shapes"]
    stop = model.vae_scales - 1 if args.stop is None else args.stop
    thw = shapes[stop].thw
    real = resize(load(sorted((args.run / "reals").glob("*.mp4"))[-1])[None].float(), thw)[0]
    pubs = [resize(v[None].float(), thw)[0] for v in load_fakes([args.published], True, GRID_WIDTH, GRID_GAP)]
    ours = []
    with torch.no_grad():
        mu, logvar = model.encode(resize(real[None], shapes[0].thw))
        for i in range(6):
            z = torch.randn(model.latent_shape(1, shapes[0]), generator=torch.Generator().manual_seed(i))
            ours.append(model.synthesize(z, shapes, stop=stop, noise=False)[0].clamp(-1, 1))

    def rmse(v):
        return float((v - real).pow(2).mean().sqrt())

    sigma = (0.5 * logvar).exp()
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)
    with torch.no_grad():  # the same decoder fed a posterior sample of the input: does z carry the clip?
        post = model.synthesize(mu + sigma * torch.randn(mu.shape, generator=torch.Generator().manual_seed(99)),
                                shapes, stop=stop, noise=False)[0].clamp(-1, 1)
    print(f"scale {stop} ({'x'.join(map(str, thw))}): posterior mu std {float(mu.std()):.3f} "
          f"(per channel at most {float(mu.std((0, 2, 3, 4)).max()):.3f}), sigma mean {float(sigma.mean()):.3f}, "
          f"KL per element {float(kl.mean()):.4f}")
    print(f"posterior-sample decode RMSE vs input {float((post - real).pow(2).mean().sqrt()):.4f} "
          f"(a prior sample's is the 'ours' line below)")
    for name, vs in (("ours", ours), ("published", pubs)):
        print(f"{name:10s} RMSE vs input {sum(map(rmse, vs)) / len(vs):.4f}  "
              f"std over samples {float(torch.stack(vs).std(0).mean()):.4f}")
    if args.sheet:
        big = shapes[-1].thw
        up = lambda v: resize(v[None], big)[0].clamp(-1, 1)  # noqa: E731
        write_contact_sheet(args.sheet, [up(real)] + [up(p) for p in pubs[:3]] + [up(o) for o in ours[:4]],
                            ["input"] + [f"published {i}" for i in range(3)] + [f"ours {i}" for i in range(4)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
