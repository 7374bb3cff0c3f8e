"""Contact sheets: one PNG that shows an input and its samples at a glance.

    write_contact_sheet(path, [input, sample0, sample1, ...], labels=["input", "0", "1"])

Each row is one video, its frames laid out left to right (``max_frames`` evenly spaced
ones when it has more); rows are stacked top to bottom with a few pixels between them.
Every row is resized to the first row's frame size, so samples of another size line up
under the input (``frame_height`` shrinks them all further, aspect kept). Optional labels
are drawn in a margin on the left. The image goes out through ``hpgen.video.write_video``
(the one image writer).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .errors import HpgenError

ROW_GAP = 4      # px between rows
FRAME_GAP = 2    # px between frames of a row
BACKGROUND = 24  # dark grey: gaps stay visible against black or white frames
#: frame height of the sheets the commands write: 8 full-HD frames a row would make a
#: 15360 px wide PNG, too big to glance at
SHEET_FRAME_HEIGHT = 270


def frame_indices(num_frames: int, max_frames: int = 8) -> list[int]:
    """``max_frames`` evenly spaced frame indices (first and last included), or all frames."""
    if max_frames < 1:
        raise HpgenError(f"max_frames must be >= 1, got {max_frames}")
    if num_frames <= max_frames:
        return list(range(num_frames))
    return np.linspace(0, num_frames - 1, max_frames).round().astype(int).tolist()


def _row_frames(row: torch.Tensor, max_frames: int) -> torch.Tensor:
    """The frames a row shows, (3, t, H, W) float on the CPU, from a (3, T, H, W),
    (1, 3, T, H, W) or (3, H, W) tensor in [-1, 1]; frames are picked before the copy."""
    v = row.detach()
    if v.dim() == 5 and v.shape[0] == 1:
        v = v[0]
    if v.dim() == 3:
        v = v.unsqueeze(1)
    if v.dim() != 4 or v.shape[0] != 3:
        raise HpgenError(f"a contact-sheet row must be a (3, T, H, W) video, got shape {tuple(row.shape)}")
    return v[:, frame_indices(v.shape[1], max_frames)].float().cpu()


def _label_margin(labels: Sequence[str] | None, font) -> int:
    if not labels:
        return 0
    from PIL import Image, ImageDraw

    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    return 8 + max(int(draw.textlength(str(s), font=font)) for s in labels)


def contact_sheet(rows: Sequence[torch.Tensor], labels: Sequence[str] | None = None,
                  max_frames: int = 8, frame_height: int | None = None) -> np.ndarray:
    """The sheet as uint8 (H, W, 3); ``frame_height`` (optional) caps the frames' height."""
    from PIL import Image, ImageDraw, ImageFont

    from .pyramid import resize
    from .video import to_frames

    if not rows:
        raise HpgenError("a contact sheet needs at least one video")
    if labels is not None and len(labels) != len(rows):
        raise HpgenError(f"{len(labels)} labels for {len(rows)} contact-sheet rows")
    videos = [_row_frames(r, max_frames) for r in rows]
    h, w = videos[0].shape[2:]
    if frame_height and frame_height < h:
        h, w = int(frame_height), max(1, round(w * frame_height / h))
    strips = []
    for v in videos:
        if tuple(v.shape[2:]) != (h, w):
            v = resize(v, (v.shape[1], h, w))
        strips.append(to_frames(v))  # (t, h, w, 3) uint8
    cols = max(len(s) for s in strips)
    font = ImageFont.load_default()
    margin = _label_margin(labels, font)
    sheet = np.full((len(strips) * (h + ROW_GAP) - ROW_GAP, margin + cols * (w + FRAME_GAP) - FRAME_GAP, 3),
                    BACKGROUND, dtype=np.uint8)
    for r, frames in enumerate(strips):
        y = r * (h + ROW_GAP)
        for c, f in enumerate(frames):
            x = margin + c * (w + FRAME_GAP)
            sheet[y:y + h, x:x + w] = f
    if labels:
        im = Image.fromarray(sheet)
        draw = ImageDraw.Draw(im)
        for r, text in enumerate(labels):
            draw.text((4, r * (h + ROW_GAP) + 2), str(text), fill=(235, 235, 235), font=font)
        sheet = np.asarray(im)
    return sheet


def write_contact_sheet(path, rows: Sequence[torch.Tensor], labels: Sequence[str] | None = None,
                        max_frames: int = 8, frame_height: int | None = None) -> Path:
    """Write the contact sheet of ``rows`` (videos (3, T, H, W) in [-1, 1], the input first)
    to ``path`` (.png); returns the path."""
    from .video import write_video

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise HpgenError(f"a contact sheet is a .png, not '{path.suffix}' ({path})")
    return write_video(path, contact_sheet(rows, labels, max_frames, frame_height)[None])


def read_row(path, max_frames: int = 8) -> torch.Tensor:
    """Only the frames of the video at ``path`` that a sheet row shows, as (3, t, H, W)."""
    from .video import VideoSource, to_tensor

    src = VideoSource(path)
    return to_tensor(src.read(frame_indices(src.num_frames, max_frames)))


def write_samples_sheet(path, samples: Sequence, source=None, max_frames: int = 8,
                        frame_height: int | None = SHEET_FRAME_HEIGHT) -> Path:
    """Sheet of sample files (paths, in order) under their input, labelled: ``source`` a
    video file, a (3, T, H, W) tensor, or None (samples only)."""
    rows, labels = [], []
    if source is not None:
        rows.append(source if isinstance(source, torch.Tensor) else read_row(source, max_frames))
        labels.append("input")
    for i, p in enumerate(samples):
        rows.append(read_row(p, max_frames))
        labels.append(f"sample {i}")
    return write_contact_sheet(path, rows, labels, max_frames, frame_height)
