"""Bidirectional patch similarity (Simakov et al., CVPR 2008, "Summarizing visual data
using bidirectional similarity"), as two pair metrics:

* ``coherence``: every 3x7x7 (t, h, w) patch of the generated video, distance to its
  nearest patch of the input. Low when the fake is made of input-like patches.
* ``completeness``: every 3x7x7 patch of the input, distance to its nearest patch of
  the generated video. Low when everything in the input appears in the fake.

"Texture soup" in the input's colours passes coherence (each patch looks like some input
patch) and fails completeness (the input's sky, objects and layout are missing); a copy
of the input scores 0 on both.

Each direction is an RMSE over patches, on videos in hpgen's [-1, 1] range:
``sqrt(mean_patches |p - nn(p)|^2 / patch_dim)``, divided by the same RMSE with a
uniform-noise video (U[-1, 1], fixed seed, at the working size) in place of the fake.
So 0 = perfect, about 1 = as far as noise; lower is better for both. (The ratio does not
depend on the value range: both RMSEs scale alike.)

* ``shift_copy``: the largest fraction of the generated video that is the input moved by
  one spatial offset. From the coherence search (no extra cost): each fake patch's
  nearest input patch gives a displacement (dt, dy, dx); the fraction of fake patches
  whose (dy, dx) falls in the most populated 3x3 square of offsets. A copy of the input,
  or the input translated (in space or time), scores about 1; a collage of many
  differently shifted pieces scores low. The square (one working-grid cell either way)
  absorbs the rounding of a shift that is not a whole number of working cells (resizing
  to the working size turns a shift of s px into s x height/H cells). dt is left out: in
  static regions every frame holds the same patch, so the matched frame is arbitrary.
  Lower = more novel.

Search: exact (``hpgen.patchnn.exact.exact_nn_both``: both directions from one pass over
the distances), at a small working size: both videos are resized with
``hpgen.pyramid.resize`` to ``height`` (default 36) px high, aspect kept, frames kept,
never enlarged. Videos with fewer than 3 frames use 1x7x7 patches (image mode); a
working frame smaller than 7 px shrinks the patch to fit. Both sizes are recorded.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..pyramid import resize

PATCH = (3, 7, 7)
WORK_HEIGHT = 36
NOISE_SEED = 0


def working_thw(thw: Sequence[int], height: int | None = WORK_HEIGHT) -> tuple[int, int, int]:
    """(T, H, W) the search runs at: ``height`` px high, aspect kept, never enlarged
    (enlarging adds cost, not information); ``height`` None or 0 keeps the size."""
    t, h, w = (int(v) for v in thw)
    if not height or height >= h:
        return t, h, w
    return t, int(height), max(1, round(w * height / h))


def patch_for(thw: Sequence[int], patch: Sequence[int] = PATCH) -> tuple[int, int, int]:
    """Patch size used on a video of ``thw``: 1 frame deep below 3 frames (image mode),
    and no larger than the frame."""
    t, h, w = thw
    kt = patch[0] if t >= patch[0] else 1
    return kt, min(patch[1], h), min(patch[2], w)


def _rmse(sq_dist: torch.Tensor, dim: int) -> float:
    return math.sqrt(float(sq_dist.double().mean()) / dim)


def modal_shift_fraction(nnf: torch.Tensor, q, k_valid: Sequence[int]) -> float:
    """Fraction of the positions of grid ``q`` whose spatial displacement (dy, dx) to their
    match (field ``nnf`` (3, q.numel) of coordinates on a key grid of valid shape
    ``k_valid``) lies in the most populated 3x3 square of displacements (``shift_copy``).
    Time is left out: in a static region every frame holds the same patch, so the matched
    frame is arbitrary, while the spatial offset is not."""
    disp = nnf[1:] - q.coords_of(torch.arange(q.numel, device=nnf.device))[1:]
    lo = [-(int(v) - 1) for v in q.valid[1:]]
    size = [int(kv) + int(qv) - 1 for kv, qv in zip(k_valid[1:], q.valid[1:])]  # every possible offset
    idx = (disp[0] - lo[0]) * size[1] + (disp[1] - lo[1])
    hist = torch.bincount(idx, minlength=size[0] * size[1]).float().view(1, 1, *size)
    hist = torch.nn.functional.pad(hist, (1, 1, 1, 1))  # an offset at an edge has a square too
    square = torch.nn.functional.avg_pool2d(hist, 3, stride=1) * 9
    return float(square.max()) / nnf.shape[1]


def _both(a: torch.Tensor, b: torch.Tensor, ksize) -> tuple[float, float, float]:
    """(RMSE a -> nearest of b, RMSE b -> nearest of a, modal-shift fraction of a -> b) for
    (C, T, H, W) videos."""
    from ..patchnn.exact import exact_nn_both
    from ..patchnn.patches import PatchGrid

    ga, gb = PatchGrid(a.float().contiguous(), ksize), PatchGrid(b.float().contiguous(), ksize)
    nnf_ab, d_ab, _, d_ba = exact_nn_both(ga, gb)
    return _rmse(d_ab, ga.dim), _rmse(d_ba, gb.dim), modal_shift_fraction(nnf_ab, ga, gb.valid)


def uniform_noise(shape: Sequence[int], seed: int = NOISE_SEED, device="cpu") -> torch.Tensor:
    """U[-1, 1] video of ``shape``, the same for a given seed on every machine (drawn on CPU)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(tuple(shape), generator=g) * 2 - 1).to(device)


class BidirectionalReference:
    """The real video at the working size and its noise baselines, computed once and
    reused for every fake (``score``)."""

    def __init__(self, real: torch.Tensor, height: int | None = WORK_HEIGHT,
                 patch: Sequence[int] = PATCH, noise_seed: int = NOISE_SEED):
        if real.dim() != 4:
            raise ValueError(f"real video must be (C, T, H, W), got {tuple(real.shape)}")
        self.real_thw = tuple(real.shape[1:])
        self.thw = working_thw(self.real_thw, height)
        self.patch = patch_for(self.thw, patch)
        self.noise_seed = noise_seed
        self.real = self._work(real)
        noise = uniform_noise(self.real.shape, noise_seed, self.real.device)
        self.noise_coherence, self.noise_completeness, _ = _both(noise, self.real, self.patch)

    def _work(self, video: torch.Tensor) -> torch.Tensor:
        video = video.detach().float()
        return video if tuple(video.shape[1:]) == self.thw else resize(video, self.thw)

    def raw(self, fake: torch.Tensor) -> tuple[float, float, float]:
        """Unnormalised (coherence RMSE, completeness RMSE, shift-copy fraction) of a fake of
        the real's size."""
        if tuple(fake.shape[1:]) != self.real_thw:
            raise ValueError(f"fake is {tuple(fake.shape[1:])}, the real {self.real_thw} (TxHxW): resize it first")
        return _both(self._work(fake).to(self.real.device), self.real, self.patch)

    def score(self, fake: torch.Tensor) -> dict[str, float]:
        coh, comp, shift = self.raw(fake)
        return {"coherence": coh / self.noise_coherence, "completeness": comp / self.noise_completeness,
                "shift_copy": shift}


def describe(real_thw: Sequence[int], height: int | None = WORK_HEIGHT, ref: BidirectionalReference | None = None,
             patch: Sequence[int] = PATCH) -> str:
    """How the numbers are made, for the results' settings; with ``ref``, its noise RMSEs too."""
    thw = working_thw(real_thw, height)
    text = ("exact {}x{}x{} (TxHxW) patch NN at {}x{}x{}; RMSE in [-1, 1] / RMSE of U[-1, 1] noise "
            "(seed {})").format(*patch_for(thw, patch), *thw, NOISE_SEED)
    if ref is not None:
        text += f"; noise RMSE {ref.noise_coherence:.4g} (coherence), {ref.noise_completeness:.4g} (completeness)"
    return text


def bidirectional(real: torch.Tensor, fake: torch.Tensor, height: int | None = WORK_HEIGHT,
                  patch: Sequence[int] = PATCH) -> dict[str, float]:
    """{"coherence", "completeness", "shift_copy"} of one fake (C, T, H, W) against the real (same shape)."""
    return BidirectionalReference(real, height, patch).score(fake)
