"""hpgen sample RUN_DIR --num N --out DIR [--format mp4|gif|png] [--seed S] [--frames T] [--height H --width W]
[--tile PX]

Writes DIR/sample_000.mp4, ... (or .gif, or .png strips; ``--out fake.gif`` writes fake.gif,
or fake_000.gif, ... for several) and a contact sheet (the run's finest real video on top,
then one row per sample; not for png strips), and prints their paths."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from ..errors import HpgenError

FORMATS = ("mp4", "gif", "png")  # hpgen.video.FORMATS, without importing torch to build the parser


def register(sub) -> None:
    p = sub.add_parser("sample", help="write random videos from a trained run",
                       description="Random samples from RUN_DIR/generator.pt, and a contact sheet of them under "
                                   "the run's finest real video (RUN_DIR/reals/, when present). "
                                   "Under `accelerate launch` the samples are shared between processes.")
    p.add_argument("run_dir")
    p.add_argument("--num", type=int, default=4, help="number of samples")
    p.add_argument("--out", required=True,
                   help="output directory for sample_000.mp4, ... and contact_sheet.png; or a file name such as "
                        "fake.gif, whose suffix sets the format (several samples: fake_000.gif, ...)")
    p.add_argument("--format", default=None, metavar="|".join(FORMATS),
                   help="mp4 (H.264 yuv420p, the default), gif, or png (a strip of the frames); default: from "
                        "--out's suffix, else mp4")
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


def run_reals(run_dir) -> dict[int, Path]:
    """{n: RUN_DIR/reals/scale_XX.mp4} (the training input at each scale n, as the trainer
    wrote it), in scale order; empty when the run directory has no reals."""
    found = {}
    for p in (Path(run_dir) / "reals").glob("scale_*.mp4"):
        m = re.fullmatch(r"scale_(\d+)\.mp4", p.name)
        if m:
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def finest_real(run_dir) -> Path | None:
    """RUN_DIR/reals/scale_XX.mp4 with the largest XX (the training input at the finest
    scale), or None when the run directory has no reals."""
    reals = run_reals(run_dir)
    return reals[max(reals)] if reals else None


def run(args) -> int:
    from accelerate import PartialState

    from ..contact_sheet import write_samples_sheet
    from ..sampling import sample_run
    from ..video import output_paths

    outputs = output_paths(args.out, args.num, args.format)  # checks --format before any work
    paths = sample_run(args.run_dir, args.num, args.out, seed=args.seed, frames=args.frames,
                       height=args.height, width=args.width, device=args.device, overwrite=args.overwrite,
                       tile=args.tile, fmt=args.format)
    for p in paths:
        print(p)
    # sample_run returns this process's files and waits for the others; the main process
    # draws the sheet of all of them (output_paths names them). A png strip is a sheet row already.
    if outputs.format != "png" and PartialState().is_main_process:
        try:
            print(write_samples_sheet(outputs.contact_sheet, outputs.videos, finest_real(args.run_dir)))
        except HpgenError as e:  # the samples are written; a sheet that cannot be drawn costs a warning
            print(f"hpgen: warning: no contact sheet: {e}", file=sys.stderr)
    return 0
