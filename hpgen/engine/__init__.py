"""The training engine: the only package that imports deepspeed or torch.distributed.

Models stay plain nn.Modules (hpgen/models); everything about *how* they train is
applied here from outside, one module per concern:

- distributed: process-group set-up (also for a plain one-process ``python`` run),
  barrier and any-rank flags;
- engines: DeepSpeed engines with a torch optimizer, bf16, ZeRO-1;
- randomness: seeding and RNG state;
- checkpoints: atomic DeepSpeed checkpoints with the RNG states of every rank;
- batchnorm_sync: BatchNorm statistics over all data-parallel ranks;
- activation_checkpointing: recomputed conv blocks with exact replay;
- channels_last, cpu_conv: memory layouts for GPU tensor cores and CPU oneDNN;
- pipeline: pipeline-parallel placement of the generator's blocks.

This file only re-exports, so callers write ``from hpgen import engine as eng``.
"""
from .activation_checkpointing import set_activation_checkpointing
from .batchnorm_sync import AllReduceBatchNorm, sync_batchnorm
from .channels_last import set_channels_last
from .checkpoints import latest_checkpoint, load_checkpoint, read_meta, save_checkpoint
from .cpu_conv import set_cpu_conv3d_layout
from .distributed import DistInfo, any_rank, barrier, device_for, dist_info, multi_rank, setup_distributed
from .engines import build_engine, ds_config, param_dtype, set_lr_factor
from .randomness import rng_state, seed_everything, set_rng_state

__all__ = [
    "AllReduceBatchNorm", "DistInfo", "any_rank", "barrier", "build_engine", "device_for", "dist_info",
    "ds_config", "latest_checkpoint", "load_checkpoint", "multi_rank", "param_dtype", "read_meta",
    "rng_state", "save_checkpoint", "seed_everything", "set_activation_checkpointing",
    "set_channels_last", "set_cpu_conv3d_layout", "set_lr_factor", "set_rng_state", "setup_distributed", "sync_batchnorm",
]
