"""``hpgen patchnn``: training-free generation by patch nearest neighbours (VGPNN).

    hpgen patchnn VIDEO --num N --out DIR [--seed S] [--frames T] [--height H --width W]
    hpgen patchnn VIDEO --retarget --frames T --height H --width W --out DIR
    hpgen patchnn VIDEO --mask MASK --out DIR                  # conditional inpainting
    hpgen patchnn --content C --style S --out DIR              # video analogy
    hpgen patchnn --sketch SKETCH --style S --out DIR          # sketch-to-video

Outputs sample_000.mp4, sample_001.mp4, ... (--format gif|png for GIFs or png strips) and the
resolved config.toml in DIR, and for generation and inpainting contact_sheet.png (the input
on top, then one row per sample; not for png strips). --out NAME.gif (or .mp4, .png) sets the
format from its suffix and writes NAME.gif, or NAME_000.gif, ... beside NAME_config.toml.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import HpgenError

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "vgpnn" / "default.toml"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "patchnn", help="generate videos by patch nearest neighbours (VGPNN, no training)",
        description="Diverse generation, retargeting, inpainting and analogies from one video by "
                    "space-time patch nearest neighbours (VGPNN). No training.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("video", nargs="?", help="input video (mp4/avi/mov/gif, image, or folder of frames)")
    p.add_argument("--out", required=True,
                   help="output directory; or a file name such as fake.gif, whose suffix sets the format "
                        "(several samples: fake_000.gif, ...)")
    p.add_argument("--format", default=None, metavar="mp4|gif|png",
                   help="mp4 (H.264 yuv420p, the default), gif, or png (a strip of the frames); default: from "
                        "--out's suffix, else mp4")
    p.add_argument("--num", type=int, default=1, help="number of samples (default 1)")
    p.add_argument("--seed", type=int, default=None, help="seed of sample 0; sample i uses seed+i")
    p.add_argument("--frames", type=int, default=None, help="output frames (default: frames_ratio x input)")
    p.add_argument("--height", type=int, default=None, help="output height (default: input's)")
    p.add_argument("--width", type=int, default=None, help="output width (default: input's)")
    p.add_argument("--retarget", action="store_true", help="spatio-temporal retargeting: no noise")
    p.add_argument("--mask", help="inpainting: mask video/image, white (>127) = hole; same frames and size as VIDEO, or one frame")
    p.add_argument("--content", help="analogy: content video (spatio-temporal layout)")
    p.add_argument("--sketch", help="sketch-to-video: sketch or label video (layout)")
    p.add_argument("--style", help="analogy / sketch: style video (look and motion)")
    p.add_argument("--content-flow", help="precomputed content flow (.npy (T-1,H,W,2), .flo, or folder), e.g. RAFT")
    p.add_argument("--style-flow", help="precomputed style flow (.npy, .flo, or folder)")
    p.add_argument("--input-height", type=int, default=0, help="resize inputs to this height first, keeping aspect (0: native)")
    p.add_argument("--input-frames", type=int, default=0, help="use at most this many input frames (0: all)")
    p.add_argument("--start-frame", type=int, default=0, help="first input frame to use")
    p.add_argument("--config", default=None, help=f"TOML preset (default {DEFAULT_CONFIG.relative_to(DEFAULT_CONFIG.parents[2])})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set patchnn.voting=mean (repeatable)")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto (default: cuda when available)")
    p.add_argument("--fps", type=float, default=0, help="output fps (default: the input's)")
    p.add_argument("--overwrite", action="store_true", help="replace existing sample files in --out")
    p.add_argument("--no-memory-check", action="store_true",
                   help="run even if the estimated peak memory exceeds the device's free memory")
    p.set_defaults(func=run)


def _open(path: str, start: int, max_frames: int, height: int):
    """(source, frame indices to use, (T, H, W) after ``--input-*``), without decoding."""
    from ..video import VideoSource

    src = VideoSource(path)
    n = src.num_frames
    if start < 0 or start >= n:
        raise HpgenError(f"{path} has {n} frames; --start-frame {start} is out of range")
    idx = list(range(start, n if not max_frames else min(n, start + max_frames)))
    h, w = src.info.height, src.info.width
    if height and height != h:
        h, w = int(height), max(1, round(w * height / h))
    return src, idx, (len(idx), h, w)


def _check_memory(args, in_thw, out_thw, pc, dev) -> None:
    """Refuse, before any frame is decoded, a run whose estimated peak exceeds the free memory."""
    if args.no_memory_check:
        return
    from ..patchnn.budget import check_fits

    check_fits(in_thw, out_thw, pc, dev, what="VGPNN")


def _read(src, idx, thw):
    """uint8 frames ``idx`` of ``src`` at the size of ``thw``, and the fps."""
    frames = src.read(idx)
    if tuple(frames.shape[1:3]) != tuple(thw[1:]):
        # Resize with the shared resampler, not at decode time: decord's resizing readers
        # fail when two videos of different sizes are decoded in one process.
        from ..pyramid import resize
        from ..video import to_frames, to_tensor

        frames = to_frames(resize(to_tensor(frames), thw))
    return frames, src.fps


def run(args) -> int:
    import torch

    from ..config import dump_toml, load_config
    from ..inference import InferenceContext
    from ..patchnn import config as pcfg
    from ..video import output_paths, to_tensor, write_video

    analogy_mode = bool(args.content or args.sketch)
    if analogy_mode:
        if not args.style:
            raise HpgenError("--content/--sketch needs --style")
        if args.content and args.sketch:
            raise HpgenError("give --content or --sketch, not both")
        if args.video or args.mask or args.retarget:
            raise HpgenError("analogy/sketch mode takes no VIDEO, --mask or --retarget")
    elif not args.video:
        raise HpgenError("no input video given")
    if args.mask and args.retarget:
        raise HpgenError("--mask and --retarget cannot be combined")
    if args.num < 1:
        raise HpgenError("--num must be >= 1")
    if args.retarget and not (args.frames or args.height or args.width):
        raise HpgenError("--retarget needs an output size (--frames/--height/--width)")
    for name in ("frames", "height", "width"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise HpgenError(f"--{name} must be >= 1")

    cfg_path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    cfg = pcfg.validate(load_config(cfg_path, args.overrides, cls=pcfg.VGPNNConfig))
    pc = cfg.patchnn
    seed0 = pc.sample_seed if args.seed is None else args.seed

    outputs = output_paths(args.out, args.num, args.format)
    existing = [p for p in outputs.videos if p.exists()]
    if existing and not args.overwrite:
        raise HpgenError(f"{existing[0]} already exists (use --overwrite to replace samples)")

    ctx = InferenceContext.create(args.device)
    dev = ctx.device

    if analogy_mode:
        from ..patchnn.analogy import dynamic_structure, sketch_structure, analogy

        ssrc, sidx, sthw = _open(args.style, args.start_frame, args.input_frames, args.input_height)
        lsrc, lidx, lthw = _open(args.content or args.sketch, args.start_frame, args.input_frames,
                                 args.input_height)
        _check_memory(args, sthw, (args.frames or lthw[0], args.height or lthw[1], args.width or lthw[2]), pc, dev)
        style, fps = _read(ssrc, sidx, sthw)
        lay, lay_fps = _read(lsrc, lidx, lthw)
        if args.sketch:
            dc = sketch_structure(lay, cfg.analogy.clusters)
        else:
            dc = dynamic_structure(lay, cfg.analogy.clusters, args.content_flow or cfg.analogy.flow)
        ds = dynamic_structure(style, cfg.analogy.clusters, args.style_flow or cfg.analogy.flow)
        x = to_tensor(style).to(dev)
        shape = (args.frames or dc.shape[1], args.height or dc.shape[2], args.width or dc.shape[3])

        def make(seed):
            return analogy(dc.to(dev), x, ds.to(dev), pc, cfg.analogy, seed=seed, out_shape=shape,
                           progress=f"analogy seed {seed}")
        fps = lay_fps
    else:
        from ..patchnn.generate import default_out_shape, generate, inpaint

        src, idx, thw = _open(args.video, args.start_frame, args.input_frames, args.input_height)
        if args.mask and (args.frames or args.height or args.width):
            raise HpgenError("inpainting keeps the input's size; drop --frames/--height/--width")
        shape = thw if args.mask else default_out_shape(thw, pc, args.frames, args.height, args.width)
        _check_memory(args, thw, shape, pc, dev)
        frames, fps = _read(src, idx, thw)
        x = to_tensor(frames).to(dev)
        if args.mask:
            from ..pyramid import resize
            from ..video import VideoSource

            msrc = VideoSource(args.mask)
            if (msrc.info.height, msrc.info.width) != (src.info.height, src.info.width) or \
                    msrc.num_frames not in (1, src.num_frames):
                raise HpgenError(f"the mask is {msrc.num_frames}x{msrc.info.height}x{msrc.info.width} but the video is "
                                 f"{src.num_frames}x{src.info.height}x{src.info.width} (frames x height x width); "
                                 f"it needs the same size (or one frame)")
            midx = None if msrc.num_frames == 1 else list(range(args.start_frame, args.start_frame + len(frames)))
            m = torch.from_numpy(msrc.read(midx if midx is not None else [0]).max(-1)).float()
            m = resize(m.unsqueeze(0), (m.shape[0], *frames.shape[1:3]))[0]
            mask = (m > 127).to(dev)

            def make(seed):
                return inpaint(x, mask, pc, seed=seed, progress=f"inpaint seed {seed}")
        else:
            def make(seed):
                return generate(x, pc, out_shape=shape, seed=seed, noise=not args.retarget,
                                progress=f"sample seed {seed}")

    if ctx.is_main:
        outputs.folder.mkdir(parents=True, exist_ok=True)
        outputs.config.write_text(dump_toml(cfg))
    for i in ctx.share(range(args.num)):
        y = make(seed0 + i)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        path = write_video(outputs.videos[i], y, fps=args.fps or fps)
        print(f"wrote {path}  ({y.shape[1]}x{y.shape[2]}x{y.shape[3]} frames x height x width)")
    ctx.wait()
    # A sheet where samples line up with their input: not for retargeting (a new size and
    # aspect that the sheet would squash back) nor analogies (two inputs).
    if ctx.is_main and not (analogy_mode or args.retarget or outputs.format == "png"):
        from ..contact_sheet import write_samples_sheet

        try:
            print(f"wrote {write_samples_sheet(outputs.contact_sheet, outputs.videos, x)}")
        except HpgenError as e:  # the samples are written; a sheet that cannot be drawn costs a warning
            print(f"hpgen: warning: no contact sheet: {e}", file=sys.stderr)
    return 0
