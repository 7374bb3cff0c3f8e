"""DeepSpeed engines with a torch optimizer (never a DeepSpeed-named one, which would
JIT-compile fused Adam for a minute), fp32 or bf16, ZeRO stage 0 or 1."""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from .distributed import dist_info


def ds_config(precision: str = "fp32", zero_stage: int = 0, world_size: int = 1, grad_clip: float = 1.0) -> dict:
    cfg = {
        # DeepSpeed clips the global gradient norm at 1.0 unless told otherwise; hpgen states it
        # (train.grad_clip) instead of inheriting it.
        "gradient_clipping": grad_clip,
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
                 zero_stage: int = 0, betas=(0.5, 0.999), grad_clip: float = 1.0):
    """A DeepSpeed engine training ``param_groups`` of ``module`` with a torch Adam."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import deepspeed

    groups = [g for g in param_groups if g["params"]]
    # foreach: each update op runs on all parameters at once (the default on CUDA; on CPU the
    # per-parameter path runs ~10 ops per tensor), so a CPU census counts the launches a GPU
    # makes. Not fused=True: with it a 2-rank run drifted 1e-3 from the 1-rank run
    # (tests/test_distributed.py, bound 1e-5); foreach and the per-parameter path give 5.8e-8.
    opt = torch.optim.Adam(groups, betas=tuple(betas), foreach=True)
    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=opt,
                                           config=ds_config(precision, zero_stage, dist_info().world_size, grad_clip))
    if dist_info().world_size == 1 and zero_stage == 0:
        # One rank: the all-reduce inside backward is a flatten + copy back of every gradient
        # (one copy_ per parameter tensor, the same values); skip it.
        engine.enable_backward_allreduce = False
    engine.hpgen_base_lrs = [g["lr"] for g in engine.optimizer.param_groups]
    return engine


def set_lr_factor(engine, factor: float) -> None:
    """Every param group of ``engine`` at ``factor`` x the learning rate it was built with
    (a resumed optimiser state carries the lr it was saved with; this resets it from the
    base, so a schedule is a function of the step alone)."""
    for group, base in zip(engine.optimizer.param_groups, engine.hpgen_base_lrs):
        group["lr"] = base * factor


def param_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype
