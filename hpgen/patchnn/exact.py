"""Exact nearest-neighbour search over all key patches: the reference for PatchMatch.

Brute force through matrix products, ``|k|^2 - 2 q.k`` per query chunk (the query's own
norm does not change the argmin). It needs every key patch unfolded (keys x 147*C
floats) and costs queries x keys x dim multiply-adds, so it is meant for small videos,
tests, and the coarse pyramid levels where it is cheaper than PatchMatch. Distances
are recomputed by subtraction for the chosen keys so they compare exactly with
PatchMatch's.
"""
from __future__ import annotations

import torch

from .patches import PatchGrid, default_chunk, patch_distances


@torch.no_grad()
def exact_nn(q: PatchGrid, k: PatchGrid, k_valid: torch.Tensor | None = None,
             chunk: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest key patch of every query patch.

    ``k_valid`` (bool, key valid-grid shape or flat) excludes key positions (inpainting).
    Returns (nnf (3, Nq) int64 key coordinates, squared distances (Nq,)).
    """
    kp = k.all_patches()
    kn = torch.linalg.vecdot(kp, kp)
    if k_valid is not None:
        kn = kn.masked_fill(~k_valid.reshape(-1), float("inf"))
    # Keep the (chunk x keys) score matrix near 2^24 floats.
    rows = max(1, min(default_chunk(q.device, chunk), (1 << 24) // max(1, k.numel)))
    best = torch.empty(q.numel, dtype=torch.long, device=q.device)
    for s in range(0, q.numel, rows):
        e = min(s + rows, q.numel)
        qp = q.gather(q.coords_of(torch.arange(s, e, device=q.device)))
        scores = torch.addmm(kn.unsqueeze(0), qp, kp.t(), beta=1.0, alpha=-2.0)
        best[s:e] = scores.argmin(dim=1)
    nnf = k.coords_of(best)
    return nnf, patch_distances(q, k, nnf, chunk)
