"""How much memory a VGPNN run needs, and whether the device has it: checked before any
frame is decoded, so that an input too large for the machine gets one line that says what
to change instead of an out-of-memory crash minutes in (or a kill from the kernel).

The estimate counts the tensors alive at the finest level, where the peak is (every
level below is at most 0.85 x 0.85 x 0.85 of its size):

* the input pyramid, and each level's first key (the level below, up-sampled);
* four videos of the output's size (the query, its up-sampled source, the vote and its
  channels-first copy);
* the value's row patches (kw x the input, ``patches.PatchGrid``);
* the search: two sets of ``search_dim`` descriptors (key and query) plus one
  projection chunk, or, with ``search_dim`` = 0, the key's and query's row patches;
* the fields: three (3, positions) int64 tensors at once (the carried field, the
  up-sampled start and the one being improved);
* the vote stack (its float budget) and the process itself.

Measured against it, CPU peak RSS of a generation of the bikes clip: 13x1080x1920
12.1 GiB (estimate 13.0 GiB), 13x540x960 3.6 GiB (estimate 3.7 GiB), 13x144x256 0.8 GiB
(estimate 1.0 GiB). It is meant to err on the high side.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from ..errors import HpgenError
from .config import PatchNNConfig
from .patches import PROJECT_CHUNK_VALUES, default_vote_budget

#: resident size of a Python process with torch imported (CPU), measured ~0.3-0.4 GB
PROCESS_BYTES = 400 * 2**20
GIB = 2**30


def _positions(thw: Sequence[int], ps: Sequence[int]) -> int:
    return math.prod(max(0, int(s) - int(p) + 1) for s, p in zip(thw, ps))


def estimate_bytes(in_thw: Sequence[int], out_thw: Sequence[int], cfg: PatchNNConfig, *, channels: int = 3,
                   device: str = "cpu") -> int:
    """Approximate peak memory (bytes) of one generation from an ``in_thw`` input to an
    ``out_thw`` output on ``device`` (cpu or cuda), float32 videos of ``channels``."""
    from .generate import pyramid_plan

    ps = [int(p) for p in cfg.patch_size]
    kw = ps[2]
    value = 4  # float32 videos
    ins, _ = pyramid_plan(in_thw, out_thw, cfg)
    v_in, v_out = math.prod(in_thw), math.prod(out_thw)
    p_in, p_out = _positions(in_thw, ps), _positions(out_thw, ps)
    pyramid = sum(math.prod(s) for s in ins) * channels * value
    total = 2 * pyramid                       # levels and their first keys
    total += 4 * v_out * channels * value     # query, its source, the vote, its copy
    total += kw * channels * v_in * value     # the value's row patches
    patch_dim = math.prod(ps) * channels
    if 0 < cfg.search_dim < patch_dim:
        stored = 4 if cfg.search_dtype == "float32" else 2
        frame_values = cfg.search_dim * (in_thw[1] - ps[1] + 1) * (in_thw[2] - ps[2] + 1)
        total += (p_in + p_out) * cfg.search_dim * stored
        total += max(PROJECT_CHUNK_VALUES, frame_values) * value  # one projection chunk
    else:
        total += kw * channels * (v_in + v_out) * value
    total += 3 * 3 * p_out * 8 + 2 * p_out * 4  # fields and distances
    total += default_vote_budget(device) * value
    if device != "cuda":
        total += PROCESS_BYTES
    return int(total)


def _cgroup_room() -> int | None:
    """Bytes left under a cgroup (v2 or v1) memory limit, e.g. a SLURM job's; None without one."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 1 << 60:  # no limit set
            return None
        return max(0, int(limit) - usage)
    return None


def available_bytes(device: torch.device | str) -> int | None:
    """Free memory on ``device``: the GPU's free memory, or on CPU the kernel's MemAvailable,
    capped by a cgroup limit; None where it cannot be read (then nothing is checked)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except OSError:
        return None
    room = _cgroup_room()
    if avail is None:
        return room
    return avail if room is None else min(avail, room)


def check_fits(in_thw: Sequence[int], out_thw: Sequence[int], cfg: PatchNNConfig, device: torch.device | str,
               *, channels: int = 3, what: str = "this run") -> None:
    """Raise a one-line HpgenError if the estimate exceeds the free memory of ``device``."""
    ps = [int(p) for p in cfg.patch_size]
    if any(int(s) < p for s, p in zip(in_thw, ps)) or any(int(s) < p for s, p in zip(out_thw, ps)):
        return  # smaller than a patch: the generator's own checks say so, more precisely
    device = torch.device(device)
    need = estimate_bytes(in_thw, out_thw, cfg, channels=channels, device=device.type)
    have = available_bytes(device)
    if have is None or need <= have:
        return
    t, h, w = (int(v) for v in in_thw)
    to, ho, wo = (int(v) for v in out_thw)
    raise HpgenError(
        f"{what} ({t}x{h}x{w} input -> {to}x{ho}x{wo} output, frames x height x width) needs about "
        f"{need / GIB:.1f} GiB but {device.type} has {have / GIB:.1f} GiB free; use fewer or smaller frames "
        f"(--input-frames, --input-height, --frames/--height/--width), another device, or --no-memory-check "
        f"to try anyway")

