"""hpgen apply APP RUN_DIR --out FILE [...]: the applications of SinGAN-GIF Sec. 5 and
HP-VAE-GAN Fig. 8 on a trained run (only RUN_DIR/generator.pt is read).

    lengthen   --frames T [--height H --width W]   a random video of another length/size
    slomo      --factor K                           K x the frames, K x slower (trained for it)
    superres   --input VIDEO --factor K [--recipe paper]   K x the height and width
    edit       --input EDITED --mask MASK [--scale S --passes P]
    harmonize  --input PASTED --mask MASK [--scale S --passes P]
    paint      --input PAINTING [--scale S --frames T]
    animate    --input STILL [--frames T --scale S]
"""
from __future__ import annotations

APPS = {
    "lengthen": "a random video with more (or fewer) frames, or another frame size (Sec. 5.1, 5.3)",
    "slomo": "a random video K times slower: K x the frames along the latent path (Sec. 5.2)",
    "superres": "super-resolution by repeated passes through the finest generator (Sec. 5.5)",
    "edit": "inject an edited video at scale S, run the finer scales, blend into the edit mask (Sec. 5.4)",
    "harmonize": "harmonise a pasted object: inject the naive paste at scale S, blend into its mask",
    "paint": "paint-to-video: inject a painting at a coarse scale",
    "animate": "motion transfer: a still image repeated in time, injected at scale 1 (Sec. 5.6)",
}
# Default injection scales, counted from the coarsest (SinGAN-GIF uses about 3 for editing;
# harmonisation keeps more of the input's layout, so it starts finer; a painting needs the
# coarse scales to turn blobs into structure).
DEFAULT_SCALE = {"edit": 2, "harmonize": -2, "paint": 1, "animate": 1}


def register(sub) -> None:
    p = sub.add_parser("apply", help="applications on a trained run: lengthen, slomo, superres, edit, "
                                     "harmonize, paint, animate",
                       description=__doc__.split("\n\n")[0])
    apps = p.add_subparsers(dest="app", metavar="APP")
    apps.required = True
    for name, text in APPS.items():
        a = apps.add_parser(name, help=text, description=text)
        a.add_argument("run_dir")
        a.add_argument("--out", required=True, help="output file: .mp4, .gif or .png (frame strip)")
        a.add_argument("--seed", type=int, default=0)
        a.add_argument("--device", default="auto", help="auto|cpu|cuda")
        a.add_argument("--overwrite", action="store_true", help="replace an existing output file")
        if name in ("superres", "edit", "harmonize", "paint", "animate"):
            a.add_argument("--input", required=True, help="input video or image")
        if name in ("edit", "harmonize"):
            a.add_argument("--mask", help="mask image/video, white where the input was edited "
                                          "(without it the whole output is generated)")
            a.add_argument("--passes", type=int, default=1, help="passes through the finer scales")
            a.add_argument("--feather", type=int, help="mask feather radius in pixels "
                                                        "(default: one pixel of the injection scale)")
            a.add_argument("--no-blend", action="store_true", help="write the generated video unblended")
        if name in DEFAULT_SCALE:
            a.add_argument("--scale", type=int, default=DEFAULT_SCALE[name],
                           help=f"injection scale, 1..N (negative counts from the finest; default "
                                f"{DEFAULT_SCALE[name]})")
        if name in ("lengthen", "paint", "animate"):
            a.add_argument("--frames", type=int, help="output frames (default: as trained)")
        if name == "lengthen":
            a.add_argument("--height", type=int, help="output height (default: as trained)")
            a.add_argument("--width", type=int, help="output width (default: keeps the aspect ratio)")
        if name in ("slomo", "superres"):
            a.add_argument("--factor", type=float if name == "superres" else int, default=2)
        if name == "superres":
            a.add_argument("--recipe", choices=("none", "paper"), default="none",
                           help="paper: SinGAN-GIF Sec. 5.5 - the run must be trained for the integer --factor k "
                                "with pyramid.scale_factor = k**(1/k) and train.recon_weight = 125 "
                                "(configs/singan_gif/superres.toml is k = 2); k passes through the finest generator")
        a.set_defaults(func=run)


def _read(path: str, device):
    from ..errors import HpgenError
    from ..video import read_video, to_tensor

    from pathlib import Path

    if not Path(path).exists():
        raise HpgenError(f"input {path} does not exist")
    return to_tensor(read_video(path)).unsqueeze(0).to(device)


def run(args) -> int:
    from pathlib import Path

    import torch

    from .. import applications as apps
    from ..errors import HpgenError
    from ..export import load_generator
    from ..inference import InferenceContext
    from ..sampling import load_model
    from ..video import write_video

    out = Path(args.out)
    if out.suffix.lower() not in (".mp4", ".gif", ".png"):
        raise HpgenError(f"--out {out}: use a .mp4, .gif or .png file name")
    if out.exists() and not args.overwrite:
        raise HpgenError(f"{out} already exists; pass --overwrite or choose another --out")
    payload = load_generator(Path(args.run_dir))
    ctx = InferenceContext.create(args.device)
    method, model = load_model(payload, ctx.device)
    shapes = payload["shapes"]
    image_model = shapes[-1].frames == 1
    if image_model and args.app in ("lengthen", "slomo", "animate") and getattr(args, "frames", 1) not in (None, 1):
        raise HpgenError("this generator was trained on an image; --frames must be 1")
    if image_model and args.app in ("slomo", "animate"):
        raise HpgenError(f"{args.app} needs a generator trained on a video")
    scale = getattr(args, "scale", None)
    if scale is not None and scale < 0:
        scale = model.num_scales + scale
    g = torch.Generator(device=ctx.device).manual_seed(args.seed)
    fps = payload["fps"] / shapes[-1].rate
    with torch.no_grad():
        if args.app == "lengthen":
            video = apps.generate(method, model, shapes, args.frames, args.height, args.width, g)
        elif args.app == "slomo":
            video = apps.slomo(method, model, shapes, args.factor, g)
        else:
            x = _read(args.input, ctx.device)
            if image_model and x.shape[2] > 1:
                raise HpgenError("this generator was trained on an image; give it an image")
            if args.app == "superres":
                passes = None
                if args.recipe == "paper":
                    passes = apps.check_superres_run(payload["config"], args.factor)["passes"]
                video = apps.super_resolve(model, x, args.factor, payload["config"]["pyramid"]["scale_factor"], g,
                                           passes=passes)
            elif args.app in ("edit", "harmonize"):
                mask = None
                if args.mask:
                    m = _read(args.mask, ctx.device)
                    if m.shape[-2:] != x.shape[-2:] or m.shape[2] not in (1, x.shape[2]):
                        raise HpgenError(f"--mask is {tuple(m.shape[2:])} (T, H, W) but --input is "
                                         f"{tuple(x.shape[2:])}; they must match (a still mask is fine)")
                    mask = (m.mean(1, keepdim=True) > 0).float()  # white (> mid-grey) = edited
                video = apps.edit(model, shapes, x, mask, scale, args.passes, args.feather, g,
                                  blend=not args.no_blend)
            elif args.app == "paint":
                video = apps.paint(model, shapes, x, scale, args.frames, g)
            else:  # animate
                if x.shape[2] != 1:
                    x = x[:, :, :1]  # a video's first frame is the still
                video = apps.animate(model, shapes, x, args.frames or shapes[-1].frames, scale, g)
    if ctx.is_main:
        print(write_video(out, video[0].float().clamp(-1, 1), fps=fps))
    return 0
