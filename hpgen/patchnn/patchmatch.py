"""PatchMatch (Barnes et al. 2009) over space-time patches, vectorised for CPU and CUDA.

Classic PatchMatch scans positions in order, so each position sees the already
improved match of its predecessor. A GPU cannot scan, so here every iteration proposes,
for *all* positions at once, a handful of candidate matches, scores them in parallel
and keeps the best:

* propagation: the match of the neighbour at distance ``step`` along T, H and W,
  shifted by the same amount (if the neighbour's patch matches key patch m, this
  patch likely matches m + offset). The direction alternates between iterations, as
  in the original's alternating scan order, and the step cycles through
  ``steps`` (e.g. 4, 2, 1: jump flooding), so a good match spreads across a region in
  a few iterations instead of one voxel per iteration;
* random search: the current match plus a uniform offset in a window whose radius
  halves from the whole key extent down to 1 voxel (the sequence is spread over
  iterations, ``n_random`` samples per iteration).

A cold start then *rescues* the worst positions: on real clips the error left after
the iterations sits in few positions (moving objects, ~10% of the positions hold ~95%
of the excess distance over exact search), whose good matches are isolated keys that
neither propagation nor random sampling finds. For the ``rescue_frac`` worst positions
the ``rescue_topk`` nearest keys in a PCA space of ``rescue_dim`` dims (fitted on the
key) are found exactly by matrix products and re-ranked by true distance.

Positions are processed in chunks (``patches.default_chunk``): for each chunk the
query patches are gathered once and every candidate's key patches are gathered and
compared, so extra memory is O(chunk x patch dim) on top of the O(video) fields.
Updates are written back in place, so later chunks already see earlier chunks'
improvements (as a sequential scan would).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .patches import PatchGrid, _Grid, default_chunk, fit_pca, patch_distances, sq_dist


def random_field(q: _Grid, k: _Grid, k_valid: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniformly random field (3, Nq) over the (valid) key positions."""
    if k_valid is None:
        flat = torch.randint(0, k.numel, (q.numel,), device=q.device, generator=generator)
    else:
        allowed = torch.nonzero(k_valid.reshape(-1)).squeeze(1)
        pick = torch.randint(0, allowed.numel(), (q.numel,), device=q.device, generator=generator)
        flat = allowed[pick]
    return k.coords_of(flat)


def scaled_identity(q: _Grid, k: _Grid) -> torch.Tensor:
    """The field that maps each query position to the same relative position in the key."""
    ident = q.coords_of(torch.arange(q.numel, device=q.device))
    return resize_field(ident, q.valid, q.valid, q.valid, k)


def _masked(d: torch.Tensor, k: _Grid, cand: torch.Tensor, k_valid: torch.Tensor | None,
            k_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cost of candidates ``cand`` from their squared distances ``d``: times the key's
    ``k_weight`` when given, inf where ``k_valid`` forbids the key."""
    if k_weight is not None:
        d = d * k_weight.reshape(-1)[k.flat_of(cand)]
    if k_valid is None:
        return d
    return d.masked_fill(~k_valid.reshape(-1)[k.flat_of(cand)], float("inf"))


@torch.no_grad()
def rescue(q: _Grid, k: _Grid, nnf: torch.Tensor, dist: torch.Tensor, *, frac: float = 0.1, dim: int = 32,
           topk: int = 8, k_valid: torch.Tensor | None = None, chunk: int = 0,
           generator: torch.Generator | None = None,
           k_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-search the ``frac`` worst positions of a field (in place): exact search of the
    ``topk`` nearest keys in a ``dim``-dim PCA space of the key's patches (the descriptors
    themselves for ``FeatureGrid``s), then keep the best by true distance if it improves.
    Costs frac x Nq x Nk x dim multiply-adds (a fraction of a second on a GPU at 13x144x256)."""
    n = int(frac * q.numel)
    if n <= 0 or topk <= 0:
        return nnf, dist
    if isinstance(k, PatchGrid) and isinstance(q, PatchGrid) and 0 < dim < k.dim:
        basis = fit_pca(k, dim, generator=generator, k_valid=k_valid)
        kf = k.project(basis).feats
        qdesc = lambda c: q.gather(c) @ basis  # noqa: E731
    else:
        kf, qdesc = k.all_patches(), q.gather
    kn = torch.linalg.vecdot(kf, kf)
    if k_valid is not None:
        kn = kn.masked_fill(~k_valid.reshape(-1), float("inf"))
    topk = min(int(topk), k.numel)
    worst = dist.topk(n).indices
    rows = max(1, min(default_chunk(q.device, chunk), (1 << 24) // max(1, k.numel)))
    for s in range(0, n, rows):
        pos = worst[s:s + rows]
        qc = q.coords_of(pos)
        scores = torch.addmm(kn.unsqueeze(0), qdesc(qc), kf.t(), beta=1.0, alpha=-2.0)
        cand = scores.topk(topk, dim=1, largest=False).indices
        qp = q.gather(qc)
        best, bestd = nnf[:, pos], dist[pos]
        for j in range(topk):
            c = k.coords_of(cand[:, j])
            cd = _masked(sq_dist(qp, k.gather(c)), k, c, k_valid, k_weight)
            better = cd < bestd
            best = torch.where(better.unsqueeze(0), c, best)
            bestd = torch.where(better, cd, bestd)
        nnf[:, pos] = best
        dist[pos] = bestd
    return nnf, dist


@torch.no_grad()
def patchmatch(q: _Grid, k: _Grid, *, iters: int = 20, init: torch.Tensor | None = None,
               k_valid: torch.Tensor | None = None, steps: Sequence[int] = (4, 2, 1), n_random: int = 3,
               chunk: int = 0, generator: torch.Generator | None = None, rescue_frac: float = 0.1,
               rescue_dim: int = 32, rescue_topk: int = 8,
               k_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate nearest key patch for every query patch.

    ``init`` (3, Nq) warm-starts the field (e.g. the previous EM iteration's, or the
    coarser level's up-sampled); otherwise it starts uniformly at random and, after the
    iterations, the ``rescue_frac`` worst positions are re-searched (``rescue``; never
    for a warm start, whose field is already near-converged). ``k_valid`` (bool over the
    key's valid grid) forbids key positions; ``k_weight`` (float over the key's valid grid)
    multiplies the distance to each key (the completeness normalisation of
    ``generate.completeness_weights``), and the distances returned are then these costs.
    ``q`` and ``k`` are ``PatchGrid``s or
    ``FeatureGrid``s (reduced descriptors; the distances are then theirs). Returns
    (field (3, Nq) int64, squared distances (Nq,)); a position whose every candidate was
    forbidden keeps distance inf.
    """
    device = q.device
    chunk = default_chunk(device, chunk)
    if init is None:
        nnf = random_field(q, k, k_valid, generator)
    else:
        nnf = k.clamp(init.to(device=device, dtype=torch.long).clone())
    dist = _masked(patch_distances(q, k, nnf, chunk), k, nnf, k_valid, k_weight)
    if init is None:
        # Videos are coherent: the patch at the same relative place in the key is a far
        # better first guess than a random one for the static parts of a scene.
        same = scaled_identity(q, k)
        sd = _masked(patch_distances(q, k, same, chunk), k, same, k_valid, k_weight)
        better = sd < dist
        nnf = torch.where(better.unsqueeze(0), same, nnf)
        dist = torch.where(better, sd, dist)

    tv, hv, wv = q.valid
    strides = (hv * wv, wv, 1)
    extent = max(k.valid)
    levels = max(1, math.ceil(math.log2(max(extent, 2))) + 1)
    kv = torch.tensor(k.valid, device=device).view(3, 1)
    for it in range(iters):
        step = int(steps[it % len(steps)])
        sign = 1 if it % 2 == 0 else -1
        radii = [max(1, int(extent * 0.5 ** ((it * n_random + m) % levels))) for m in range(n_random)]
        for s in range(0, q.numel, chunk):
            e = min(s + chunk, q.numel)
            flat = torch.arange(s, e, device=device)
            qc = q.coords_of(flat)
            qp = q.gather(qc)
            cur = nnf[:, s:e]          # views: updates land in nnf / dist directly
            curd = dist[s:e]
            cands = []
            for d in range(3):
                src = qc[d] - sign * step
                ok = (src >= 0) & (src < q.valid[d])
                nb = (flat - sign * step * strides[d]).clamp_(0, q.numel - 1)
                cand = nnf[:, nb].clone()
                cand[d] += sign * step
                # no neighbour there (border): propose the current match, a no-op
                cand = torch.where(ok.unsqueeze(0), cand, cur)
                cands.append(k.clamp(cand))
            for r in radii:
                # Uniform over the window of radius r around the current match, cut to the
                # key (sampling then clamping would pile candidates up on the borders).
                lo = (cur - r).clamp_(min=0)
                hi = torch.minimum(cur + r, kv - 1)
                u = torch.rand((3, e - s), device=device, generator=generator)
                cands.append(lo + (u * (hi - lo + 1).to(u.dtype)).long().minimum(hi - lo))
            for cand in cands:
                cd = _masked(sq_dist(qp, k.gather(cand)), k, cand, k_valid, k_weight)
                better = cd < curd
                cur.copy_(torch.where(better.unsqueeze(0), cand, cur))
                curd.copy_(torch.where(better, cd, curd))
    if init is None and rescue_frac > 0:
        nnf, dist = rescue(q, k, nnf, dist, frac=rescue_frac, dim=rescue_dim, topk=rescue_topk, k_valid=k_valid,
                           chunk=chunk, generator=generator, k_weight=k_weight)
    return nnf, dist


def resize_field(nnf: torch.Tensor, q_valid: Sequence[int], k_valid_old: Sequence[int],
                 new_q_valid: Sequence[int], new_k: _Grid) -> torch.Tensor:
    """Carry a field to the next (finer) level: interpolate the matched coordinates over
    the new query grid and rescale them to the new key grid (align-corners mapping, so
    first and last positions map onto each other), then round and clamp.
    """
    f = nnf.view(1, 3, *q_valid).float()
    f = torch.nn.functional.interpolate(f, size=tuple(new_q_valid), mode="trilinear", align_corners=True)[0]
    for d in range(3):
        old, new = k_valid_old[d], new_k.valid[d]
        f[d] *= (new - 1) / (old - 1) if old > 1 else 0.0
        if old == 1:
            f[d] += (new - 1) / 2.0
    return new_k.clamp(f.round_().long().reshape(3, -1))
