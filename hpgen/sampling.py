"""Random videos from a trained run: only ``RUN_DIR/generator.pt`` is read."""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from .engine.cpu_conv import set_cpu_conv3d_layout
from .errors import HpgenError
from .export import load_generator
from .inference import InferenceContext
from .methods import get_method
from .pyramid import rescale_shapes
from .video import output_paths, write_video


def load_model(payload: dict, device):
    """(method class, generator stack in eval mode) from a generator.pt payload."""
    method = get_method(payload["method"])
    model = method.model_from_args(payload["model_args"], payload["num_scales"])
    model.load_state_dict(payload["state_dict"])
    # eval(): BatchNorm uses its running statistics, where the model keeps them (model.norm_stats)
    return method, set_cpu_conv3d_layout(model.to(device).eval(), torch.device(device).type == "cpu")


def min_side(payload: dict) -> tuple[int, str]:
    """Smallest frame side a sample's coarsest scale may have, and why: the generators'
    receptive field (num_blocks x (kernel - 1) + 1), or the trained coarsest side where
    training itself went below it; never under 3."""
    m = payload["config"]["model"]
    rf = m["num_blocks"] * (m["kernel"] - 1) + 1
    trained = min(min(s.height, s.width) for s in payload["shapes"])
    if trained < rf:
        return max(3, trained), " (the coarsest size it was trained at)"
    return rf, " (the generators' receptive field)"


def sample_run(run_dir: Path, num: int, out: Path, seed: int = 0, frames: int | None = None,
               height: int | None = None, width: int | None = None, device: str = "auto",
               overwrite: bool = False, progress: bool = True, tile: int = 0, fmt: str | None = None) -> list[Path]:
    """Write ``num`` samples as ``video.output_paths(out, num, fmt)`` names them (OUT/sample_000.mp4,
    ... by default) and return this process's files."""
    if num < 1:
        raise HpgenError(f"--num must be >= 1, got {num}")
    payload = load_generator(Path(run_dir))
    shapes = payload["shapes"]
    if frames is not None or height is not None or width is not None:
        side, why = min_side(payload)
        shapes = rescale_shapes(shapes, frames, height, width, min_side=side, why=why)
    ctx = InferenceContext.create(device)
    targets = output_paths(out, num, fmt).videos
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise HpgenError(f"{existing[0]} already exists; pass --overwrite or choose another --out")
    if tile < 0:
        raise HpgenError("--tile must be >= 0")
    method, model = load_model(payload, ctx.device)
    fps = payload["fps"] / shapes[-1].rate
    written = []
    mine = ctx.share(list(range(num)))
    for i in tqdm(mine, desc="sampling", disable=not (progress and ctx.is_main)):
        # One generator per sample index: sample i is the same whatever the process count.
        g = torch.Generator(device=ctx.device).manual_seed(seed * 1_000_003 + i)
        with torch.no_grad():
            video = method.sample(model, shapes, batch=1, generator=g, tile=tile)[0].float()
        written.append(write_video(targets[i], video, fps=fps))
    ctx.wait()
    return written
