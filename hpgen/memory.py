"""How much memory training needs at its largest scale, and whether the device has it:
checked by ``hpgen train`` before any clip is decoded (as ``hpgen patchnn`` does with
``patchnn.budget``), so that a run too large for the machine gets one line naming the keys
that shrink it, instead of an out-of-memory crash at the last scale hours in.

The estimate, per scale this rank trains, is the largest of

* training: the voxels of one step (clips per rank x frames x height x width, or the crop
  at GAN scales) x channels x conv blocks x ``BYTES_PER_BLOCK_CHANNEL_VOXEL``, scaled by
  ``PRECISION_FACTOR`` for bf16 and activation checkpointing, plus the RGB-sized tensors;
* the end-of-scale snapshot: one whole-frame sample without gradients
  (``SNAPSHOT_BYTES_PER_CHANNEL_VOXEL``), or one tile of it with ``train.sample_tile``;

plus the resident reals (every scale of every kept clip, float32) and, on CPU, the
process itself. The constants come from docs/BENCHMARKS.md (paper preset, 64 channels,
7 blocks, on an H100): 16.5 GiB fp32 at 13x256x602, 8.5 GiB bf16, 11.3 GiB fp32 with
checkpointing, 5.8 GiB bf16 with checkpointing; a 32x1080x1920 whole-frame sample 67 GiB
fp32 and 37 GiB bf16. It is a projection from those runs, not a measurement of this one;
``--no-memory-check`` skips it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .patchnn.budget import GIB, available_bytes

#: activations + gradients (+ the gradient penalty's double backward) per conv block,
#: channel and voxel of a training step, fp32: 16.5 GiB / (2.0M voxels x 64 ch x 7 blocks)
BYTES_PER_BLOCK_CHANNEL_VOXEL = 20.0
#: RGB-sized tensors per voxel of a step (reals, fakes, noise, reconstructions, their grads)
RGB_BYTES_PER_VOXEL = 400
#: (precision, activation checkpointing) -> factor on the activations (same benchmark)
PRECISION_FACTOR = {("fp32", False): 1.0, ("fp32", True): 0.68, ("bf16", False): 0.51, ("bf16", True): 0.35}
#: a whole-frame sample without gradients, per channel and voxel: 67 GiB / (66M voxels x 64 ch)
SNAPSHOT_BYTES_PER_CHANNEL_VOXEL = {"fp32": 17.0, "bf16": 9.5}
#: resident size of a training process on CPU (torch, DeepSpeed, TensorBoard), measured ~0.6-0.8 GiB
PROCESS_BYTES = int(0.8 * GIB)


@dataclass(frozen=True)
class Estimate:
    bytes: int
    scale: int
    what: str  # the step or snapshot that sets the peak, in words
    snapshot: bool = False  # the peak is the end-of-scale snapshot, not a training step


def estimate_training_bytes(cfg, shapes, clips_per_rank: int, device_type: str = "cpu",
                            scales=None) -> Estimate:
    """Peak bytes of training ``shapes`` with ``cfg`` on one rank that trains ``scales``
    (default: all) on ``clips_per_rank`` clips per step (see the module docstring)."""
    m, tr, d = cfg.model, cfg.train, cfg.dist
    gan_from = tr.vae_scales if tr.method == "hpvaegan" else 0
    scales = range(len(shapes)) if scales is None else scales
    resident = 0 if cfg.data.clips_per_step else sum(s.voxels for s in shapes) * 3 * 4 * clips_per_rank
    best = Estimate(0, 0, "")
    for n in scales:
        s = shapes[n]
        h, w = s.height, s.width
        cropped = n >= gan_from and (tr.crop_height or tr.crop_width)
        if cropped:
            h, w = min(h, tr.crop_height or h), min(w, tr.crop_width or w)
        vox = clips_per_rank * s.frames * h * w
        ckpt = bool(d.checkpoint_min_voxels) and s.voxels >= d.checkpoint_min_voxels
        act = vox * m.channels * m.num_blocks * BYTES_PER_BLOCK_CHANNEL_VOXEL * PRECISION_FACTOR[(d.precision, ckpt)]
        step = act + vox * RGB_BYTES_PER_VOXEL
        snap_vox = s.frames * (min(tr.sample_tile, s.height) * min(tr.sample_tile, s.width) if tr.sample_tile
                               else s.height * s.width)
        snap = snap_vox * m.channels * SNAPSHOT_BYTES_PER_CHANNEL_VOXEL[d.precision]
        size = f"{s.frames}x{h}x{w}" + (" crops" if cropped else "")
        what = (f"scale {n}, {clips_per_rank} clip(s) of {size} per step, {d.precision}"
                + (", activation checkpointing" if ckpt else "")) if step >= snap else \
            f"the end-of-scale snapshot at scale {n} ({s.frames}x{s.height}x{s.width} whole frames)"
        total = int(max(step, snap) + resident + (PROCESS_BYTES if device_type != "cuda" else 0))
        if total > best.bytes:
            best = Estimate(total, n, what, snap > step)
    return best


def shrink_keys(cfg, est: Estimate, clips_per_rank: int) -> list[str]:
    """The config keys that would shrink this run's peak, leaving out those already in use."""
    tr, d = cfg.train, cfg.dist
    keys = []
    if est.snapshot and not tr.sample_tile and tr.method == "hpvaegan":
        keys.append("train.sample_tile (tiled end-of-scale snapshots)")
    if not est.snapshot and not (tr.crop_height or tr.crop_width):
        keys.append("train.crop_height/train.crop_width (GAN scales on crops)")
    if d.precision != "bf16":
        keys.append("dist.precision=bf16")
    if not est.snapshot and not d.checkpoint_min_voxels:
        keys.append("dist.checkpoint_min_voxels=1 (activation checkpointing)")
    if not est.snapshot and clips_per_rank > 1:
        keys.append("data.clips_per_step=1 or data.max_clips (fewer clips per step)")
    keys.append("pyramid.max_height (smaller frames)")
    return keys


def _own_rss() -> int:
    """This process's resident bytes (already part of its peak, and not of MemAvailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def check_training_fits(cfg, shapes, clips_per_rank: int, device, scales=None,
                        ranks_on_host: int = 1) -> tuple[bool, str]:
    """(fits, one-line message). On CPU, ``ranks_on_host`` processes share the memory. Where
    the device's free memory cannot be read, it fits."""
    import torch

    device = torch.device(device)
    est = estimate_training_bytes(cfg, shapes, clips_per_rank, device.type, scales)
    have = available_bytes(device)
    if have is None:
        return True, ""
    need = est.bytes
    if device.type == "cpu":
        need *= max(1, ranks_on_host)
        have += _own_rss()
    if need <= have:
        return True, ""
    ranks = f" x {ranks_on_host} ranks on this host" if device.type == "cpu" and ranks_on_host > 1 else ""
    return False, (f"training needs about {need / GIB:.1f} GiB at its peak ({est.what}{ranks}) but {device.type} has "
                   f"{have / GIB:.1f} GiB free; shrink the run with {', '.join(shrink_keys(cfg, est, clips_per_rank))}; or pass "
                   f"--no-memory-check to try anyway")

