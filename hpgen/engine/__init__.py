"""The training engine: the only package that imports deepspeed or torch.distributed.

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

import numpy as np
import torch
import torch.nn as nn

from .cpu_conv import set_cpu_conv3d_layout  # noqa: F401  (re-exported: the trainer applies it per scale)

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
        # Sites that bind one GPU per task show each task a single device.
        torch.cuda.set_device(info.local_rank % max(1, torch.cuda.device_count()))
        # Shapes are fixed within a scale, so cuDNN's per-shape algorithm search pays off.
        torch.backends.cudnn.benchmark = True
    return info


def device_for(device: str, info: DistInfo) -> torch.device:
    if device == "cuda":
        return torch.device("cuda", info.local_rank % max(1, torch.cuda.device_count()))
    return torch.device(device)


def multi_rank() -> bool:
    """True when a process group with more than one rank is up (collectives are needed)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def any_rank(flag: bool) -> bool:
    """True on every rank if it is True on any (e.g. a pre-emption signal seen by one rank),
    so all ranks stop at the same step and meet in the same checkpoint barrier."""
    import torch.distributed as dist

    if not multi_rank():
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def dist_info() -> DistInfo:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo(0, 1, 0)


def barrier() -> None:
    import torch.distributed as dist

    if multi_rank():
        dist.barrier()


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


# ---------------------------------------------------------------------------
# data parallelism: BatchNorm statistics over the global batch of clips

class AllReduceBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are summed over all data-parallel ranks, so a
    D-rank run normalises exactly as one rank holding the whole batch would (torch's
    SyncBatchNorm is GPU-only). The state-dict keys are BatchNorm's, so checkpoints and
    exported generators do not change."""

    # The data-parallel group of this rank's pipeline stage, by key into _BN_GROUPS (process
    # groups cannot be deep-copied, and a new scale's generator is a deep copy of the last).
    group_key: str | None = None

    def _check_input_dim(self, x):
        if x.dim() < 3:
            raise ValueError(f"expected at least 3D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed.nn.functional as dist_fn
        import torch.nn.functional as F

        if not self.training and self.track_running_stats:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        count = torch.tensor([x.numel() // c], dtype=torch.float32, device=x.device)
        stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims), count])
        group = _BN_GROUPS.get(self.group_key)
        stats = dist_fn.all_reduce(stats, group=group) if group is not None else dist_fn.all_reduce(stats)
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
                self.running_mean.mul_(1 - m).add_(m * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - m).add_(m * (var * n / (n - 1)).to(self.running_var.dtype))
                self.num_batches_tracked.add_(1)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.float().view(shape) + self.bias.float().view(shape)
        return y.to(x.dtype)


_BN_GROUPS: dict = {}


def sync_batchnorm(module: nn.Module, group=None) -> nn.Module:
    """Swap every BatchNorm of ``module`` for AllReduceBatchNorm (same parameters and buffers)
    whose statistics are summed over ``group`` (None: all ranks)."""
    key = None
    if group is not None:
        key = f"group{id(group)}"
        _BN_GROUPS[key] = group
    for name, child in module.named_children():
        if isinstance(child, AllReduceBatchNorm):
            child.group_key = key
        elif isinstance(child, nn.modules.batchnorm._BatchNorm):
            new = AllReduceBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)
            new.group_key = key
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            new.to(next(iter(child.state_dict().values())).device)
            setattr(module, name, new)
        else:
            sync_batchnorm(child, group)
    return module


# ---------------------------------------------------------------------------
# activation checkpointing of conv blocks, switchable per scale

class _ReplayState:
    """Makes a checkpointed block's recomputation replay its forward exactly.

    Created when the block's forward starts. Recomputation (re-entered by a double
    backward, as in the gradient penalty) must neither see nor change state that moved
    since: BatchNorm gets momentum 0 (running statistics unchanged, batch counter
    restored), and spectral-norm vectors u, v are set back to their values at this
    forward, so the power iteration and sigma replay bit for bit; the current vectors
    are put back afterwards."""

    def __init__(self, block: nn.Module):
        from torch.nn.utils.parametrizations import _SpectralNorm

        self.bns = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.sns = [m for m in block.modules() if isinstance(m, _SpectralNorm)]
        self.at_forward = [(sn._u.clone(), sn._v.clone()) for sn in self.sns]
        self.saved: list = []

    def __enter__(self):
        self.saved.append(([(bn.momentum, None if bn.num_batches_tracked is None else bn.num_batches_tracked.clone())
                            for bn in self.bns], [(sn._u.clone(), sn._v.clone()) for sn in self.sns]))
        for bn in self.bns:
            bn.momentum = 0.0
        with torch.no_grad():
            for sn, (u, v) in zip(self.sns, self.at_forward):
                sn._u.copy_(u)
                sn._v.copy_(v)
        return self

    def __exit__(self, *exc):
        bn_state, sn_state = self.saved.pop()
        for bn, (mom, nbt) in zip(self.bns, bn_state):
            bn.momentum = mom
            if nbt is not None:
                bn.num_batches_tracked.copy_(nbt)
        with torch.no_grad():
            for sn, (u, v) in zip(self.sns, sn_state):
                sn._u.copy_(u)
                sn._v.copy_(v)
        return False


def _recompute_context(block: nn.Module):
    import contextlib

    return contextlib.nullcontext(), _ReplayState(block)


def _checkpointed_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    from torch.utils.checkpoint import checkpoint

    inner = type(block).forward
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in block.parameters())):
        return checkpoint(inner, block, x, use_reentrant=False, context_fn=lambda: _recompute_context(block))
    return inner(block, x)


def set_activation_checkpointing(module: nn.Module, enabled: bool) -> None:
    """Recompute every ConvBlock of ``module`` in the backward pass instead of storing its
    activations (or undo that). The forward is patched per instance, so parameter names,
    state dicts and checkpoints are unchanged."""
    import functools

    from ..models.blocks import ConvBlock

    for m in module.modules():
        if isinstance(m, ConvBlock):
            if enabled:
                m.forward = functools.partial(_checkpointed_forward, m)
            elif "forward" in m.__dict__:
                del m.forward


# ---------------------------------------------------------------------------
# memory layout

def _to_channels_last(module: nn.Module, args):
    x = args[0]
    if x.dim() == 5 and not x.is_contiguous(memory_format=torch.channels_last_3d):
        return (x.contiguous(memory_format=torch.channels_last_3d), *args[1:])
    return None


def set_channels_last(module: nn.Module, enabled: bool) -> None:
    """Feed every 3D convolution of ``module`` N,T,H,W,C (channels_last_3d) activations, the
    layout GPU tensor cores use natively, instead of letting cuDNN transpose NCDHW around
    each bf16 convolution. Done with forward pre-hooks on the convolutions, because DeepSpeed's
    bf16 optimizer re-flattens the weights into contiguous buffers (a weight-side format would
    not survive), and the models stay layout-agnostic."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            # Found by identity rather than by handle: a new scale's generator is a deep copy,
            # and a copied handle would point at the copied-from hook table.
            for key in [k for k, fn in m._forward_pre_hooks.items() if fn is _to_channels_last]:
                del m._forward_pre_hooks[key]
            if enabled:
                m.register_forward_pre_hook(_to_channels_last)
