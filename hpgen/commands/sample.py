"""hpgen sample RUN_DIR --num N --out DIR [--seed S] [--frames T] [--height H --width W] [--tile PX]"""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("sample", help="write random videos from a trained run",
                       description="Random samples from RUN_DIR/generator.pt (nothing else is read). "
                                   "Under `accelerate launch` the samples are shared between processes.")
    p.add_argument("run_dir")
    p.add_argument("--num", type=int, default=4, help="number of samples")
    p.add_argument("--out", required=True, help="output directory for sample_000.mp4, ...")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, help="frames of the output (default: as trained)")
    p.add_argument("--height", type=int, help="output height (default: as trained)")
    p.add_argument("--width", type=int, help="output width (default: keeps the aspect ratio)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda")
    p.add_argument("--overwrite", action="store_true", help="replace existing sample files")
    p.add_argument("--tile", type=int, default=0,
                   help="build the finest frame from PX x PX tiles (HP-VAE-GAN): memory follows the tile, "
                        "the video is the same; for frames too large to sample whole")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..sampling import sample_run

    paths = sample_run(args.run_dir, args.num, args.out, seed=args.seed, frames=args.frames,
                       height=args.height, width=args.width, device=args.device, overwrite=args.overwrite,
                       tile=args.tile)
    for p in paths:
        print(p)
    return 0
