"""What a user watches: tqdm, TensorBoard (scalars, GIF videos, png strips) and stats.jsonl.

Only rank 0 writes; other ranks get a Monitor whose methods do nothing. Videos go to
TensorBoard as animated-GIF image summaries encoded with Pillow, which needs no moviepy.
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import torch

from .video import strip, to_frames, write_gif


def peak_memory_gib(device: torch.device | str) -> float:
    """Peak memory so far: allocated on a CUDA device, the process's resident size on CPU
    (ru_maxrss: KiB on Linux, bytes on macOS)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**30 if sys.platform == "darwin" else 2**20)


class Monitor:
    def __init__(self, run_dir: Path, enabled: bool = True):
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._writer = None
        self._stats = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tb"))
            self._stats = open(self.run_dir / "stats.jsonl", "a", buffering=1)

    @property
    def writer(self):
        return self._writer

    def scalars(self, step: int, values: dict[str, float], scale: int | None = None) -> None:
        if not self.enabled:
            return
        for k, v in values.items():
            tag = k if scale is None else f"scale_{scale:02d}/{k}"
            self._writer.add_scalar(tag, v, step)
        rec = {"time": time.time(), "step": step, **({"scale": scale} if scale is not None else {}), **values}
        self._stats.write(json.dumps(rec) + "\n")

    def video(self, tag: str, video: torch.Tensor, step: int, fps: float = 8.0) -> None:
        """Animated GIF (and, for a quick glance, a png strip) of a (C, T, H, W) video."""
        if not self.enabled:
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        frames = to_frames(video)
        buf = io.BytesIO()
        write_gif(buf, frames, fps)
        h, w = frames.shape[1:3]
        img = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=buf.getvalue())
        self._writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=img)]), step)
        self._writer.add_image(tag + "_strip", np.ascontiguousarray(strip(frames, 8)), step, dataformats="HWC")

    def close(self) -> None:
        if self.enabled:
            self._writer.close()
            self._stats.close()
