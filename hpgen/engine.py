"""The training engine: the only module that imports deepspeed or torch.distributed.

Models stay plain nn.Modules (hpgen/models); everything about *how* they train is
applied here from outside: process-group set-up (also for a plain one-process
``python`` run), DeepSpeed engines with a torch optimizer (never a DeepSpeed-named one,
which would JIT-compile fused Adam for a minute), bf16, ZeRO-1, activation
checkpointing of conv blocks, gradient all-reduce, and atomic DeepSpeed checkpoints.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import socket
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn as nn

_READY = False


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_distributed(device: str = "cpu", timeout_s: int = 1800) -> DistInfo:
    """Join (or, for a plain ``python`` run, create) the process group.

    Works under ``deepspeed``, ``torchrun``, ``srun`` (SLURM_* variables) and plain
    python. On CPU the backend is gloo; DeepSpeed's shared-memory comm op is disabled
    because building it costs a minute of JIT compile for no gain at our message sizes.
    """
    global _READY
    env = os.environ
    if "RANK" not in env and "SLURM_PROCID" in env:  # srun without a launcher
        env["RANK"], env["WORLD_SIZE"] = env["SLURM_PROCID"], env["SLURM_NTASKS"]
        env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    env.setdefault("RANK", "0")
    env.setdefault("WORLD_SIZE", "1")
    env.setdefault("LOCAL_RANK", "0")
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in env:
        if int(env["WORLD_SIZE"]) > 1:
            env["MASTER_PORT"] = "29500"
        else:
            env["MASTER_PORT"] = str(_free_port())
    if device == "cpu":
        env.setdefault("DS_ACCELERATOR", "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import deepspeed

    if not _READY:
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        backend = "nccl" if device.startswith("cuda") else "gloo"
        deepspeed.init_distributed(dist_backend=backend, timeout=timedelta(seconds=timeout_s),
                                   verbose=False)
        _READY = True
    info = dist_info()
    if device.startswith("cuda"):
        torch.cuda.set_device(info.local_rank)
    return info


def dist_info() -> DistInfo:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo(0, 1, 0)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Average logged scalars over ranks (one collective for the whole dict)."""
    import torch.distributed as dist

    if not values or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def shutdown() -> None:
    global _READY
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _READY = False


# ---------------------------------------------------------------------------
# engines

def ds_config(precision: str = "fp32", zero_stage: int = 0, world_size: int = 1) -> dict:
    cfg = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "train_batch_size": world_size,
        "zero_optimization": {"stage": zero_stage},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if precision == "bf16":
        # BatchNorm buffers must follow the parameters to bf16 or the forward mixes dtypes.
        cfg["bf16"] = {"enabled": True}
        cfg["data_types"] = {"buffer_dtype": "bf16"}
    return cfg


def build_engine(module: nn.Module, param_groups: list[dict], *, precision: str = "fp32",
                 zero_stage: int = 0, betas=(0.5, 0.999)):
    """A DeepSpeed engine training ``param_groups`` of ``module`` with a torch Adam."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import deepspeed

    groups = [g for g in param_groups if g["params"]]
    opt = torch.optim.Adam(groups, betas=tuple(betas))
    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=opt,
                                           config=ds_config(precision, zero_stage, dist_info().world_size))
    return engine


def param_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


# ---------------------------------------------------------------------------
# activation checkpointing, applied from outside the model

class _Checkpointed(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if torch.is_grad_enabled() and x.requires_grad:
            from torch.utils.checkpoint import checkpoint

            return checkpoint(self.inner, x, use_reentrant=False)
        return self.inner(x)


def checkpoint_blocks(seq: nn.Sequential) -> None:
    """Recompute each conv block of ``seq`` in the backward pass instead of storing its
    activations. Parameter names change (``.inner``), so apply it after loading weights
    and strip it (``uncheckpoint_blocks``) before saving plain state dicts."""
    for i, block in enumerate(seq):
        if not isinstance(block, _Checkpointed):
            seq[i] = _Checkpointed(block)


def uncheckpoint_blocks(seq: nn.Sequential) -> None:
    for i, block in enumerate(seq):
        if isinstance(block, _Checkpointed):
            seq[i] = block.inner


# ---------------------------------------------------------------------------
# randomness

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------
# checkpoints: <run>/checkpoints/<tag>/ written under a temporary name and renamed

def save_checkpoint(ckpt_root: Path, tag: str, engines: dict, meta: dict, keep: int) -> Path:
    """DeepSpeed checkpoints of every engine plus ``meta`` (JSON) and per-rank RNG states.

    All ranks call this. The directory is written as ``.tmp-<tag>`` and renamed by rank 0
    after a barrier, then ``latest`` is replaced atomically, so a kill at any moment leaves
    the previous checkpoint intact.
    """
    info = dist_info()
    ckpt_root = Path(ckpt_root)
    tmp = ckpt_root / f".tmp-{tag}"
    final = ckpt_root / tag
    if info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    for name, engine in engines.items():
        engine.save_checkpoint(str(tmp), tag=name)
    torch.save(rng_state(), tmp / f"rng_rank{info.rank:03d}.pt")
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


def load_checkpoint(path: Path, engines: dict) -> None:
    """Restore every engine (weights, optimizer, buffers) and this rank's RNG state."""
    path = Path(path)
    for name, engine in engines.items():
        engine.load_checkpoint(str(path), tag=name, load_module_strict=True)
    rank = dist_info().rank
    f = path / f"rng_rank{rank:03d}.pt"
    if f.is_file():
        set_rng_state(torch.load(f, weights_only=False))


def module_state(path: Path, name: str) -> dict:
    """The module weights saved by engine ``name`` (for building structures before engines)."""
    f = Path(path) / name / "mp_rank_00_model_states.pt"
    return torch.load(f, map_location="cpu", weights_only=False)["module"]


def parameters(groups: Iterable[dict]) -> list[torch.Tensor]:
    return [p for g in groups for p in g["params"]]
