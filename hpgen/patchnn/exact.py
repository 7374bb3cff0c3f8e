"""Exact nearest-neighbour search over all key patches: the reference for PatchMatch, and
the one exact search of the project (the NNFDIV and bidirectional-similarity metrics
call it too).

Brute force through matrix products, ``|k|^2 - 2 q.k`` per query chunk (the query's own
norm does not change the argmin). It needs every key patch unfolded (keys x 147*C
floats) and costs queries x keys x dim multiply-adds, so it is meant for small videos,
tests, and the coarse pyramid levels where it is cheaper than PatchMatch. Distances
are recomputed by subtraction for the chosen keys so they compare exactly with
PatchMatch's.

``exact_nn_both`` returns both directions (every query's nearest key and every key's
nearest query) from the same score matrix: one pass instead of two, which is what the
bidirectional similarity measure needs.
"""
from __future__ import annotations

from typing import Iterator

import torch

from .patches import PatchGrid, default_chunk, patch_distances


def _score_chunks(q: PatchGrid, kp: torch.Tensor, kn: torch.Tensor, chunk: int
                  ) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """(start, end, query patches, scores = |k|^2 - 2 q.k) for successive query chunks;
    ``kp`` are all key patches (keys, dim), ``kn`` their squared norms (or +inf: excluded)."""
    # Keep the (chunk x keys) score matrix near 2^24 floats.
    rows = max(1, min(default_chunk(q.device, chunk), (1 << 24) // max(1, kp.shape[0])))
    for s in range(0, q.numel, rows):
        e = min(s + rows, q.numel)
        qp = q.gather(q.coords_of(torch.arange(s, e, device=q.device)))
        yield s, e, qp, torch.addmm(kn.unsqueeze(0), qp, kp.t(), beta=1.0, alpha=-2.0)


@torch.no_grad()
def exact_nn(q: PatchGrid, k: PatchGrid, k_valid: torch.Tensor | None = None,
             chunk: int = 0, k_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest key patch of every query patch. Ties go to the lowest key index.

    ``k_valid`` (bool, key valid-grid shape or flat) excludes key positions (inpainting).
    ``k_weight`` (float, same shape) multiplies the squared distance to each key (the
    completeness normalisation); the costs are then what is minimised and returned.
    Returns (nnf (3, Nq) int64 key coordinates, squared distances (Nq,)).
    """
    kp = k.all_patches()
    kn = torch.linalg.vecdot(kp, kp)
    if k_valid is not None:
        kn = kn.masked_fill(~k_valid.reshape(-1), float("inf"))
    w = None if k_weight is None else k_weight.reshape(-1).to(kn.dtype).unsqueeze(0)
    best = torch.empty(q.numel, dtype=torch.long, device=q.device)
    for s, e, qp, scores in _score_chunks(q, kp, kn, chunk):
        if w is not None:
            # A per-key factor needs the whole squared distance, |q|^2 included.
            scores = scores.add_(torch.linalg.vecdot(qp, qp).unsqueeze(1)).clamp_(min=0).mul_(w)
        best[s:e] = scores.argmin(dim=1)
    nnf = k.coords_of(best)
    d = patch_distances(q, k, nnf, chunk)
    return nnf, d if w is None else d * w[0, best]


@torch.no_grad()
def exact_nn_both(a: PatchGrid, b: PatchGrid, chunk: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest ``b`` patch of every ``a`` patch and nearest ``a`` patch of every ``b`` patch,
    from one pass over the a x b distances. Ties go to the lowest index on both sides.

    Returns (nnf a->b (3, Na), squared distances (Na,), nnf b->a (3, Nb), squared distances (Nb,)).
    """
    kp = b.all_patches()
    kn = torch.linalg.vecdot(kp, kp)
    best_ab = torch.empty(a.numel, dtype=torch.long, device=a.device)
    best_ba = torch.zeros(b.numel, dtype=torch.long, device=a.device)
    best_ba_d = torch.full((b.numel,), float("inf"), device=a.device, dtype=kn.dtype)
    for s, e, qp, scores in _score_chunks(a, kp, kn, chunk):
        best_ab[s:e] = scores.argmin(dim=1)
        # Adding |a|^2 per row completes the squared distance, which the column minimum
        # needs (it compares different rows); the row argmin is unchanged by it.
        scores.add_(torch.linalg.vecdot(qp, qp).unsqueeze(1))
        # Column minima without indices are 4x faster than with (a strided reduction);
        # indices are then found only for the columns this chunk improves.
        d = scores.amin(dim=0)
        better = torch.nonzero(d < best_ba_d).squeeze(1)  # strict: earlier chunks keep ties
        if better.numel():
            best_ba_d[better] = d[better]
            best_ba[better] = scores.index_select(1, better).argmin(dim=0) + s
    nnf_ab, nnf_ba = b.coords_of(best_ab), a.coords_of(best_ba)
    return nnf_ab, patch_distances(a, b, nnf_ab, chunk), nnf_ba, patch_distances(b, a, nnf_ba, chunk)
