"""Space-time patches without materialising them: gathers, distances and voting (fold).

A video (C, T, H, W) with patch size (kt, kh, kw) has a *valid grid* of patch
positions (T-kt+1, H-kh+1, W-kw+1); a patch is named by the (t, h, w) of its first
voxel. Unfolding every patch would cost kt*kh*kw (147) times the video's memory, which
rules out full-HD video. Instead ``PatchGrid`` keeps *row patches*: for every voxel,
the kw voxels to its right, channels last, contiguous (kw*C floats, 21 for RGB). A
whole patch is then kt*kh rows at fixed offsets from its first row, so gathering the
patches of any set of positions is one ``index_select`` of short contiguous rows
(memory O(video size), kw times the video), and distances are computed chunk by chunk.

Nearest-neighbour fields are int64 tensors (3, N) of key coordinates (t, h, w) for the
N query positions in row-major order of the query's valid grid.

*Reduced descriptors* (``FeatureGrid``): a search may compare patches through a PCA
projection of the 147*C-dim patches to a few dozen dims (``fit_pca`` on the key's
patches, ``PatchGrid.project``: one 3D convolution). Every position then holds one
contiguous short vector, so a candidate costs one ``index_select`` of ``search_dim``
values (64 by default) instead of kt*kh rows of kw*C floats (441): 7x less gathered and
compared in float32, 14x in float16 (stored as float16 by default; on CPU a gathered
chunk is compared in float32). Voting always uses the true patches.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import HpgenError


#: values per chunk of ``PatchGrid.project``'s convolution (256 MB in float32)
PROJECT_CHUNK_VALUES = 1 << 26


def default_vote_budget(device: torch.device | str) -> int:
    """Floats in the median vote stack of one output slab: 2^25 (128 MB) on CPU, where a
    smaller stack stays closer to cache, 2^28 (1 GB) on CUDA, for fewer, larger kernels."""
    return 2 ** 28 if torch.device(device).type == "cuda" else 2 ** 25


def default_chunk(device: torch.device | str, chunk: int = 0) -> int:
    """Positions per distance chunk: small on CPU (the gathered patches stay in cache),
    large on CUDA (fewer kernel launches; 262144 positions x 441 floats = 0.46 GB)."""
    if chunk and chunk > 0:
        return int(chunk)
    return 262144 if torch.device(device).type == "cuda" else 8192


class _Grid:
    """Geometry shared by ``PatchGrid`` and ``FeatureGrid``: the valid grid of patch positions."""

    valid: tuple
    device: torch.device
    dtype: torch.dtype
    dim: int

    @property
    def numel(self) -> int:
        """Number of patch positions."""
        t, h, w = self.valid
        return t * h * w

    def coords_of(self, flat: torch.Tensor) -> torch.Tensor:
        """(3, n) coordinates of flat valid-grid indices."""
        _, hv, wv = self.valid
        return torch.stack((flat // (hv * wv), (flat // wv) % hv, flat % wv))

    def flat_of(self, coords: torch.Tensor) -> torch.Tensor:
        _, hv, wv = self.valid
        return (coords[0] * hv + coords[1]) * wv + coords[2]

    def clamp(self, coords: torch.Tensor) -> torch.Tensor:
        """Clamp coordinates (3, n) into the valid grid, in place."""
        for d in range(3):
            coords[d].clamp_(0, self.valid[d] - 1)
        return coords

    def all_patches(self) -> torch.Tensor:
        """Every patch (or descriptor), (numel, dim): for exact search on small videos only."""
        flat = torch.arange(self.numel, device=self.device)
        return self.gather(self.coords_of(flat))


def compute_dtype(storage: torch.dtype, device: torch.device | str) -> torch.dtype:
    """dtype that distances of ``storage`` descriptors are computed in: the storage's on
    CUDA, float32 for half storage on CPU (whose half arithmetic is slow, while converting
    a gathered chunk costs nothing measurable: 8192 x 64 gathers + distances took the same
    time from float16 storage as from float32)."""
    if torch.device(device).type == "cpu" and storage in (torch.float16, torch.bfloat16):
        return torch.float32
    return storage


class FeatureGrid(_Grid):
    """Per-position descriptors (numel, d) on a valid grid (e.g. PCA-projected patches):
    same interface as ``PatchGrid`` for searching (``gather`` etc.), not for voting.
    ``dtype`` is the dtype gathered descriptors are returned in (``compute_dtype``)."""

    def __init__(self, feats: torch.Tensor, valid: Sequence[int]):
        self.valid = tuple(int(v) for v in valid)
        if feats.dim() != 2 or feats.shape[0] != self.numel:
            raise ValueError(f"expected ({self.numel}, d) descriptors, got {tuple(feats.shape)}")
        self.feats = feats
        self.device = feats.device
        self.dtype = compute_dtype(feats.dtype, feats.device)
        self.dim = feats.shape[1]

    def gather(self, coords: torch.Tensor) -> torch.Tensor:
        return self.feats.index_select(0, self.flat_of(coords)).to(self.dtype)

    def all_patches(self) -> torch.Tensor:
        return self.feats.to(self.dtype)


class PatchGrid(_Grid):
    """Row-patch view of a (C, T, H, W) video for patch size ``ksize`` = (kt, kh, kw)."""

    def __init__(self, video: torch.Tensor, ksize: Sequence[int]):
        if video.dim() != 4:
            raise ValueError(f"expected a (C, T, H, W) video, got shape {tuple(video.shape)}")
        c, t, h, w = video.shape
        kt, kh, kw = (int(k) for k in ksize)
        if t < kt or h < kh or w < kw:
            raise HpgenError(f"a video of {t}x{h}x{w} (frames x height x width) is smaller than the "
                             f"{kt}x{kh}x{kw} patch")
        self.ksize = (kt, kh, kw)
        self.video = video  # a reference (no copy), for ``project``
        self.channels = c
        self.shape = (t, h, w)
        self.valid = (t - kt + 1, h - kh + 1, w - kw + 1)
        self.device = video.device
        wv = self.valid[2]
        self.dtype = video.dtype
        self._rows = None
        a = torch.arange(kt, device=video.device).view(kt, 1)
        b = torch.arange(kh, device=video.device).view(1, kh)
        # Row offsets of the kt*kh rows of a patch, relative to its first row.
        self.row_offsets = ((a * h + b) * wv).reshape(-1)
        self.dim = kt * kh * kw * c

    @property
    def rows(self) -> torch.Tensor:
        """(T*H*Wv, kw*C) row patches, built on first use (a search on ``project``ed
        descriptors never needs the query's): row r = (t*H + h)*Wv + w holds voxels w..w+kw-1."""
        if self._rows is None:
            t, h, _ = self.shape
            kw, c = self.ksize[2], self.channels
            rows = self.video.permute(1, 2, 3, 0).unfold(2, kw, 1).permute(0, 1, 2, 4, 3)
            self._rows = rows.reshape(t * h * self.valid[2], kw * c).contiguous()
        return self._rows

    def first_rows(self, coords: torch.Tensor) -> torch.Tensor:
        """Row index of the first row of the patches at ``coords`` (3, n)."""
        _, h, _ = self.shape
        wv = self.valid[2]
        return (coords[0] * h + coords[1]) * wv + coords[2]

    def gather(self, coords: torch.Tensor) -> torch.Tensor:
        """Patches at key coordinates ``coords`` (3, n) as (n, kt*kh*kw*C)."""
        r = self.first_rows(coords)
        idx = (r.unsqueeze(1) + self.row_offsets).reshape(-1)
        return self.rows.index_select(0, idx).view(coords.shape[1], self.dim)

    def project(self, basis: torch.Tensor, dtype: torch.dtype | None = None,
                chunk_values: int = PROJECT_CHUNK_VALUES) -> FeatureGrid:
        """Descriptors ``patch @ basis`` of every position, basis (dim, d) as from ``fit_pca``:
        a 3D convolution of the video, stored as ``dtype`` (default: the video's).

        The convolution runs a few output frames at a time (about ``chunk_values`` values
        each) and each chunk is written straight into the (positions, d) result, so the only
        memory beyond the descriptors is one chunk. At 1080x1920x13 the descriptors are
        5.8 GB in float32; a whole-video convolution plus its transpose needed twice that,
        which ran a 23 GB machine out of memory."""
        kt, kh, kw = self.ksize
        d = basis.shape[1]
        tv, hv, wv = self.valid
        # Patch vector index ((a*kh + b)*kw + c)*C + ch  <->  conv weight [:, ch, a, b, c].
        w = basis.t().reshape(d, kt, kh, kw, self.channels).permute(0, 4, 1, 2, 3)
        w = w.to(self.video.dtype).contiguous()
        feats = torch.empty((self.numel, d), device=self.device, dtype=dtype or self.video.dtype)
        frames = max(1, chunk_values // max(1, d * hv * wv))
        for t0 in range(0, tv, frames):
            t1 = min(t0 + frames, tv)
            out = torch.nn.functional.conv3d(self.video[:, t0:t1 + kt - 1].unsqueeze(0), w)[0]
            feats[t0 * hv * wv:t1 * hv * wv] = out.reshape(d, -1).t()
        return FeatureGrid(feats, self.valid)


def fit_pca(grid: PatchGrid, dim: int, samples: int = 8192, generator: torch.Generator | None = None,
            k_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Orthonormal basis (grid.dim, dim) of the top principal components of ``samples``
    random patches of ``grid`` (only allowed ones when ``k_valid`` is given). Distances
    are translation invariant, so no mean is stored: project both sides with the basis."""
    dim = max(1, min(int(dim), grid.dim))
    if k_valid is None:
        flat = torch.randint(0, grid.numel, (min(samples, grid.numel),), device=grid.device, generator=generator)
    else:
        allowed = torch.nonzero(k_valid.reshape(-1)).squeeze(1)
        pick = torch.randint(0, allowed.numel(), (min(samples, allowed.numel()),), device=grid.device,
                             generator=generator)
        flat = allowed[pick]
    p = grid.gather(grid.coords_of(flat)).double()
    p = p - p.mean(0)
    _, vec = torch.linalg.eigh(p.t() @ p)   # ascending eigenvalues
    return vec[:, -dim:].flip(1).to(grid.dtype).contiguous()


def sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise squared L2 distance of (n, d) tensors, by subtraction (no cancellation)."""
    d = a - b
    return torch.linalg.vecdot(d, d)


def patch_distances(q: _Grid, k: _Grid, nnf: torch.Tensor, chunk: int = 0) -> torch.Tensor:
    """Exact squared distance of every query patch to its matched key patch, (N,)."""
    chunk = default_chunk(q.device, chunk)
    out = torch.empty(q.numel, device=q.device, dtype=q.dtype)
    for s in range(0, q.numel, chunk):
        e = min(s + chunk, q.numel)
        flat = torch.arange(s, e, device=q.device)
        out[s:e] = sq_dist(q.gather(q.coords_of(flat)), k.gather(nnf[:, s:e]))
    return out


def _vote_mean(v: PatchGrid, nnf: torch.Tensor, out_thw: Sequence[int]) -> torch.Tensor:
    kt, kh, kw = v.ksize
    c = v.channels
    To, Ho, Wo = out_thw
    tq, hq, wq = To - kt + 1, Ho - kh + 1, Wo - kw + 1
    acc = torch.zeros(To, Ho, Wo, c, device=v.device, dtype=v.rows.dtype)
    first = v.first_rows(nnf)
    h_in, wv = v.shape[1], v.valid[2]
    for a in range(kt):
        for b in range(kh):
            rows = v.rows.index_select(0, first + (a * h_in + b) * wv).view(tq, hq, wq, kw, c)
            for cc in range(kw):
                acc[a:a + tq, b:b + hq, cc:cc + wq] += rows[:, :, :, cc]
    # Voxel (t, h, w) is covered by (#patch t-offsets) x (#h-offsets) x (#w-offsets) patches.
    counts = [torch.zeros(n, device=v.device, dtype=acc.dtype) for n in (To, Ho, Wo)]
    for cnt, k, n in zip(counts, (kt, kh, kw), (tq, hq, wq)):
        for o in range(k):
            cnt[o:o + n] += 1
    denom = counts[0].view(-1, 1, 1) * counts[1].view(1, -1, 1) * counts[2].view(1, 1, -1)
    return (acc / denom.unsqueeze(-1)).permute(3, 0, 1, 2).contiguous()


def _vote_median(v: PatchGrid, nnf: torch.Tensor, out_thw: Sequence[int], budget: int) -> torch.Tensor:
    """Per-voxel, per-channel median of all patch votes, computed over output slabs of
    (frames x rows) so that the (votes x slab) stack stays within ``budget`` floats."""
    kt, kh, kw = v.ksize
    c = v.channels
    To, Ho, Wo = out_thw
    tq, hq, wq = To - kt + 1, Ho - kh + 1, Wo - kw + 1
    nvotes = kt * kh * kw
    out = torch.empty(To, Ho, Wo, c, device=v.device, dtype=v.rows.dtype)
    field = nnf.view(3, tq, hq, wq)
    h_in, wv = v.shape[1], v.valid[2]
    row_voxels = Wo * c * nvotes
    rows_per_slab = max(1, budget // row_voxels)
    slabs = []
    if rows_per_slab >= Ho:
        nt = max(1, rows_per_slab // Ho)
        slabs = [(t0, min(t0 + nt, To), 0, Ho) for t0 in range(0, To, nt)]
    else:
        slabs = [(t0, t0 + 1, h0, min(h0 + rows_per_slab, Ho))
                 for t0 in range(To) for h0 in range(0, Ho, rows_per_slab)]
    for t0, t1, h0, h1 in slabs:
        stack = torch.full((t1 - t0, h1 - h0, Wo, c, nvotes), float("nan"), device=v.device,
                           dtype=v.rows.dtype)
        for a in range(kt):
            # patch positions p with output voxel p + a in [t0, t1)
            pt0, pt1 = max(t0 - a, 0), min(t1 - a, tq)
            if pt0 >= pt1:
                continue
            for b in range(kh):
                ph0, ph1 = max(h0 - b, 0), min(h1 - b, hq)
                if ph0 >= ph1:
                    continue
                sub = field[:, pt0:pt1, ph0:ph1].reshape(3, -1)
                rows = v.rows.index_select(0, v.first_rows(sub) + (a * h_in + b) * wv)
                rows = rows.view(pt1 - pt0, ph1 - ph0, wq, kw, c)
                ot, oh = pt0 + a - t0, ph0 + b - h0
                # Vote (a, b, cc) of patch column w lands on voxel column w + cc, slot
                # (a*kh + b)*kw + cc: one strided view covers all kw of them, so the kw
                # copies are one (1.7x faster on CPU than kw slice copies, one kernel on GPU).
                dst = stack[ot:ot + pt1 - pt0, oh:oh + ph1 - ph0, :, :, (a * kh + b) * kw:]
                st = dst.stride()
                dst.as_strided(rows.shape, (st[0], st[1], st[2], st[2] + st[4], st[3]),
                               dst.storage_offset()).copy_(rows)
        out[t0:t1, h0:h1] = torch.nanmedian(stack, dim=-1).values
    return out.permute(3, 0, 1, 2).contiguous()


def vote(v: torch.Tensor | PatchGrid, nnf: torch.Tensor, out_thw: Sequence[int], ksize: Sequence[int] | None = None,
         reduce: str = "median", budget: int = 0) -> torch.Tensor:
    """Fold: the output video (C, *out_thw) whose voxels are the median (or mean) of the
    values that every overlapping output patch copies from its matched patch of ``v``.

    ``nnf`` (3, N) holds the matched coordinates in ``v`` for each of the N valid patch
    positions of the output (row-major). ``budget`` bounds the median's vote stack in
    floats (0: 2^25 on CPU, 2^28 on CUDA).
    """
    grid = v if isinstance(v, PatchGrid) else PatchGrid(v, ksize)
    kt, kh, kw = grid.ksize
    To, Ho, Wo = (int(x) for x in out_thw)
    n = (To - kt + 1) * (Ho - kh + 1) * (Wo - kw + 1)
    if nnf.shape != (3, n):
        raise ValueError(f"field of shape {tuple(nnf.shape)} does not fit an output of {To}x{Ho}x{Wo}")
    if reduce == "mean":
        return _vote_mean(grid, nnf, (To, Ho, Wo))
    if reduce == "median":
        if not budget:
            budget = default_vote_budget(grid.device)
        return _vote_median(grid, nnf, (To, Ho, Wo), budget)
    raise HpgenError(f"unknown voting '{reduce}' (use median or mean)")
