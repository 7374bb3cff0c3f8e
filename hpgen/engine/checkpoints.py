"""Atomic DeepSpeed checkpoints: <run>/checkpoints/<tag>/ written under a temporary name
and renamed, with ``latest`` replaced atomically, so a kill at any moment leaves the
previous checkpoint intact."""
from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

from .distributed import barrier, dist_info, multi_rank
from .randomness import rng_state, set_rng_state


def _gather_rng() -> list:
    import torch.distributed as dist

    mine = rng_state()
    if not multi_rank():
        return [mine]
    every: list = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    return every


def save_checkpoint(ckpt_root: Path, tag: str, engines: dict, meta: dict, keep: int, config: dict | None = None
                    ) -> Path:
    """DeepSpeed checkpoints of every engine, with client state holding ``meta`` (scale,
    step, ...), the resolved ``config`` and the RNG states of every rank; ``meta`` is also
    written as meta.json, which is what resume reads first and what marks a complete
    checkpoint. Noise amplitudes are model buffers, so they are in the module states.

    All ranks call this. The directory is written as ``.tmp-<tag>`` and renamed by rank 0
    after a barrier, then ``latest`` is replaced atomically, so a kill at any moment leaves
    the previous checkpoint intact.
    """
    info = dist_info()
    ckpt_root = Path(ckpt_root)
    tmp = ckpt_root / f".tmp-{tag}"
    final = ckpt_root / tag
    client = {"meta": meta, "config": config, "rng": _gather_rng()}
    if info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    for name, engine in engines.items():
        engine.save_checkpoint(str(tmp), tag=name, client_state=client, save_latest=False)
    barrier()
    if info.is_main:
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        latest_tmp = ckpt_root / ".latest.tmp"
        latest_tmp.write_text(tag)
        os.replace(latest_tmp, ckpt_root / "latest")
        tags = sorted(p.name for p in ckpt_root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for old in tags[:-keep] if keep > 0 else []:
            shutil.rmtree(ckpt_root / old, ignore_errors=True)
    barrier()
    return final


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    ckpt_root = Path(ckpt_root)
    f = ckpt_root / "latest"
    if not f.is_file():
        return None
    path = ckpt_root / f.read_text().strip()
    return path if (path / "meta.json").is_file() else None


def read_meta(path: Path) -> dict:
    return json.loads((Path(path) / "meta.json").read_text())


def load_checkpoint(path: Path, engines: dict) -> dict:
    """Restore every engine (weights, optimizer, buffers) and this rank's RNG state; returns
    the client state."""
    path = Path(path)
    client: dict = {}
    for name, engine in engines.items():
        _, client = engine.load_checkpoint(str(path), tag=name, load_module_strict=True)
    rng = (client or {}).get("rng") or []
    info = dist_info()
    if len(rng) == info.world_size:
        set_rng_state(rng[info.rank])
    else:
        warnings.warn(f"{path} was written by {len(rng)} rank(s) and is resumed by {info.world_size}: the random "
                      "streams restart, so the run will not equal an uninterrupted one")
    return client or {}
