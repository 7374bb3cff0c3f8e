"""Training clips: the input cut into LCM(Omega)+1-frame clips, decoded once at the finest
scale's size, and the per-scale reals built from them in memory (never re-decoded)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import HpgenError
from .pyramid import ScaleShape, build_reals, clip_starts, shapes_from_config
from .video import VideoSource, to_tensor


@dataclass
class TrainingData:
    source: VideoSource
    shapes: list[ScaleShape]
    starts: list[int]  # first input frame of each clip
    reals: list[torch.Tensor]  # per scale, (clips, 3, T, H, W) in [-1, 1]
    notes: list[str]


def input_window(source: VideoSource, data_cfg) -> tuple[int, int]:
    """(first frame, number of frames) of the input that training may use."""
    first = data_cfg.start_frame
    if first < 0 or first >= source.num_frames:
        raise HpgenError(f"data.start_frame={first} but {source.path} has {source.num_frames} frames")
    count = source.num_frames - first
    if data_cfg.max_frames:
        count = min(count, data_cfg.max_frames)
    return first, count


def plan(cfg, source: VideoSource | None = None) -> tuple[VideoSource, list[ScaleShape], list[int]]:
    """Open the input and work out the pyramid and the clips, without decoding frames."""
    source = source or VideoSource(cfg.data.video)
    shapes = shapes_from_config(cfg.pyramid, (source.info.height, source.info.width))
    first, count = input_window(source, cfg.data)
    clip = cfg.pyramid.clip_frames()
    if cfg.pyramid.image:
        starts = [first]
    else:
        try:
            starts = [first + s for s in clip_starts(count, clip, cfg.data.max_clips)]
        except HpgenError as e:
            raise HpgenError(f"{source.path}: {e}") from None
    return source, shapes, starts


def load_training_data(cfg, clip_ids: list[int] | None = None) -> TrainingData:
    """Decode the clips (all, or ``clip_ids`` for a data-parallel rank) once, at the finest size."""
    source, shapes, starts = plan(cfg)
    notes = []
    if source.info.grayscale:
        notes.append(f"{source.path} is grayscale; its channel is replicated to RGB")
    chosen = starts if clip_ids is None else [starts[i] for i in clip_ids]
    span = cfg.pyramid.clip_frames()
    fin = shapes[-1]
    clips = [to_tensor(source.read(range(s, s + span), size=(fin.height, fin.width))) for s in chosen]
    reals = build_reals(torch.stack(clips), shapes)
    return TrainingData(source, shapes, chosen, reals, notes)
