"""VGPNN: the VPNN layer and the coarse-to-fine pyramid, for generation, retargeting and
conditional inpainting (video analogies build on the same core in ``analogy.py``).

VPNN layer (paper Fig. 3): every space-time patch of the query Q is matched to its
nearest patch of the key K (PatchMatch, or exact search when the level is small), is
replaced by the patch of the value V at the same place, and the overlapping patches are
folded back into a video by median (or mean) voting. Optionally the fine levels
(``fine_size``) vote by mean with more EM steps (``voting_fine``, ``em_iters_fine``): there
the median leaves hard seams between regions copied from different offsets (issue 12,
fourth pass; off by default, as it raised SIFID).

Pyramid (Fig. 2): the input x is resized into levels x_N (coarsest) .. x_0 = x with
separate spatial and temporal factors. At the coarsest level the initial guess is
x_N (resized to the output's coarsest shape) plus Gaussian noise that is random per
spatial position and replicated along time (the paper found this keeps motion
coherent). At level n the query is the up-sampled output y_{n+1}, the key is
x_{n+1} up-sampled to level n (as blurred as the query), and the value is x_n (sharp).
Each level runs a few EM iterations; from the second one on the output is sharp, so
the key becomes x_n itself (as in the reference code). The nearest-neighbour field is
carried between EM iterations and up-sampled between levels, so PatchMatch starts
from a near-converged field and needs only ``pm_iters_warm`` iterations.

Two guards against samples that are the input itself (issue 12): ``sync_time`` makes time
reach its floor at the same level as space (otherwise a long clip has several levels of
15 px frames whose EM steps turn the noisy start into the input), and ``generate`` draws
the noise again (``copy_retries``) when a level's output equals the input at that level,
which GPNN's completeness normalisation converges to when the output is as long as the
input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import HpgenError
from ..pyramid import geometric_shapes, matched_shapes, resize
from .config import PatchNNConfig, validate_patchnn
from .exact import exact_nn
from .patches import PatchGrid, _Grid, fit_pca, vote
from .patchmatch import patchmatch, resize_field


# ---------------------------------------------------------------------------
# the VPNN layer

def uses_exact(q: _Grid, k: _Grid, cfg: PatchNNConfig) -> bool:
    """Whether ``nearest_field`` searches exhaustively (small levels, where it is cheaper)."""
    return q.numel * k.numel <= cfg.exact_max_pairs


def search_dtype(cfg: PatchNNConfig) -> torch.dtype | None:
    """Storage dtype of the reduced search descriptors (None: the video's)."""
    return None if cfg.search_dtype == "float32" else torch.float16


def nearest_field(q: _Grid, k: _Grid, cfg: PatchNNConfig, init: torch.Tensor | None = None,
                  k_valid: torch.Tensor | None = None, generator: torch.Generator | None = None,
                  k_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Field and distances of ``q`` to ``k``: exact when the level is small enough that brute
    force is cheaper than PatchMatch, else PatchMatch (warm-started from ``init``).
    ``k_weight`` multiplies the distance to each key (``completeness_weights``)."""
    if uses_exact(q, k, cfg):
        return exact_nn(q, k, k_valid, cfg.chunk, k_weight=k_weight)
    iters = cfg.pm_iters if init is None else cfg.pm_iters_warm
    return patchmatch(q, k, iters=iters, init=init, k_valid=k_valid, steps=cfg.pm_steps,
                      n_random=cfg.pm_random, chunk=cfg.chunk, generator=generator,
                      rescue_frac=cfg.pm_rescue_frac, rescue_dim=cfg.pm_rescue_dim, rescue_topk=cfg.pm_rescue_topk,
                      k_weight=k_weight)


def completeness_weights(key_to_query_dist: torch.Tensor, alpha: float, patch_dim: int) -> torch.Tensor:
    """GPNN's completeness normalisation (Granot et al., "Drop the GAN", CVPR 2022): the
    distance from a query patch to key patch j is divided by ``alpha + min_i D(Q_i, K_j)``,
    the distance of j to its nearest query patch. A key patch that no query patch resembles
    (a rare object the output has lost) gets a small denominator, so a query patch that is
    even roughly like it picks it, and the object comes back; keys that the output already
    holds many times lose their pull. Distances are squared L2 over the ``patch_dim`` values
    of a patch in [-1, 1]; ``alpha`` is per value (a mean squared difference), so one alpha
    serves every patch size. Returns the per-key multiplier 1 / (alpha * patch_dim + d_j)."""
    return 1.0 / (alpha * patch_dim + key_to_query_dist.float().clamp_min(0))


def vpnn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cfg: PatchNNConfig | None = None, *,
         init: torch.Tensor | None = None, k_valid: torch.Tensor | None = None,
         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One VPNN layer: (C', Tq, Hq, Wq) query, (C', T, H, W) key, (C, T, H, W) value ->
    (output (C, Tq, Hq, Wq), field (3, Nq)). Q and K may carry extra channels that V lacks."""
    cfg = cfg or PatchNNConfig()
    ps = tuple(cfg.patch_size)
    if k.shape[1:] != v.shape[1:]:
        raise ValueError(f"key {tuple(k.shape)} and value {tuple(v.shape)} must have the same T, H, W")
    qg, kg = PatchGrid(q, ps), PatchGrid(k, ps)
    nnf, _ = nearest_field(qg, kg, cfg, init, k_valid, generator)
    return vote(v, nnf, q.shape[1:], ps, cfg.voting), nnf


# ---------------------------------------------------------------------------
# the coarse-to-fine core shared by every application

@dataclass
class Level:
    """Inputs of one pyramid level. Q is ``q_aux`` (extra channels, or None) concatenated
    with the RGB estimate; keys are compared with the whole Q."""
    v: torch.Tensor                       # (C, T, H, W) values: the input at this level
    k_first: torch.Tensor                 # key of the first EM iteration (blurred like Q)
    k_rest: torch.Tensor                  # key of later EM iterations
    out_thw: tuple[int, int, int]
    q_aux: torch.Tensor | None = None     # (A, *out_thw) channels prepended to Q
    k_valid: torch.Tensor | None = None   # bool over the key's valid grid (inpainting)
    known: torch.Tensor | None = None     # bool (1, *out_thw): voxels fixed to ``known_values``
    known_values: torch.Tensor | None = None
    known_query: torch.Tensor | None = None  # what Q holds at known voxels in the first EM step


def _is_fine(cfg: PatchNNConfig, out_thw: Sequence[int]) -> bool:
    """Whether a level is a fine one (``cfg.fine_size``): layout and objects are settled
    below it, and its EM steps only refine the texture."""
    return bool(cfg.fine_size) and min(out_thw[1:]) > cfg.fine_size


def _em_iters(cfg: PatchNNConfig, n: int, thw: Sequence[int]) -> int:
    if n == 0:
        return cfg.em_iters_coarsest
    if cfg.em_iters_max_voxels and thw[0] * thw[1] * thw[2] > cfg.em_iters_max_voxels:
        return 1
    return cfg.em_iters_fine if _is_fine(cfg, thw) else cfg.em_iters


def _voting(cfg: PatchNNConfig, out_thw: Sequence[int]) -> str:
    return cfg.voting_fine if _is_fine(cfg, out_thw) else cfg.voting


def _normalises(cfg: PatchNNConfig, n: int, j: int, noisy_start: bool, out_thw: Sequence[int]) -> bool:
    """Whether EM step j of level n applies GPNN's completeness normalisation.

    Not on the first step of a generation (its query is mostly noise, and normalising it lets
    the normalisation choose the layout) unless ``completeness_first_step``, and not at levels
    finer than ``completeness_max_size`` (there it pulls rare patches into the sky); see
    PatchNNConfig and docs/BENCHMARKS.md (issue 12)."""
    if not cfg.completeness:
        return False
    if n == 0 and j == 0 and noisy_start and not cfg.completeness_first_step:
        return False
    return not cfg.completeness_max_size or min(out_thw[1:]) <= cfg.completeness_max_size


def coarse_to_fine(levels: Sequence[Level], q0: torch.Tensor, cfg: PatchNNConfig, *,
                   generator: torch.Generator | None = None,
                   on_level: Callable[[int, int], None] | None = None,
                   accept: Callable[[int, torch.Tensor], bool] | None = None,
                   noisy_start: bool = False) -> torch.Tensor | None:
    """Run VPNN layers from ``levels[0]`` (coarsest, initial full query ``q0``) to the finest.
    ``accept(n, y)``, if given, sees the output of every level and may stop the run
    (returns None) by answering False. ``noisy_start``: ``q0`` is mostly noise (generation),
    so its first EM step is a plain nearest-neighbour step unless
    ``cfg.completeness_first_step`` (the normalisation needs a query with a layout)."""
    ps = tuple(cfg.patch_size)
    y = None
    nnf = rev = prev_q_valid = prev_k_valid = None
    for n, lv in enumerate(levels):
        vg = PatchGrid(lv.v, ps)
        if n == 0:
            q = q0
        else:
            rgb = resize(y, lv.out_thw)
            if lv.known is not None:
                rgb = torch.where(lv.known, lv.known_query if lv.known_query is not None else lv.known_values, rgb)
            q = rgb if lv.q_aux is None else torch.cat((lv.q_aux, rgb), 0)
        iters = _em_iters(cfg, n, lv.out_thw)
        k_grids, k_feats, basis = {}, {}, None
        sdt = search_dtype(cfg)
        for j in range(iters):
            k = lv.k_first if (j == 0 or not cfg.sharp_keys_after_first) else lv.k_rest
            if id(k) not in k_grids:
                # The key changed (blurred -> sharp) and never changes back: drop the old
                # key's rows and descriptors (at full HD they are gigabytes).
                k_grids.clear()
                k_feats.clear()
            kg = vg if k is lv.v else k_grids.get(id(k))
            if kg is None:
                kg = PatchGrid(k, ps)
            k_grids[id(k)] = kg
            qg = PatchGrid(q, ps)
            init = None
            if nnf is not None:
                init = nnf if j > 0 else resize_field(nnf, prev_q_valid, prev_k_valid, qg.valid, kg)
            qs, ks = qg, kg
            if 0 < cfg.search_dim < kg.dim and not uses_exact(qg, kg, cfg):
                # Reduced descriptors for the search: one basis per level (fitted on its first
                # key), each key projected once per level, the query once per EM iteration.
                if basis is None:
                    basis = fit_pca(kg, cfg.search_dim, generator=generator, k_valid=lv.k_valid)
                ks = k_feats.get(id(k))
                if ks is None:
                    ks = k_feats[id(k)] = kg.project(basis, sdt)
                qs = qg.project(basis, sdt)
            weight = None
            if _normalises(cfg, n, j, noisy_start, lv.out_thw):
                # Reverse search (every key patch's nearest query patch), warm-started like
                # the forward field: the same search core with the roles swapped.
                rinit = None
                if rev is not None:
                    rinit = rev if j > 0 else resize_field(rev, prev_k_valid, prev_q_valid, kg.valid, qg)
                rev, dk = nearest_field(ks, qs, cfg, rinit, None, generator)
                weight = completeness_weights(dk, cfg.alpha, kg.dim)
            nnf, _ = nearest_field(qs, ks, cfg, init, lv.k_valid, generator, k_weight=weight)
            del qs, ks, weight  # the query's descriptors are not reused: free them before voting
            prev_q_valid, prev_k_valid = qg.valid, kg.valid
            y = vote(vg, nnf, lv.out_thw, reduce=_voting(cfg, lv.out_thw))
            if lv.known is not None:
                y = torch.where(lv.known, lv.known_values, y)
            q = y if lv.q_aux is None else torch.cat((lv.q_aux, y), 0)
        if on_level is not None:
            on_level(n, len(levels))
        if accept is not None and not accept(n, y):
            return None
    return y


# ---------------------------------------------------------------------------
# shapes and checks

def _check_video(video: torch.Tensor, ps: Sequence[int], what: str = "input") -> None:
    if video.dim() != 4:
        raise ValueError(f"expected a (C, T, H, W) video, got shape {tuple(video.shape)}")
    _, t, h, w = video.shape
    if t < ps[0]:
        raise HpgenError(f"the {what} clip has {t} frames, fewer than the temporal patch size {ps[0]}")
    if h < ps[1] or w < ps[2]:
        raise HpgenError(f"the {what} frames are {h}x{w}, smaller than the {ps[1]}x{ps[2]} patch")


def _temporal_factor(in_thw: Sequence[int], cfg: PatchNNConfig) -> float:
    """``cfg.temporal_factor``, or with ``cfg.sync_time`` the faster factor that brings time
    to its floor at the level where space reaches its own (never a slower one)."""
    tf = float(cfg.temporal_factor)
    if not cfg.sync_time or tf >= 1.0:
        return tf
    ps = [int(p) for p in cfg.patch_size]
    t, short = int(in_thw[0]), min(int(in_thw[1]), int(in_thw[2]))
    min_t, min_hw = max(cfg.min_frames, ps[0]), max(cfg.min_size, ps[1], ps[2])
    if t <= min_t or short <= min_hw:
        return tf
    n_space = math.ceil(math.log(min_hw / short) / math.log(cfg.spatial_factor) - 1e-9)
    n_time = math.ceil(math.log(min_t / t) / math.log(tf) - 1e-9)
    if n_time <= n_space:
        return tf
    return (min_t / t) ** (1.0 / n_space)


def pyramid_plan(in_thw: Sequence[int], out_thw: Sequence[int], cfg: PatchNNConfig
                 ) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """Input and output level shapes (coarsest first). Floors are raised to the patch size
    so that no level is ever smaller than a patch (the reference code's defaults crash on
    clips whose coarsest level falls below the temporal patch)."""
    ps = [int(p) for p in cfg.patch_size]
    if any(o < p for o, p in zip(out_thw, ps)):
        raise HpgenError(f"output size {out_thw[0]}x{out_thw[1]}x{out_thw[2]} (frames x height x width) is "
                         f"smaller than the {ps[0]}x{ps[1]}x{ps[2]} patch")
    ins = geometric_shapes(in_thw, spatial_factor=cfg.spatial_factor, temporal_factor=_temporal_factor(in_thw, cfg),
                           min_hw=max(cfg.min_size, ps[1], ps[2]), min_frames=max(cfg.min_frames, ps[0]),
                           max_levels=cfg.max_levels)
    # geometric_shapes floors the shorter side only; keep the other side >= its patch too.
    ins = [(t, max(h, ps[1]), max(w, ps[2])) for t, h, w in ins]
    outs = matched_shapes(ins, out_thw, ps)
    return ins, outs


def default_out_shape(in_thw: Sequence[int], cfg: PatchNNConfig, frames: int | None = None,
                      height: int | None = None, width: int | None = None) -> tuple[int, int, int]:
    t, h, w = in_thw
    if frames is None:
        frames = max(int(cfg.patch_size[0]), round(t * cfg.frames_ratio))
    return (int(frames), int(height or h), int(width or w))


def make_generator(device: torch.device | str, seed: int) -> torch.Generator:
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))


def _progress(desc: str | None, total: int):
    if desc is None:
        return None, None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="level", leave=False)
    return bar, (lambda n, total_: bar.update(1))


# ---------------------------------------------------------------------------
# applications: generation and retargeting

@torch.no_grad()
def generate(video: torch.Tensor, cfg: PatchNNConfig | None = None, *, out_shape: Sequence[int] | None = None,
             seed: int = 0, noise: bool = True, progress: str | None = None) -> torch.Tensor:
    """A new video with the patch distribution of ``video`` (C, T, H, W) in [-1, 1].

    ``out_shape`` (T, H, W) defaults to the input's size with ``frames_ratio`` of its
    frames. With ``noise=False`` and a different ``out_shape`` this is spatio-temporal
    retargeting. ``progress`` is a tqdm description (None: no bar).
    """
    cfg = validate_patchnn(cfg or PatchNNConfig())
    ps = [int(p) for p in cfg.patch_size]
    _check_video(video, ps)
    in_thw = tuple(video.shape[1:])
    out_thw = tuple(int(v) for v in (out_shape or default_out_shape(in_thw, cfg)))
    ins, outs = pyramid_plan(in_thw, out_thw, cfg)
    gen = make_generator(video.device, seed)
    xs = [resize(video, s) for s in ins]
    levels = []
    for n, (s, o) in enumerate(zip(ins, outs)):
        k_first = xs[n] if n == 0 else resize(xs[n - 1], s)
        levels.append(Level(v=xs[n], k_first=k_first, k_rest=xs[n], out_thw=o))
    noisy = noise and cfg.noise_std > 0
    bar, cb = _progress(progress, len(levels))
    try:
        for attempt in range(cfg.copy_retries + 1 if noisy else 1):
            q0 = resize(xs[0], outs[0])
            if noisy:
                c, _, h, w = q0.shape
                z = torch.randn((c, 1, h, w), device=video.device, dtype=video.dtype, generator=gen)
                if cfg.noise_per_voxel:
                    z = torch.randn(q0.shape, device=video.device, dtype=video.dtype, generator=gen)
                q0 = q0 + cfg.noise_std * z  # same noise in every frame (paper Sec. 2) unless per voxel
            last = not noisy or attempt == cfg.copy_retries

            def accept(n: int, y: torch.Tensor) -> bool:
                # A copy of the input (possible only at its size) is not a sample: draw again.
                return last or y.shape != xs[n].shape or float((y - xs[n]).abs().mean()) >= cfg.copy_eps

            y = coarse_to_fine(levels, q0, cfg, generator=gen, on_level=cb, accept=accept, noisy_start=noisy)
            if y is not None:
                return y
            if bar is not None:
                bar.reset()
    finally:
        if bar is not None:
            bar.close()


def retarget(video: torch.Tensor, out_shape: Sequence[int], cfg: PatchNNConfig | None = None, *,
             seed: int = 0, progress: str | None = None) -> torch.Tensor:
    """Spatio-temporal retargeting: the input's patches rearranged into any (T, H, W), no noise."""
    return generate(video, cfg, out_shape=out_shape, seed=seed, noise=False, progress=progress)


# ---------------------------------------------------------------------------
# conditional inpainting

def _mask_pyramid(mask: torch.Tensor, shapes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Hole masks per level: a voxel is a hole if any part of it overlaps the hole (so no
    hole colour can leak into the keys through resampling)."""
    m = mask.float().unsqueeze(0)
    return [resize(m, s) > 1e-3 if tuple(s) != tuple(mask.shape) else mask.unsqueeze(0) for s in shapes]


def _valid_keys(hole: torch.Tensor, ps: Sequence[int]) -> torch.Tensor:
    """Bool over the valid grid: patches that do not overlap the hole at all."""
    touched = F.max_pool3d(hole.float().unsqueeze(0), kernel_size=tuple(ps), stride=1)[0, 0]
    return touched == 0


@torch.no_grad()
def inpaint(video: torch.Tensor, mask: torch.Tensor, cfg: PatchNNConfig | None = None, *, seed: int = 0,
            noise: bool = True, fill: float = 0.0, progress: str | None = None) -> torch.Tensor:
    """Fill the voxels where ``mask`` (bool (T, H, W) or (1, H, W), True = hole) is set with
    patches from outside it; every voxel outside the mask is returned unchanged.

    Pixel values under the mask are ignored (they start at ``fill``, then the mean colour
    of the known region, plus noise if ``noise``).
    """
    cfg = validate_patchnn(cfg or PatchNNConfig())
    ps = [int(p) for p in cfg.patch_size]
    _check_video(video, ps)
    c, t, h, w = video.shape
    mask = torch.as_tensor(mask, device=video.device)
    if mask.dim() == 4 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.dim() != 3 or tuple(mask.shape[1:]) != (h, w) or mask.shape[0] not in (1, t):
        raise HpgenError(f"the mask has shape {tuple(mask.shape)} but the video is {t}x{h}x{w} "
                         f"(frames x height x width); a mask needs the same size, or one frame")
    mask = mask.bool().expand(t, h, w).contiguous()
    if not mask.any():
        return video.clone()
    if mask.all():
        raise HpgenError("the mask covers the whole video: nothing to fill it from")
    ins, _ = pyramid_plan((t, h, w), (t, h, w), cfg)
    holes = _mask_pyramid(mask, ins)
    valids = [_valid_keys(m, ps) for m in holes]
    # Start at the first level where some patch lies fully outside the (resampled) hole.
    start = next((n for n, kv in enumerate(valids) if kv.any()), None)
    if start is None:
        raise HpgenError("the mask leaves no complete patch outside it; use a smaller mask or patch_size")
    known_mean = video[:, ~mask].mean(dim=1).view(c, 1, 1, 1)
    src = torch.where(mask.unsqueeze(0), torch.full_like(video, fill), video)  # the hole's pixels never count
    xs = [resize(src, s) for s in ins]
    gen = make_generator(video.device, seed)
    levels = []
    for n in range(start, len(ins)):
        s = ins[n]
        known = ~holes[n]
        k_first = xs[n] if n == start else resize(xs[n - 1], s)
        levels.append(Level(v=xs[n], k_first=k_first, k_rest=xs[n], out_thw=s, k_valid=valids[n],
                            known=known, known_values=xs[n], known_query=k_first))
    q0 = torch.where(holes[start], known_mean.expand_as(xs[start]), xs[start])
    if noise and cfg.noise_std > 0:
        z = torch.randn((c, 1, *ins[start][1:]), device=video.device, dtype=video.dtype, generator=gen)
        q0 = torch.where(holes[start], q0 + cfg.noise_std * z, q0)
    bar, cb = _progress(progress, len(levels))
    try:
        out = coarse_to_fine(levels, q0, cfg, generator=gen, on_level=cb)
    finally:
        if bar is not None:
            bar.close()
    # The finest level's known voxels are the input's own values; make that exact.
    return torch.where(mask.unsqueeze(0), out, video)
