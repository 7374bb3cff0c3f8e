"""Process groups: joining one under deepspeed, torchrun, srun or a plain python run, and
the few collectives the trainer needs (barrier, any-rank flags)."""
from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass
from datetime import timedelta

import torch


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
