"""hpgen train --config PRESET [--video PATH] [--out RUN_DIR] [key=value ...]"""
from __future__ import annotations

from pathlib import Path

from ..config import Config, describe, load_config


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model on one video (same code path as launchers/train.py)",
                       description="Train on one video. Extra arguments are config overrides: section.key=value.")
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p) -> None:
    p.add_argument("--config", help="TOML preset, e.g. configs/hpvaegan/demo.toml")
    p.add_argument("--video", help="input video (overrides data.video)")
    p.add_argument("--out", help="run directory (default: runs/<video>-<preset>)")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="ignore the run directory's checkpoints and start from scratch (resuming from the "
                        "newest one is the default)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and pyramid, then exit")
    p.add_argument("--help-config", action="store_true", help="list every config key with its help")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars (for logs)")
    p.add_argument("--no-memory-check", action="store_true",
                   help="train even if the estimated peak memory of the largest scale exceeds the device's free "
                        "memory (checked before decoding; hpgen/memory.py)")
    p.add_argument("overrides", nargs="*", metavar="key=value")


def resolve(args) -> tuple[Config, Path]:
    overrides = list(args.overrides)
    if args.video:
        overrides.append(f"data.video={_toml_str(args.video)}")
    cfg = load_config(args.config, overrides)
    if args.out:
        out = Path(args.out)
    else:
        stem = Path(cfg.data.video).stem or "video"
        preset = Path(args.config).stem if args.config else "default"
        out = Path("runs") / f"{stem}-{preset}"
    return cfg, out


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run(args) -> int:
    if args.help_config:
        print(describe(Config()))
        return 0
    cfg, out = resolve(args)
    from ..trainer import INTERRUPTED, dry_run, train

    if args.dry_run:
        print(dry_run(cfg))
        return 0
    result = train(cfg, out, resume=args.resume, progress=not args.no_progress,
                   memory_check=not args.no_memory_check)
    return 0 if result.name == "generator.pt" else INTERRUPTED

