"""The spatio-temporal pyramid shared by every method.

Shapes (HP-VAE-GAN Sec. 3.2 and appendix A.1)
    Scale 0 is the coarsest, scale N the finest. The shorter frame side (the
    height for landscape video, as in the paper) is ``min_size`` at scale 0 and
    grows by ``factor`` per scale until it reaches ``max_size`` (or the input's
    own size); the other side keeps the input's aspect ratio. Temporally, the
    training clip is LCM(Omega)+1 input frames; scale n keeps every r_n-th
    frame, where r_n indexes linearly from max(Omega) at scale 0 to min(Omega)
    at scale N, so scale 0 has LCM/max+1 frames (4 for Omega={1,2,3,4}) and
    scale N has LCM/min+1 (13). Because every rate divides the LCM, the first
    and last frames of the clip are present at every scale.

Resampling
    ``resize`` changes (T, H, W) separably: linear in time with aligned corners,
    so the first and last frames map onto themselves exactly (and the aligned
    frame times of different rates interpolate correctly), and bilinear in
    space without aligned corners, antialiased when shrinking.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from .errors import HpgenError


@dataclass(frozen=True)
class ScaleShape:
    frames: int
    height: int
    width: int
    rate: int  # temporal sampling rate: keep every rate-th frame of the full-rate clip

    @property
    def thw(self) -> tuple[int, int, int]:
        return (self.frames, self.height, self.width)

    @property
    def voxels(self) -> int:
        return self.frames * self.height * self.width


def scale_rates(rates: Sequence[int], num_scales: int) -> list[int]:
    """Rate per scale: linear indexing from the largest rate (scale 0) to the smallest (scale N)."""
    ordered = sorted(set(int(r) for r in rates), reverse=True)
    if num_scales == 1:
        return [ordered[-1]]
    k = len(ordered) - 1
    return [ordered[round(n * k / (num_scales - 1))] for n in range(num_scales)]


def scale_sizes(input_hw: tuple[int, int], num_scales: int, min_size: int, max_size: int,
                factor: float, side: str = "shorter") -> list[tuple[int, int]]:
    """(H, W) per scale: the measured side (the ``shorter`` one, as the paper's heights, or
    the ``longer`` one, as the authors' code sizes frames by width) grows by ``factor`` from
    ``min_size``, capped at ``max_size`` and at the input's own; the aspect ratio of the
    input is kept."""
    h_in, w_in = input_hw
    measured_is_h = (h_in <= w_in) == (side == "shorter")
    side_in = h_in if measured_is_h else w_in
    cap = min(max_size, side_in)
    if min_size > cap:
        raise HpgenError(f"input of {h_in}x{w_in} is smaller than the coarsest scale needs "
                         f"({side} side {side_in} < min size {min_size})")
    sizes = []
    size = float(min_size)
    for _ in range(num_scales):
        s = min(round(size), cap)
        if measured_is_h:
            sizes.append((s, max(1, round(s * w_in / h_in))))
        else:
            sizes.append((max(1, round(s * h_in / w_in)), s))
        size *= factor
    return sizes


def pyramid_shapes(input_hw: tuple[int, int], *, num_scales: int, min_size: int, max_size: int,
                   factor: float, rates: Sequence[int], image: bool = False,
                   frames: int = 0, side: str = "shorter") -> list[ScaleShape]:
    sizes = scale_sizes(input_hw, num_scales, min_size, max_size, factor, side)
    if image:
        return [ScaleShape(1, h, w, 1) for h, w in sizes]
    if frames:  # SinGAN-GIF: the same full-rate frames at every scale (a spatial-only pyramid)
        return [ScaleShape(frames, h, w, 1) for h, w in sizes]
    lcm = math.lcm(*rates)
    return [ScaleShape(lcm // r + 1, h, w, r) for (h, w), r in zip(sizes, scale_rates(rates, num_scales))]


def shapes_from_config(pyr, input_hw: tuple[int, int]) -> list[ScaleShape]:
    """``pyr`` is a PyramidConfig (or anything with the same fields)."""
    return pyramid_shapes(input_hw, num_scales=pyr.num_scales, min_size=pyr.min_height,
                          max_size=pyr.max_height, factor=pyr.scale_factor, rates=pyr.rates,
                          image=pyr.image, frames=getattr(pyr, "frames", 0), side=getattr(pyr, "side", "shorter"))


def rescale_shapes(shapes: Sequence[ScaleShape], frames: int | None = None,
                   height: int | None = None, width: int | None = None, min_side: int = 3, why: str = "") -> list[ScaleShape]:
    """Shapes for sampling at another size: every scale is scaled by the same ratios as the
    finest, so a generator sees the same relative geometry it was trained on. A pyramid
    with the same frames at every scale (SinGAN-GIF) keeps them equal. A size whose
    coarsest scale has a side under ``min_side`` pixels is a user error that names the
    smallest size that works."""
    for name, v in (("frames", frames), ("height", height), ("width", width)):
        if v is not None and v < 1:
            raise HpgenError(f"--{name} must be >= 1, got {v}")
    fin = shapes[-1]
    if fin.frames == 1 and frames not in (None, 1):
        raise HpgenError("this generator was trained on an image; it makes single frames (--frames 1)")
    rt = (frames / fin.frames) if frames else 1.0
    rh = (height / fin.height) if height else 1.0
    rw = (width / fin.width) if width else (rh if height and not width else 1.0)
    if height and not width:
        rw = rh
    if width and not height:
        rh = rw
    fixed_frames = len({s.frames for s in shapes}) == 1  # e.g. SinGAN-GIF: same T at every scale
    out = []
    for s in shapes:
        if fixed_frames and frames:
            t = frames
        else:
            t = max(1, round((s.frames - 1) * rt) + 1) if s.frames > 1 else 1
        out.append(ScaleShape(t, max(1, round(s.height * rh)), max(1, round(s.width * rw)), s.rate))
    last = out[-1]
    out[-1] = ScaleShape(frames or last.frames, height or last.height, width or last.width, last.rate)
    small = min(out, key=lambda s: min(s.height, s.width))
    if min(small.height, small.width) < min_side:
        # the smallest output with the same aspect: the trained coarsest side grown to min_side
        k = min_side / min(min(s.height, s.width) for s in shapes)
        fit = f"{math.ceil(fin.height * k)}x{math.ceil(fin.width * k)}"
        raise HpgenError(f"an output of {out[-1].height}x{out[-1].width} makes the coarsest scale {small.height}x"
                         f"{small.width} pixels, smaller than {min_side}{why}; "
                         f"use at least about {fit} (height x width)")
    return out


def clip_starts(num_frames: int, clip_frames: int, max_clips: int = 0) -> list[int]:
    """Start indices of the non-overlapping full-rate clips a long input is cut into."""
    if num_frames < clip_frames:
        raise HpgenError(f"the clip has {num_frames} frames but the pyramid needs at least "
                         f"{clip_frames} (LCM of the rates + 1)")
    starts = list(range(0, num_frames - clip_frames + 1, clip_frames))
    return starts[:max_clips] if max_clips else starts


def temporal_indices(start: int, shape: ScaleShape) -> list[int]:
    """Input frame indices of scale ``shape`` within the clip starting at ``start``."""
    return [start + i * shape.rate for i in range(shape.frames)]


def _lerp_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Linear resampling of (B, C, T, H, W) along T with the end frames kept (align_corners).

    Written as two frame gathers and a lerp rather than F.interpolate(mode="linear") on a
    (B, C*H*W, T) view: the CUDA kernel of the latter parallelises over the few output
    frames only (pytorch/pytorch PR #180885) and took most of a full-HD VGPNN run (60 of
    80 s on an H100)."""
    t = x.shape[2]
    pos = torch.arange(frames, device=x.device, dtype=torch.float64) * ((t - 1) / (frames - 1) if frames > 1 else 0.0)
    lo = pos.floor().clamp(max=t - 1).long()
    hi = (lo + 1).clamp(max=t - 1)
    w = (pos - lo).to(x.dtype if x.is_floating_point() else torch.float32).view(1, 1, -1, 1, 1)
    a, b = x.index_select(2, lo), x.index_select(2, hi)
    return a + (b - a) * w


def resize(video: torch.Tensor, thw: Sequence[int]) -> torch.Tensor:
    """Resize a (B, C, T, H, W) or (C, T, H, W) video to ``thw``; see the module docstring."""
    squeeze = video.dim() == 4
    x = video.unsqueeze(0) if squeeze else video
    b, c, t, h, w = x.shape
    T, H, W = (int(v) for v in thw)
    if t != T:
        if t == 1:
            x = x.expand(b, c, T, h, w)
        else:
            x = _lerp_frames(x, T)
    if (h, w) != (H, W):
        y = x.permute(0, 2, 1, 3, 4).reshape(b * T, c, h, w)
        shrink = H < h or W < w
        y = F.interpolate(y, size=(H, W), mode="bilinear", align_corners=False, antialias=shrink)
        x = y.reshape(b, T, c, H, W).permute(0, 2, 1, 3, 4)
    x = x.contiguous()
    return x.squeeze(0) if squeeze else x


Box = tuple[int, int, int, int]  # rows [y0, y1) and columns [x0, x1) of a frame


def _bilinear_taps(out_lo: int, out_hi: int, src: int, out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices (i0, i1) and weight of i1 for output positions [out_lo, out_hi) of a
    ``src`` -> ``out`` bilinear up-sampling without aligned corners (PyTorch's rule)."""
    pos = ((torch.arange(out_lo, out_hi, dtype=torch.float64) + 0.5) * (src / out) - 0.5).clamp_min(0)
    i0 = pos.floor().long().clamp(max=src - 1)
    return i0, (i0 + 1).clamp(max=src - 1), pos - i0


def source_box(box: Box, src_hw: Sequence[int], out_hw: Sequence[int]) -> Box:
    """The rows and columns of a ``src_hw`` frame that ``resize`` to ``out_hw`` reads to make
    the pixels of ``box`` (up-sampling or equal size)."""
    y0, y1, x0, x1 = box
    ys, _, _ = _bilinear_taps(y0, y1, src_hw[0], out_hw[0])
    xs, _, _ = _bilinear_taps(x0, x1, src_hw[1], out_hw[1])
    return (int(ys[0]), min(int(ys[-1]) + 2, src_hw[0]), int(xs[0]), min(int(xs[-1]) + 2, src_hw[1]))


def resize_window(src: torch.Tensor, src_box: Box, src_hw: Sequence[int], thw: Sequence[int], box: Box) -> torch.Tensor:
    """``resize(full, thw)[..., y0:y1, x0:x1]`` for ``box``, from only the ``src_box`` part of
    ``full`` (``src`` is (B, C, t, rows, cols) of a frame of ``src_hw``; ``src_box`` must
    contain ``source_box(box, ...)``). For training on crops of a large frame without
    computing the whole frame below them. Up-sampling or equal sizes only: shrinking is
    antialiased and reads a wider footprint."""
    T, H, W = (int(v) for v in thw)
    if H < src_hw[0] or W < src_hw[1]:
        raise ValueError("resize_window up-samples only")
    x = _lerp_frames(src, T) if src.shape[2] != T and src.shape[2] > 1 else src.expand(-1, -1, T, -1, -1)
    y0, y1, x0, x1 = box
    i0, i1, wy = _bilinear_taps(y0, y1, src_hw[0], H)
    j0, j1, wx = _bilinear_taps(x0, x1, src_hw[1], W)
    dev, dt = x.device, x.dtype
    wy = wy.to(dev, dt).view(1, 1, 1, -1, 1)
    wx = wx.to(dev, dt).view(1, 1, 1, 1, -1)
    a, b = x.index_select(3, (i0 - src_box[0]).to(dev)), x.index_select(3, (i1 - src_box[0]).to(dev))
    x = a + (b - a) * wy
    a, b = x.index_select(4, (j0 - src_box[2]).to(dev)), x.index_select(4, (j1 - src_box[2]).to(dev))
    return (a + (b - a) * wx).contiguous()


def build_reals(clip: torch.Tensor, shapes: Sequence[ScaleShape]) -> list[torch.Tensor]:
    """Per-scale real videos from full-rate clips (C, T_full, H, W) or (B, C, T_full, H, W),
    decoded once.

    Temporally frames are subsampled (never interpolated: the paper wants frames
    free of blending); spatially they are resized with antialiasing.
    """
    out = []
    for s in shapes:
        idx = temporal_indices(0, s) if s.frames > 1 else [0]
        out.append(resize(clip[..., idx, :, :], (s.frames, s.height, s.width)))
    return out


def format_table(shapes: Sequence[ScaleShape], extra: dict[str, Sequence] | None = None) -> str:
    cols = ["scale", "frames", "height", "width", "rate", "voxels"] + list(extra or {})
    rows = []
    for n, s in enumerate(shapes):
        row = [n, s.frames, s.height, s.width, s.rate, s.voxels] + [v[n] for v in (extra or {}).values()]
        rows.append([str(v) for v in row])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    fmt = lambda r: "  ".join(v.rjust(wd) for v, wd in zip(r, widths))
    return "\n".join([fmt(cols)] + [fmt(r) for r in rows])


# ---------------------------------------------------------------------------
# geometric pyramids with separate spatial and temporal factors (VGPNN, patch-NN)

def geometric_shapes(thw: Sequence[int], *, spatial_factor: float, temporal_factor: float,
                     min_hw: int, min_frames: int, max_levels: int = 0) -> list[tuple[int, int, int]]:
    """(T, H, W) per level, coarsest first, for a pyramid that shrinks space by
    ``spatial_factor`` and time by ``temporal_factor`` per level (VGPNN Sec. 2).

    Each dimension stops shrinking at its floor (the shorter frame side at ``min_hw``, the
    frame count at ``min_frames``; a dimension already below its floor keeps its size), and
    the pyramid ends when both have reached their floors, so time and space may need a
    different number of levels. The finest level is ``thw`` itself. ``max_levels`` (>0)
    keeps only that many of the finest levels.
    """
    T, H, W = (int(v) for v in thw)
    if spatial_factor >= 1.0 or temporal_factor > 1.0 or spatial_factor <= 0 or temporal_factor <= 0:
        raise HpgenError("pyramid factors must be in (0, 1) (spatial) and (0, 1] (temporal)")
    short = min(H, W)
    levels: list[tuple[int, int, int]] = []
    k = 0
    while True:
        t = T if T <= min_frames else max(min_frames, round(T * temporal_factor ** k))
        if short <= min_hw:
            h, w = H, W
        else:
            sc = max(spatial_factor ** k, min_hw / short)
            h, w = max(1, round(H * sc)), max(1, round(W * sc))
        if not levels or levels[-1] != (t, h, w):
            levels.append((t, h, w))
        time_done = t <= min_frames or temporal_factor == 1.0
        space_done = min(h, w) <= min_hw
        if time_done and space_done:
            break
        k += 1
    levels.reverse()
    return levels[-max_levels:] if max_levels else levels


def matched_shapes(ref_shapes: Sequence[Sequence[int]], out_thw: Sequence[int],
                   min_thw: Sequence[int] = (1, 1, 1)) -> list[tuple[int, int, int]]:
    """Shapes of an output pyramid that mirrors ``ref_shapes`` (coarsest first) but ends at
    ``out_thw``: every level keeps the reference level's ratio to its finest level, per
    dimension, and never falls below ``min_thw`` (e.g. the patch size)."""
    fin = ref_shapes[-1]
    out = []
    for s in ref_shapes:
        out.append(tuple(max(int(m), round(o * r / f)) for o, r, f, m in zip(out_thw, s, fin, min_thw)))
    out[-1] = tuple(int(v) for v in out_thw)
    return out
