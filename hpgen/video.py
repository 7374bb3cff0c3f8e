"""Video input and output: the only decoder and encoder code in hpgen.

Reading
    ``VideoSource(path)`` probes a video (mp4/avi/mov/mkv/webm through decord,
    gif through Pillow, a folder of numbered frames, or a single image) and
    decodes requested frame indices on demand, optionally resized at decode
    time. Decord readers are opened lazily and per process, because a reader
    created before DataLoader workers fork hangs or kills them.

Writing
    ``write_video(path, frames, fps)`` picks the format from the suffix:
    H.264 mp4 (yuv420p; an odd height or width loses its last row or column,
    ``write_mp4``) through PyAV, gif through Pillow, png as a strip of frames
    side by side.

Frames are uint8 numpy arrays of shape (T, H, W, 3) in RGB at the I/O boundary;
models see float tensors (C, T, H, W) in [-1, 1] (``to_tensor``/``to_frames``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .errors import HpgenError

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
DEFAULT_FPS = 24.0


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    height: int
    width: int
    fps: float
    grayscale: bool = False


def _numbered_frames(folder: Path) -> list[Path]:
    """Frames of a folder, ordered by the last number in their names; gaps are errors."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise HpgenError(f"frame folder {folder} holds no image files")
    numbered = []
    for p in files:
        m = re.findall(r"\d+", p.stem)
        if not m:
            raise HpgenError(f"frame folder {folder}: file {p.name} has no frame number")
        numbered.append((int(m[-1]), p))
    numbered.sort()
    nums = [n for n, _ in numbered]
    if len(set(nums)) != len(nums):
        raise HpgenError(f"frame folder {folder} has duplicate frame numbers")
    missing = sorted(set(range(nums[0], nums[-1] + 1)) - set(nums))
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (" ..." if len(missing) > 8 else "")
        raise HpgenError(f"frame folder {folder} has gaps: frames {shown} are missing")
    return [p for _, p in numbered]


def _pil_open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(path)
        im.load()
        return im
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise HpgenError(f"cannot decode image {path}: {e}") from None


def _pil_to_rgb(im, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    im = im.convert("RGB")
    if size is not None and (im.height, im.width) != tuple(size):
        im = im.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


class VideoSource:
    """A lazily decoded video. Picklable: it holds a path and metadata, never a reader."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not str(path):
            raise HpgenError("no input video given (set --video or data.video)")
        if not self.path.exists():
            raise HpgenError(f"input video not found: {self.path}")
        if self.path.is_dir():
            self.kind = "frames"
            self._frames = _numbered_frames(self.path)
        else:
            suffix = self.path.suffix.lower()
            if suffix == ".gif":
                self.kind = "gif"
            elif suffix in IMAGE_SUFFIXES:
                self.kind = "image"
            elif suffix in VIDEO_SUFFIXES:
                self.kind = "video"
            else:
                raise HpgenError(f"unsupported input type '{suffix}' for {self.path} "
                                 f"(use one of {sorted(VIDEO_SUFFIXES | IMAGE_SUFFIXES | {'.gif'})} or a frame folder)")
            if self.path.stat().st_size == 0:
                raise HpgenError(f"input video {self.path} is empty (0 bytes)")
        self.info = self._probe()
        self._readers: dict = {}
        self._reader_pid = None

    # -- probing -------------------------------------------------------------
    def _probe(self) -> VideoInfo:
        if self.kind == "video":
            vr = self._open_decord(None)
            try:
                n = len(vr)
                if n == 0:
                    raise HpgenError(f"input video {self.path} has no frames")
                first = vr[0].asnumpy()
                fps = float(vr.get_avg_fps() or DEFAULT_FPS)
            except HpgenError:
                raise
            except Exception as e:  # decord raises its own DECORDError
                raise HpgenError(f"cannot decode video {self.path}: {str(e).splitlines()[0]}") from None
            gray = bool(np.all(first[..., 0] == first[..., 1]) and np.all(first[..., 1] == first[..., 2]))
            return VideoInfo(n, first.shape[0], first.shape[1], fps, gray)
        if self.kind == "gif":
            im = _pil_open(self.path)
            n = getattr(im, "n_frames", 1)
            dur = im.info.get("duration") or 0
            fps = 1000.0 / dur if dur else DEFAULT_FPS
            return VideoInfo(n, im.height, im.width, fps, im.mode in ("L", "LA", "1", "I", "F"))
        paths = self._frames if self.kind == "frames" else [self.path]
        im = _pil_open(paths[0])
        return VideoInfo(len(paths), im.height, im.width, DEFAULT_FPS, im.mode in ("L", "LA", "1", "I", "F", "I;16"))

    def _open_decord(self, size: tuple[int, int] | None):
        import decord

        kw = {}
        if size is not None:
            kw = {"height": int(size[0]), "width": int(size[1])}
        try:
            return decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=1, **kw)
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise HpgenError(f"cannot decode video {self.path}: {msg}") from None

    def _reader(self, size):
        # One reader per (process, decode size): never reuse a reader across fork.
        if self._reader_pid != os.getpid():
            self._readers, self._reader_pid = {}, os.getpid()
        key = None if size is None else tuple(size)
        if key not in self._readers:
            self._readers[key] = self._open_decord(key)
        return self._readers[key]

    def close(self) -> None:
        """Drop this process's decoders (they reopen lazily on the next read)."""
        self._readers = {}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_readers"], state["_reader_pid"] = {}, None
        return state

    # -- public --------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return self.info.num_frames

    @property
    def fps(self) -> float:
        return self.info.fps

    def read(self, indices: Sequence[int] | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
        """Decode frames ``indices`` (default: all), resized to ``size=(H, W)`` if given.

        Returns uint8 (T, H, W, 3) RGB; grayscale sources are replicated to 3 channels.
        """
        n = self.num_frames
        idx = list(range(n)) if indices is None else [int(i) for i in indices]
        bad = [i for i in idx if not 0 <= i < n]
        if bad:
            raise HpgenError(f"{self.path} has {n} frames; frame {bad[0]} was requested")
        if self.kind == "video":
            try:
                arr = self._reader(size).get_batch(idx).asnumpy()
            except Exception as e:
                try:  # decord fails on some small yuv420p frames (dmlc/decord#336): decode with PyAV
                    return self._read_pyav(idx, size)
                except Exception:
                    raise HpgenError(f"cannot decode video {self.path}: {str(e).strip().splitlines()[0]}") from None
            return np.ascontiguousarray(arr[..., :3])
        if self.kind == "gif":
            from PIL import ImageSequence

            im = _pil_open(self.path)
            wanted = set(idx)
            got = {}
            for i, frame in enumerate(ImageSequence.Iterator(im)):
                if i in wanted:
                    got[i] = _pil_to_rgb(frame, size)
            return np.stack([got[i] for i in idx])
        paths = self._frames if self.kind == "frames" else [self.path]
        return np.stack([_pil_to_rgb(_pil_open(paths[i]), size) for i in idx])


    def _read_pyav(self, idx: list[int], size) -> np.ndarray:
        """Frames ``idx`` decoded in order by PyAV (resized with Pillow's bilinear if ``size``):
        the fallback where decord cannot convert a video's frames."""
        import av
        from PIL import Image

        wanted, got = set(idx), {}
        with av.open(str(self.path)) as c:
            for i, frame in enumerate(c.decode(video=0)):
                if i in wanted:
                    got[i] = _pil_to_rgb(frame.to_image(), size)
                if len(got) == len(wanted):
                    break
        return np.stack([got[i] for i in idx])


def read_video(path, indices=None, size=None) -> np.ndarray:
    """Convenience: decode ``indices`` of ``path`` as uint8 (T, H, W, 3)."""
    return VideoSource(path).read(indices, size)


# ---------------------------------------------------------------------------
# tensors

def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (3, T, H, W) in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).float()
    return t.permute(3, 0, 1, 2).div_(127.5).sub_(1.0)


def to_frames(video: torch.Tensor) -> np.ndarray:
    """float (3, T, H, W) or (1, 3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3), clamped and rounded."""
    v = video.detach().float().cpu()
    if v.dim() == 5:
        if v.shape[0] != 1:
            raise ValueError("to_frames takes one video; index the batch first")
        v = v[0]
    if v.dim() == 3:  # an image (3, H, W)
        v = v.unsqueeze(1)
    v = ((v.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return v.permute(1, 2, 3, 0).contiguous().numpy()


# ---------------------------------------------------------------------------
# writing

def _as_frames(video) -> np.ndarray:
    if isinstance(video, torch.Tensor):
        return to_frames(video)
    arr = np.asarray(video)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected uint8 (T, H, W, 3) frames, got {arr.dtype} {arr.shape}")
    return arr


def mp4_size(height: int, width: int) -> tuple[int, int]:
    """(H, W) of an mp4 that ``write_mp4`` writes from (height, width) frames: each odd side
    loses one pixel (see ``write_mp4``)."""
    return height - height % 2, width - width % 2


def write_mp4(path: Path, frames: np.ndarray, fps: float, crf: int = 15) -> None:
    """H.264 mp4 (yuv420p) through PyAV.

    4:2:0, the pixel format that players and browsers accept, needs even sizes, so an odd
    height or width is cropped by one pixel: the last row and/or column is dropped (never
    padded with invented pixels). A 63x113 video is written as 62x112 (``mp4_size``); write
    .gif or .png for the exact size."""
    import av

    h, w = mp4_size(*frames.shape[1:3])
    if h == 0 or w == 0:
        raise HpgenError(f"cannot write a {frames.shape[1]}x{frames.shape[2]} video as mp4 (4:2:0 needs at least "
                         "2x2 pixels); use .gif or .png")
    frames = frames[:, :h, :w]
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_gif(path, frames: np.ndarray, fps: float) -> None:
    """Animated GIF through Pillow, looping forever, to a path or a binary file object (the
    one GIF writer: files here, TensorBoard summaries in monitor.py)."""
    from PIL import Image

    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(path, format="GIF", save_all=True, append_images=ims[1:], duration=max(1, round(1000 / fps)),
                loop=0)


def strip(frames: np.ndarray, max_frames: int = 0) -> np.ndarray:
    """Frames side by side, (H, T*W, 3); ``max_frames`` evenly picks that many."""
    if max_frames and len(frames) > max_frames:
        frames = frames[np.linspace(0, len(frames) - 1, max_frames).round().astype(int)]
    return np.concatenate(list(frames), axis=1)


def write_png_strip(path: Path, frames: np.ndarray, max_frames: int = 0) -> None:
    from PIL import Image

    Image.fromarray(strip(frames, max_frames)).save(path)


def atomic_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")


FORMATS = ("mp4", "gif", "png")


@dataclass(frozen=True)
class Outputs:
    """Where a command that writes ``num`` videos puts them (``output_paths``)."""
    folder: Path
    videos: list[Path]
    format: str
    contact_sheet: Path
    config: Path


def output_paths(out, num: int, fmt: str | None = None, stem: str = "sample") -> Outputs:
    """The files of ``num`` videos for ``--out OUT [--format mp4|gif|png]``.

    * OUT a folder (no .mp4/.gif/.png suffix): OUT/sample_000.<fmt>, ...; the format is
      ``fmt``, else mp4; beside them contact_sheet.png and config.toml.
    * OUT a file name such as out/fake.gif: the format is its suffix; one video is written
      to exactly that name, several to out/fake_000.gif, ...; beside them
      out/fake_contact_sheet.png and out/fake_config.toml.

    png is a strip of the frames side by side (an image a page can show); gif and png keep
    odd frame sizes exactly, mp4 crops them to even (``write_mp4``). A ``fmt`` that
    contradicts OUT's suffix is an error."""
    out = Path(out)
    suffix = out.suffix.lower().lstrip(".")
    if fmt is not None:
        fmt = fmt.lower().lstrip(".")
        if fmt not in FORMATS:
            raise HpgenError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
        if suffix in FORMATS and suffix != fmt:
            raise HpgenError(f"--out {out} names a .{suffix} file but --format is {fmt}; give one of them")
    if suffix in FORMATS:
        folder, prefix = out.parent, out.stem + "_"
        videos = [out] if num == 1 else [out.with_name(f"{out.stem}_{i:03d}{out.suffix}") for i in range(num)]
        fmt = suffix
    else:
        folder, prefix, fmt = out, "", fmt or "mp4"
        videos = [out / f"{stem}_{i:03d}.{fmt}" for i in range(num)]
    return Outputs(folder, videos, fmt, folder / f"{prefix}contact_sheet.png", folder / f"{prefix}config.toml")


def write_video(path, video, fps: float = DEFAULT_FPS, max_strip_frames: int = 0) -> Path:
    """Write ``video`` (uint8 frames or a [-1, 1] tensor) by suffix: .mp4, .gif or .png (strip).

    The file appears atomically, so a crash never leaves a half-written output.
    """
    path = Path(path)
    frames = _as_frames(video)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".mp4":
            write_mp4(tmp, frames, fps)
        elif suffix == ".gif":
            write_gif(tmp, frames, fps)
        elif suffix == ".png":
            write_png_strip(tmp, frames, max_strip_frames)
        else:
            raise HpgenError(f"cannot write '{suffix}': use .mp4, .gif or .png")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
