"""Training clips: the input cut into LCM(Omega)+1-frame clips, and each clip's per-scale
reals. Both feeds make a scale's real the same way (``clip_reals``): the clip's frames are
decoded at the finest scale's size (the decoder resizes while decoding), the scale's frames
are picked (every r_n-th), and ``pyramid.resize`` (bilinear, antialiased when shrinking)
brings them to the scale's size. So the resident feed (decoded once, kept) and the
streaming feed (decoded per step) train on equal tensors."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import HpgenError
from .pyramid import ScaleShape, clip_starts, resize, shapes_from_config, temporal_indices
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


def clip_reals(source: VideoSource, shapes: list[ScaleShape], start: int, scales) -> dict[int, torch.Tensor]:
    """{scale: (3, T_n, H_n, W_n)} of the clip starting at input frame ``start``: the frames
    the scales use are decoded once at the finest scale's size, and each scale takes its
    frames (every r_n-th) and resizes them with ``pyramid.resize``. The one way both feeds
    make a real, so they train on equal tensors."""
    index = {n: temporal_indices(start, shapes[n]) if shapes[n].frames > 1 else [start] for n in scales}
    frames = sorted({i for idx in index.values() for i in idx})
    fin = shapes[-1]
    video = to_tensor(source.read(frames, size=(fin.height, fin.width)))  # (3, T, H, W) at the finest size
    where = {f: k for k, f in enumerate(frames)}
    return {n: resize(video[:, [where[i] for i in idx]], shapes[n].thw) for n, idx in index.items()}


def load_training_data(cfg, clip_ids: list[int] | None = None) -> TrainingData:
    """Decode the clips (all, or ``clip_ids`` for a data-parallel rank) once and keep every
    scale's real (``clip_reals``)."""
    source, shapes, starts = plan(cfg)
    notes = []
    if source.info.grayscale:
        notes.append(f"{source.path} is grayscale; its channel is replicated to RGB")
    chosen = starts if clip_ids is None else [starts[i] for i in clip_ids]
    scales = range(len(shapes))
    clips = [clip_reals(source, shapes, s, scales) for s in chosen]  # one clip's full-size frames at a time
    reals = [torch.stack([c[n] for c in clips]) for n in scales]
    return TrainingData(source, shapes, chosen, reals, notes)


# ---------------------------------------------------------------------------
# streaming: long inputs are never decoded whole

class ClipStream(torch.utils.data.Dataset):
    """Clip i -> {scale: (3, T_n, H_n, W_n)} for the scales asked for (``clip_reals``: only the
    frames those scales use are decoded, then resized exactly as the resident feed does).
    Picklable: readers open lazily per worker."""

    def __init__(self, source: VideoSource, shapes: list[ScaleShape], starts: list[int], scales: list[int]):
        self.source, self.shapes, self.starts, self.scales = source, shapes, starts, sorted(set(scales))

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[int, torch.Tensor]:
        return clip_reals(self.source, self.shapes, self.starts[i], self.scales)


class StepBatches(torch.utils.data.Sampler):
    """The clip indices of each step, for this rank: a fresh permutation of all clips per
    epoch (seeded by seed, scale and epoch), cut into global batches of
    ``per_rank * dp_size`` and sliced by rank. Determined by the step number alone, so a
    resumed run sees exactly the batches the uninterrupted one would have."""

    def __init__(self, num_clips: int, per_rank: int, dp_rank: int, dp_size: int, seed: int, scale: int,
                 first_step: int, steps: int):
        self.n, self.k, self.r, self.d = num_clips, per_rank, dp_rank, dp_size
        self.seed, self.scale, self.first, self.steps = seed, scale, first_step, steps

    def batch(self, step: int) -> list[int]:
        g = self.k * self.d
        out = []
        for j in range(step * g + self.r * self.k, step * g + (self.r + 1) * self.k):
            epoch, pos = divmod(j, self.n)
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(
                (self.seed * 1_000_003 + self.scale) * 1_000_003 + epoch))
            out.append(int(perm[pos]))
        return out

    def __iter__(self):
        for step in range(self.first, self.steps):
            yield self.batch(step)

    def __len__(self) -> int:
        return self.steps - self.first


def _worker_init(_worker_id: int) -> None:
    """Release decord readers before the worker's interpreter tears down: decord's reader
    destructor can crash during finalisation, which DataLoader reports as a segfault."""
    import atexit
    import gc

    info = torch.utils.data.get_worker_info()

    def release():
        info.dataset.source.close()
        gc.collect()

    atexit.register(release)


def collate_scales(items: list[dict[int, torch.Tensor]]) -> dict[int, torch.Tensor]:
    return {n: torch.stack([it[n] for it in items]) for n in items[0]}


def stream_loader(cfg, source: VideoSource, shapes, starts, scales, *, dp_rank: int, dp_size: int, scale: int,
                  first_step: int, steps: int):
    """DataLoader over this rank's batches of scale ``scale`` from ``first_step`` on."""
    sampler = StepBatches(len(starts), cfg.data.clips_per_step, dp_rank, dp_size, cfg.train.seed, scale,
                          first_step, steps)
    workers = cfg.data.workers
    return torch.utils.data.DataLoader(ClipStream(source, shapes, starts, scales), batch_sampler=sampler,
                                       num_workers=workers, collate_fn=collate_scales,
                                       worker_init_fn=_worker_init if workers else None,
                                       prefetch_factor=2 if workers else None,
                                       multiprocessing_context="spawn" if workers else None)


# ---------------------------------------------------------------------------
# what the trainer iterates: one list of per-scale reals per step

class ResidentFeed:
    """Every local clip in every step (the paper's summed loss): decoded once, kept. With
    ``replicated`` every rank holds every clip, and the method picks each step's clips."""

    streaming = False

    def __init__(self, cfg, dp_rank: int, dp_size: int, replicated: bool = False):
        _, _, starts = plan(cfg)
        if replicated:
            dp_rank, dp_size = 0, 1
        if len(starts) % dp_size:
            raise HpgenError(f"the input gives {len(starts)} clip(s), which cannot be split evenly over "
                             f"{dp_size} data-parallel ranks; set data.max_clips to a multiple of {dp_size}")
        k = len(starts) // dp_size
        self.data = load_training_data(cfg, list(range(dp_rank * k, (dp_rank + 1) * k)))
        self.source, self.shapes, self.num_clips = self.data.source, self.data.shapes, len(starts)
        self.notes = self.data.notes

    def preview(self) -> list[torch.Tensor]:
        return [r[0] for r in self.data.reals]

    def batches(self, n: int, first_step: int, steps: int, device):
        reals = [r.to(device) for r in self.data.reals]
        for _ in range(first_step, steps):
            yield reals


class StreamFeed:
    """``clips_per_step`` clips per rank per step, decoded by DataLoader workers at the sizes
    of the scales a phase reads (0 and n); the rest of the pyramid stays None."""

    streaming = True

    def __init__(self, cfg, dp_rank: int, dp_size: int):
        self.cfg, self.dp_rank, self.dp_size = cfg, dp_rank, dp_size
        self.source, self.shapes, self.starts = plan(cfg)
        self.num_clips = len(self.starts)
        need = cfg.data.clips_per_step * dp_size
        if need > self.num_clips:
            raise HpgenError(f"data.clips_per_step={cfg.data.clips_per_step} x {dp_size} rank(s) needs {need} clips "
                             f"but the input gives {self.num_clips}")
        self.notes = [f"{self.source.path} is grayscale; its channel is replicated to RGB"] \
            if self.source.info.grayscale else []

    def preview(self) -> list[torch.Tensor]:
        clip = ClipStream(self.source, self.shapes, self.starts[:1], list(range(len(self.shapes))))[0]
        return [clip[n] for n in range(len(self.shapes))]

    def batches(self, n: int, first_step: int, steps: int, device):
        loader = stream_loader(self.cfg, self.source, self.shapes, self.starts, [0, n], dp_rank=self.dp_rank,
                               dp_size=self.dp_size, scale=n, first_step=first_step, steps=steps)
        for batch in loader:
            yield [batch[k].to(device) if k in batch else None for k in range(len(self.shapes))]


def make_feed(cfg, dp_rank: int = 0, dp_size: int = 1, replicated: bool = False):
    """Streamed batches (``data.clips_per_step`` > 0) or resident clips; ``replicated``: the
    method holds every clip on every rank and reads clips_per_step itself (SinGAN-GIF)."""
    if replicated:
        return ResidentFeed(cfg, dp_rank, dp_size, replicated=True)
    return StreamFeed(cfg, dp_rank, dp_size) if cfg.data.clips_per_step > 0 else ResidentFeed(cfg, dp_rank, dp_size)
