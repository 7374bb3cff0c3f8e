"""NNF-diversity (NNFDIV, SinFusion, Nikankin et al. 2022, Sec. 7.2).

Pixel diversity rewards any change, including noise; NNFDIV instead asks how
much a generated video *re-arranges* the input. For every 3x3x3 space-time patch
of the generated video we find its nearest patch in the real video (the
nearest-neighbour field, NNF) and store the displacement (dt, dy, dx) from the
query position to the match. A copy of the input has a constant (zero) field;
a video assembled from many differently shifted pieces has a busy one. NNFDIV is
the zlib compression ratio of that field:

    NNFDIV = len(zlib.compress(bytes(D))) / size(D)

where D is the (3, T', H', W') displacement field cast to uint8 (mod 256), as in
the authors' reference implementation. Lower = closer to a copy; pure noise
gives a high value. For a set of samples we report the mean over samples.

Search: exact, through the project's one exact search (``hpgen.patchnn.exact``,
chunked ``||k||^2 - 2 q.k``). TODO(lead): switch to the shared PatchMatch
(hpgen/patchnn/patchmatch.py); the reference uses PatchMatch, which makes the
native resolution affordable. Because exact search is quadratic in the number
of patches, both videos are first resized (``hpgen.pyramid.resize``) to a
shorter side of ``short_side`` (default 48), frame count kept; that size is
recorded with every result.
"""
from __future__ import annotations

import zlib

import torch

from .svfid import short_side_resize


def video_patches(video: torch.Tensor, patch_size=(3, 3, 3)) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(C, T, H, W) -> all valid patches (N, C*pt*ph*pw) and the patch grid (T', H', W')."""
    pt, ph, pw = patch_size
    p = video.unfold(1, pt, 1).unfold(2, ph, 1).unfold(3, pw, 1)  # (C, T', H', W', pt, ph, pw)
    grid = tuple(p.shape[1:4])
    return p.permute(1, 2, 3, 0, 4, 5, 6).reshape(-1, video.shape[0] * pt * ph * pw), grid


@torch.no_grad()
def nearest_neighbour_field(query_video: torch.Tensor, key_video: torch.Tensor,
                            patch_size=(3, 3, 3), max_elems: int = 1 << 24) -> torch.Tensor:
    """Flat index into the key patch grid of each query patch's exact nearest neighbour
    (L2), shape (T', H', W') of the query grid. Ties go to the lowest index.
    ``max_elems`` bounds the (query chunk x keys) score matrix."""
    from ..patchnn.exact import exact_nn
    from ..patchnn.patches import PatchGrid

    q, k = PatchGrid(query_video.float(), patch_size), PatchGrid(key_video.float(), patch_size)
    nnf, _ = exact_nn(q, k, chunk=max(1, max_elems // max(1, k.numel)))
    return k.flat_of(nnf).view(q.valid)


def displacement_field(indices: torch.Tensor, key_grid: tuple[int, int, int]) -> torch.Tensor:
    """Flat key indices on the query grid (T', H', W') -> displacement (3, T', H', W')."""
    _, kh, kw = key_grid
    kt_, rem = indices // (kh * kw), indices % (kh * kw)
    ky, kx = rem // kw, rem % kw
    qt, qy, qx = torch.meshgrid(*(torch.arange(s, device=indices.device) for s in indices.shape), indexing="ij")
    return torch.stack([kt_ - qt, ky - qy, kx - qx])


def zlib_score(field: torch.Tensor) -> float:
    b = (field % 256).to(torch.uint8).contiguous().cpu().numpy()
    return len(zlib.compress(b.tobytes())) / b.size


def nnfdiv(real: torch.Tensor, fake: torch.Tensor, patch_size=(3, 3, 3), short_side: int | None = 48) -> float:
    """NNFDIV of one fake (3, T, H, W) w.r.t. the real video (same shape)."""
    r = short_side_resize(real, short_side)
    f = short_side_resize(fake, short_side)
    idx = nearest_neighbour_field(f, r, patch_size)
    kgrid = tuple(s - p + 1 for s, p in zip(r.shape[1:], patch_size))
    return zlib_score(displacement_field(idx, kgrid))
