"""Video analogies and sketch-to-video (VGPNN Sec. 4).

The output takes its spatio-temporal layout from a content video C and its look and
motion from a style video S. Both are reduced to a *dynamic structure*: the
optical-flow magnitude, quantised into a few bins by k-means (bins sorted by speed,
so bin i means "the i-th slowest kind of motion" in either video). Per level:

    level N (coarsest):  Q = dyn(C)_N               K = dyn(S)_N          V = S_N
    level n:             Q = dyn(C)_n || Q_{n+1}^   K = dyn(S)_n || S_n   V = S_n

so at the coarsest level the videos are compared only by their motion layout, and at
finer levels the content's layout guides the output (|| is channel concatenation).
For sketch-to-video the content's dynamic structure is a sketch or label video,
quantised the same way.

Flow: OpenCV's Farneback (classical, no weights to download) by default. The flow
source is pluggable: pass precomputed flow (e.g. RAFT) as an array, a .npy file of
shape (T-1, H, W, 2), or a folder of per-frame .flo/.npy files (sorted by name).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
import torch

from ..errors import HpgenError
from ..pyramid import resize
from .config import AnalogyConfig, PatchNNConfig, validate_patchnn
from .generate import Level, _check_video, _progress, coarse_to_fine, make_generator, pyramid_plan

FlowSource = Union[str, Path, np.ndarray, Callable[[np.ndarray], np.ndarray], None]


# ---------------------------------------------------------------------------
# optical flow

def farneback_flow(frames: np.ndarray) -> np.ndarray:
    """Dense flow between consecutive uint8 RGB frames (T, H, W, 3) -> float32 (T-1, H, W, 2)."""
    import cv2

    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    flows = [cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=3, winsize=15, iterations=3,
                                          poly_n=5, poly_sigma=1.2, flags=0)
             for a, b in zip(gray[:-1], gray[1:])]
    if not flows:
        return np.zeros((0, *frames.shape[1:3], 2), np.float32)
    return np.stack(flows).astype(np.float32)


def read_flo(path: str | Path) -> np.ndarray:
    """A Middlebury .flo file (as written by RAFT's tools) -> float32 (H, W, 2)."""
    with open(path, "rb") as f:
        magic = np.fromfile(f, np.float32, count=1)
        if magic.size != 1 or abs(float(magic[0]) - 202021.25) > 1e-3:
            raise HpgenError(f"{path} is not a .flo file (bad magic number)")
        w, h = (int(v) for v in np.fromfile(f, np.int32, count=2))
        data = np.fromfile(f, np.float32, count=2 * w * h)
    if data.size != 2 * w * h:
        raise HpgenError(f"{path} is truncated: expected {w}x{h}x2 flow values")
    return data.reshape(h, w, 2)


def load_flow(source: str | Path) -> np.ndarray:
    """Flow from a .npy file (T-1, H, W, 2), a .flo file, or a folder of .flo/.npy files."""
    p = Path(source)
    if not p.exists():
        raise HpgenError(f"flow source not found: {p}")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in (".flo", ".npy"))
        if not files:
            raise HpgenError(f"flow folder {p} holds no .flo or .npy files")
        return np.stack([read_flo(f) if f.suffix.lower() == ".flo" else np.load(f) for f in files]).astype(np.float32)
    if p.suffix.lower() == ".flo":
        return read_flo(p)[None]
    if p.suffix.lower() == ".npy":
        return np.load(p).astype(np.float32)
    raise HpgenError(f"unsupported flow file {p} (use .npy or .flo)")


def flow_magnitude(frames: np.ndarray, source: FlowSource = None) -> np.ndarray:
    """Per-frame flow magnitude (T, H, W) of uint8 frames (T, H, W, 3).

    ``source``: None or "farneback" (OpenCV), a callable frames -> flow, an array, or a
    path (``load_flow``). Flow of another resolution is resized (and its vectors scaled);
    T-1 flows are extended to T by repeating the last one.
    """
    t, h, w = frames.shape[:3]
    if source is None or (isinstance(source, str) and source.lower() == "farneback"):
        flow = farneback_flow(frames)
    elif callable(source):
        flow = np.asarray(source(frames), np.float32)
    elif isinstance(source, np.ndarray):
        flow = source.astype(np.float32)
    else:
        flow = load_flow(source)
    if flow.ndim != 4 or flow.shape[-1] != 2:
        raise HpgenError(f"flow must have shape (frames, H, W, 2), got {flow.shape}")
    if flow.shape[0] not in (t - 1, t):
        raise HpgenError(f"the video has {t} frames but the flow has {flow.shape[0]} (need {t - 1} or {t})")
    mag = np.linalg.norm(flow, axis=-1)
    if mag.shape[1:] != (h, w):
        scale = h / mag.shape[1]
        mag = resize(torch.from_numpy(mag)[None], (mag.shape[0], h, w))[0].numpy() * scale
    if mag.shape[0] == t - 1:
        mag = np.concatenate([mag, mag[-1:]], 0) if t > 1 else np.zeros((1, h, w), np.float32)
    return mag.astype(np.float32)


# ---------------------------------------------------------------------------
# quantisation

def kmeans_1d(values: torch.Tensor, k: int, iters: int = 30, sample: int = 200_000,
              seed: int = 0) -> torch.Tensor:
    """Sorted k-means centres of scalar ``values`` (Lloyd's algorithm on a random subsample,
    initialised at quantiles, so the result is deterministic)."""
    v = values.reshape(-1).float()
    if v.numel() > sample:
        g = torch.Generator(device="cpu").manual_seed(seed)
        v = v[torch.randint(0, v.numel(), (sample,), generator=g).to(v.device)]
    centres = torch.quantile(v, torch.linspace(0.5 / k, 1 - 0.5 / k, k, device=v.device))
    for _ in range(iters):
        lab = (v.unsqueeze(1) - centres).abs().argmin(1)
        new = torch.stack([v[lab == i].mean() if (lab == i).any() else centres[i] for i in range(k)])
        if torch.allclose(new, centres):
            break
        centres = new
    return centres.sort().values


def quantise(values: torch.Tensor, k: int) -> torch.Tensor:
    """``values`` (T, H, W) -> (1, T, H, W) bin labels mapped to [-1, 1] (slowest bin -1).

    Bins are fitted per video, so "fast" means fast relative to that video's own motion:
    the analogy pairs kinds of motion, not absolute speeds."""
    centres = kmeans_1d(values, k)
    lab = (values.unsqueeze(-1) - centres).abs().argmin(-1).float()
    return (lab / (k - 1) * 2 - 1).unsqueeze(0)


def dynamic_structure(frames: np.ndarray, k: int = 4, flow: FlowSource = None) -> torch.Tensor:
    """Flow magnitude of uint8 frames quantised into ``k`` k-means bins, (1, T, H, W) in [-1, 1]."""
    return quantise(torch.from_numpy(flow_magnitude(frames, flow)), k)


def sketch_structure(frames: np.ndarray, k: int = 4) -> torch.Tensor:
    """A sketch or label video (uint8 RGB) as a dynamic structure: intensity in ``k`` bins."""
    gray = torch.from_numpy(frames.astype(np.float32)).mean(-1)
    return quantise(gray, k)


# ---------------------------------------------------------------------------
# the analogy pyramid

@torch.no_grad()
def analogy(content_dyn: torch.Tensor, style: torch.Tensor, style_dyn: torch.Tensor,
            cfg: PatchNNConfig | None = None, acfg: AnalogyConfig | None = None, *, seed: int = 0,
            out_shape: Sequence[int] | None = None, progress: str | None = None) -> torch.Tensor:
    """Output (C, T, H, W) with the layout of ``content_dyn`` (D, T, H, W) and the look and
    motion of ``style`` (C, Ts, Hs, Ws), whose own structure is ``style_dyn`` (D, Ts, Hs, Ws).
    The output has the content's shape unless ``out_shape`` is given."""
    cfg = validate_patchnn(cfg or PatchNNConfig())
    acfg = acfg or AnalogyConfig()
    ps = [int(p) for p in cfg.patch_size]
    _check_video(style, ps, "style")
    _check_video(content_dyn, ps, "content")
    if style_dyn.shape[1:] != style.shape[1:] or style_dyn.shape[0] != content_dyn.shape[0]:
        raise HpgenError(f"style structure {tuple(style_dyn.shape)} does not fit style {tuple(style.shape)} "
                         f"and content structure {tuple(content_dyn.shape)}")
    device = style.device
    content_dyn, style_dyn = content_dyn.to(device), style_dyn.to(device)
    out_thw = tuple(int(v) for v in (out_shape or content_dyn.shape[1:]))
    ins, outs = pyramid_plan(tuple(style.shape[1:]), out_thw, cfg)
    wgt = float(acfg.dyn_weight)
    levels = []
    for n, (s, o) in enumerate(zip(ins, outs)):
        sn = resize(style, s)
        ds = resize(style_dyn, s) * wgt
        dc = resize(content_dyn, o) * wgt
        both = torch.cat((ds, sn), 0)
        levels.append(Level(v=sn, k_first=ds if n == 0 else both, k_rest=both, out_thw=o, q_aux=dc))
    gen = make_generator(device, seed)
    bar, cb = _progress(progress, len(levels))
    try:
        return coarse_to_fine(levels, levels[0].q_aux, cfg, generator=gen, on_level=cb)
    finally:
        if bar is not None:
            bar.close()


def video_analogy(content: np.ndarray, style: np.ndarray, cfg: PatchNNConfig | None = None,
                  acfg: AnalogyConfig | None = None, *, seed: int = 0, device: str | torch.device = "cpu",
                  content_flow: FlowSource = None, style_flow: FlowSource = None,
                  progress: str | None = None) -> torch.Tensor:
    """Analogy from uint8 frames: dynamic structures from flow (Farneback unless a flow
    source is given, see ``flow_magnitude``), then ``analogy``."""
    from ..video import to_tensor

    acfg = acfg or AnalogyConfig()
    cflow = content_flow if content_flow is not None else acfg.flow
    sflow = style_flow if style_flow is not None else acfg.flow
    dc = dynamic_structure(content, acfg.clusters, cflow)
    ds = dynamic_structure(style, acfg.clusters, sflow)
    return analogy(dc.to(device), to_tensor(style).to(device), ds.to(device), cfg, acfg, seed=seed,
                   progress=progress)


def sketch_to_video(sketch: np.ndarray, style: np.ndarray, cfg: PatchNNConfig | None = None,
                    acfg: AnalogyConfig | None = None, *, seed: int = 0, device: str | torch.device = "cpu",
                    style_flow: FlowSource = None, progress: str | None = None) -> torch.Tensor:
    """A video laid out like the ``sketch``/label video, looking and moving like ``style``."""
    from ..video import to_tensor

    acfg = acfg or AnalogyConfig()
    dc = sketch_structure(sketch, acfg.clusters)
    ds = dynamic_structure(style, acfg.clusters, style_flow if style_flow is not None else acfg.flow)
    return analogy(dc.to(device), to_tensor(style).to(device), ds.to(device), cfg, acfg, seed=seed,
                   progress=progress)
