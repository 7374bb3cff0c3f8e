"""``hpgen`` command line. Each subcommand lives in ``hpgen/commands/<name>.py`` and
exposes ``register(subparsers)``; this file only discovers them, so adding a command
never touches shared code. User errors (HpgenError) print one line and exit 2."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from .errors import HpgenError


def build_parser() -> argparse.ArgumentParser:
    from . import commands

    parser = argparse.ArgumentParser(prog="hpgen", description="Diverse videos from a single video.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HpgenError as e:
        print(f"hpgen: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hpgen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
