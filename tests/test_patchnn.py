"""Patch nearest-neighbour core: patches/voting, exact search, PatchMatch, VGPNN generation."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hpgen.errors import HpgenError
from hpgen.patchnn import (PatchGrid, PatchNNConfig, exact_nn, generate, patch_distances, patchmatch,
                           pyramid_plan, resize_field, retarget, vote)
from hpgen.patchnn.patchmatch import random_field
from hpgen.pyramid import geometric_shapes, matched_shapes

from conftest import BUNDLED as BIKES, TREE
PS = (3, 7, 7)


def clip(path: Path, frames: int, h: int = 36, w: int = 64, start: int = 0) -> torch.Tensor:
    from hpgen.video import read_video, to_tensor

    return to_tensor(read_video(path, list(range(start, start + frames)), (h, w)))


def mean_nn_dist(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean squared distance of every output patch to its exact nearest input patch."""
    return exact_nn(PatchGrid(out, PS), PatchGrid(ref, PS))[1].mean().item()


# ---------------------------------------------------------------------------
# pyramid shapes

def test_geometric_shapes_floors_and_finest():
    s = geometric_shapes((13, 144, 256), spatial_factor=0.85, temporal_factor=0.85, min_hw=15, min_frames=3)
    assert s[-1] == (13, 144, 256)
    assert s[0] == (3, 15, 27)
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(s, s[1:]))
    # time reaches its floor before space: it stays there
    assert [t for t, _, _ in s[:6]] == [3] * 6
    # a clip already at the temporal floor keeps its frames
    assert {t for t, _, _ in geometric_shapes((2, 40, 40), spatial_factor=0.85, temporal_factor=0.85,
                                              min_hw=15, min_frames=3)} == {2}


def test_output_pyramid_never_smaller_than_a_patch():
    # The reference code crashes here: 4 output frames shrink below the temporal patch.
    ins, outs = pyramid_plan((13, 36, 64), (4, 20, 90), PatchNNConfig())
    assert len(ins) == len(outs)
    assert outs[-1] == (4, 20, 90)
    assert all(t >= 3 and h >= 7 and w >= 7 for t, h, w in outs)
    assert matched_shapes([(3, 10, 10), (6, 20, 20)], (12, 20, 40)) == [(6, 10, 20), (12, 20, 40)]


# ---------------------------------------------------------------------------
# patches, voting, exact search

def test_identity_field_votes_back_the_video():
    x = torch.rand(3, 6, 12, 15) * 2 - 1
    g = PatchGrid(x, PS)
    ident = g.coords_of(torch.arange(g.numel))
    for reduce in ("median", "mean"):
        assert torch.allclose(vote(x, ident, x.shape[1:], PS, reduce), x, atol=1e-5)
    # a tiny median budget forces per-row slabs and must give the same result
    assert torch.equal(vote(x, ident, x.shape[1:], PS, "median", budget=1), x)


def test_vote_median_is_the_median_of_votes():
    # Field that maps every output patch to one key patch: each voxel's votes are the key
    # patch's voxels at the offsets covering it; compare with a direct computation.
    torch.manual_seed(0)
    v = torch.randn(2, 4, 9, 9)
    out_thw = (4, 8, 8)
    n = (4 - 2) * (8 - 6) * (8 - 6)
    field = torch.tensor([[1], [2], [1]]).expand(3, n).contiguous()
    got = vote(v, field, out_thw, PS, "median")
    patch = v[:, 1:4, 2:9, 1:8]
    for (t, h, w) in [(0, 0, 0), (1, 3, 4), (3, 7, 7), (2, 1, 6)]:
        votes = [patch[:, t - a, h - b, w - c] for a in range(2) for b in range(2) for c in range(2)
                 if 0 <= t - a < 3 and 0 <= h - b < 7 and 0 <= w - c < 7]
        want = torch.stack(votes).median(dim=0).values  # lower median, as torch.nanmedian
        assert torch.allclose(got[:, t, h, w], want)


def two_region_seam(reduce: str) -> float:
    """Largest colour step between adjacent output columns where a region copied from a
    flat -1 key meets one copied from a flat +1 key, away from the borders (where fewer
    patches overlap a voxel)."""
    v = torch.cat((torch.full((1, 3, 9, 9), -1.0), torch.full((1, 3, 9, 9), 1.0)), dim=3)  # (1, 3, 9, 18)
    out_thw = (3, 9, 24)
    g = PatchGrid(torch.zeros(1, *out_thw), PS)
    pos = g.coords_of(torch.arange(g.numel))
    field = torch.zeros_like(pos)
    field[2] = torch.where(pos[2] < 9, 0, 9)  # left patches from the -1 half, right from the +1 half
    y = vote(v, field, out_thw, PS, reduce)
    return float((y[..., 1:] - y[..., :-1]).abs().max())


def test_mean_vote_blends_a_seam_that_the_median_leaves_hard():
    # Issue 12, fourth pass: where two regions copied from different input offsets meet,
    # the median jumps by the whole colour difference in one column (the hard seams of
    # the airballoons samples); the mean spreads it over the patch width.
    assert two_region_seam("median") == pytest.approx(2.0)
    assert two_region_seam("mean") <= 2.0 / PS[2] + 1e-6


def test_fine_levels_option_votes_by_mean_with_more_em_steps():
    # Issue 12, fourth pass: with fine_size set, levels above it use the mean vote and
    # em_iters_fine EM steps, the coarse ones (layout, objects) keep the median and
    # em_iters; the default (0) keeps the median and em_iters everywhere.
    from hpgen.patchnn.generate import _em_iters, _voting

    fine = (13, 144, 256)
    default = PatchNNConfig()
    assert (_voting(default, fine), _em_iters(default, 9, fine)) == ("median", default.em_iters)
    cfg = PatchNNConfig(fine_size=40)
    coarse = (3, 40, 71)
    assert (_voting(cfg, coarse), _em_iters(cfg, 3, coarse)) == ("median", cfg.em_iters)
    assert (_voting(cfg, fine), _em_iters(cfg, 9, fine)) == ("mean", cfg.em_iters_fine)
    with pytest.raises(HpgenError, match="voting_fine"):
        generate(torch.zeros(3, 6, 36, 64), PatchNNConfig(voting_fine="mode"))


def test_exact_nn_matches_brute_force():
    torch.manual_seed(0)
    q, k = torch.randn(3, 4, 10, 11), torch.randn(3, 5, 9, 12)
    qg, kg = PatchGrid(q, PS), PatchGrid(k, PS)
    nnf, d = exact_nn(qg, kg)
    full = torch.cdist(qg.all_patches(), kg.all_patches()) ** 2
    want_d, want_i = full.min(dim=1)
    assert torch.allclose(d, want_d, rtol=1e-4, atol=1e-3)
    assert (kg.flat_of(nnf) == want_i).float().mean() > 0.99
    assert torch.allclose(patch_distances(qg, kg, nnf), d)


def test_exact_nn_respects_forbidden_keys():
    torch.manual_seed(1)
    x = torch.randn(3, 5, 12, 12)
    g = PatchGrid(x, PS)
    allowed = torch.zeros(g.valid, dtype=torch.bool)
    allowed[:, :, :3] = True
    nnf, _ = exact_nn(g, g, allowed)
    assert (nnf[2] < 3).all()
    nnf, d = patchmatch(g, g, k_valid=allowed, generator=torch.Generator().manual_seed(0))
    assert (nnf[2] < 3).all() and torch.isfinite(d).all()


@pytest.mark.parametrize("path", [BIKES, TREE], ids=["bikes", "tree"])
def test_patchmatch_within_5_percent_of_exact(path):
    x = clip(path, 16)
    q, k = PatchGrid(x[:, :8].contiguous(), PS), PatchGrid(x[:, 8:].contiguous(), PS)
    _, d_exact = exact_nn(q, k)
    nnf, d_pm = patchmatch(q, k, generator=torch.Generator().manual_seed(0))
    # the returned distances are the field's true distances
    assert torch.allclose(patch_distances(q, k, nnf), d_pm)
    ratio = d_pm.mean().item() / d_exact.mean().item()
    assert 1.0 - 1e-4 <= ratio <= 1.05, ratio
    # and PatchMatch did real work: a random field is far worse
    d_rand = patch_distances(q, k, random_field(q, k, generator=torch.Generator().manual_seed(0)))
    assert d_rand.mean() > 2 * d_pm.mean()


def test_resize_field_maps_corners_to_corners():
    small = PatchGrid(torch.zeros(3, 5, 10, 12), PS)
    big = PatchGrid(torch.zeros(3, 9, 20, 25), PS)
    ident = small.coords_of(torch.arange(small.numel))
    up = resize_field(ident, small.valid, small.valid, big.valid, big).view(3, *big.valid)
    assert up[:, 0, 0, 0].tolist() == [0, 0, 0]
    assert up[:, -1, -1, -1].tolist() == [v - 1 for v in big.valid]
    assert (up[2, 0, 0, 1:] >= up[2, 0, 0, :-1]).all()


# ---------------------------------------------------------------------------
# generation and retargeting on real clips

def test_generate_diverse_and_made_of_input_patches():
    x = clip(BIKES, 8)
    cfg = PatchNNConfig()
    a = generate(x, cfg, seed=0)
    b = generate(x, cfg, seed=1)
    assert a.shape == (3, 6, 36, 64)  # frames_ratio 0.75 of 8
    assert torch.isfinite(a).all() and a.abs().max() <= 1.0 + 1e-5
    assert (a - b).abs().mean() > 0.05                      # samples differ from each other
    assert (a - x[:, :6]).abs().mean() > 0.05               # and from the input
    # every output patch is close to some input patch: compare with a noise baseline, the
    # input's own pixels shuffled (same colours, no structure)
    g = torch.Generator().manual_seed(0)
    shuffled = x.reshape(3, -1)[:, torch.randperm(x[0].numel(), generator=g)].reshape(x.shape)[:, :6]
    d_out, d_noise = mean_nn_dist(a, x), mean_nn_dist(shuffled, x)
    assert d_out < 0.2 * d_noise, (d_out, d_noise)
    # same seed, same sample
    assert torch.equal(generate(x, cfg, seed=0), a)


def test_retarget_has_exact_shape_and_input_patches():
    x = clip(TREE, 8)
    for shape in [(5, 30, 96), (9, 24, 40)]:
        y = retarget(x, shape)
        assert tuple(y.shape) == (3, *shape)
        g = torch.Generator().manual_seed(0)
        noise = (torch.rand(3, *shape, generator=g) * 2 - 1)
        assert mean_nn_dist(y, x) < 0.2 * mean_nn_dist(noise, x)


def test_bad_sizes_are_user_errors():
    x = torch.zeros(3, 2, 36, 64)
    with pytest.raises(HpgenError, match="fewer than the temporal patch"):
        generate(x)
    with pytest.raises(HpgenError, match="smaller than the 3x7x7 patch"):
        generate(torch.zeros(3, 6, 36, 64), out_shape=(6, 5, 64))
    with pytest.raises(HpgenError, match="smaller than the 7x7 patch"):
        generate(torch.zeros(3, 6, 36, 6))
    with pytest.raises(HpgenError, match="voting"):
        generate(torch.zeros(3, 6, 36, 64), PatchNNConfig(voting="mode"))


# ---------------------------------------------------------------------------
# reduced search descriptors (PCA) and the cold-start rescue

def test_projected_descriptors_are_patches_times_basis():
    from hpgen.patchnn.patches import FeatureGrid, fit_pca

    torch.manual_seed(0)
    x = torch.randn(4, 6, 12, 15)  # 4 channels: Q/K may carry extra channels (analogies)
    g = PatchGrid(x, PS)
    basis = fit_pca(g, 20, generator=torch.Generator().manual_seed(0))
    assert basis.shape == (g.dim, 20)
    assert torch.allclose(basis.t() @ basis, torch.eye(20), atol=1e-4)
    f = g.project(basis)
    assert isinstance(f, FeatureGrid) and f.valid == g.valid
    assert torch.allclose(f.feats, g.all_patches() @ basis, atol=1e-4)
    coords = g.coords_of(torch.tensor([0, 7, g.numel - 1]))
    assert torch.allclose(f.gather(coords), g.gather(coords) @ basis, atol=1e-4)
    # projected a frame at a time (the bounded-memory path a full-HD level takes): the same
    assert torch.equal(g.project(basis, chunk_values=1).feats, f.feats)
    # float16 storage; on CPU gathered descriptors come back as float32 for the arithmetic
    h = g.project(basis, torch.float16)
    assert h.feats.dtype == torch.float16 and h.dtype == torch.float32
    assert h.gather(coords).dtype == torch.float32
    assert torch.allclose(h.gather(coords), f.gather(coords), rtol=2e-3, atol=2e-3)
    # a full basis keeps distances exactly
    full = g.project(fit_pca(g, g.dim))
    nnf = g.coords_of(torch.randperm(g.numel, generator=torch.Generator().manual_seed(1)))
    assert torch.allclose(patch_distances(full, full, nnf), patch_distances(g, g, nnf), rtol=1e-3, atol=1e-3)


def test_rescue_finds_near_exact_matches():
    x = clip(BIKES, 16)
    q, k = PatchGrid(x[:, :8].contiguous(), PS), PatchGrid(x[:, 8:].contiguous(), PS)
    _, d_exact = exact_nn(q, k)
    g = torch.Generator().manual_seed(0)
    # no iterations, every position rescued: the best of 8 PCA-space neighbours by true distance
    _, d_all = patchmatch(q, k, iters=0, rescue_frac=1.0, rescue_dim=32, rescue_topk=8, generator=g)
    assert d_all.mean() <= 1.03 * d_exact.mean(), (d_all.mean(), d_exact.mean())
    # a partial rescue touches the worst positions only and never makes a position worse
    nnf0, d0 = patchmatch(q, k, iters=2, rescue_frac=0.0, generator=torch.Generator().manual_seed(0))
    nnf1, d1 = patchmatch(q, k, iters=2, rescue_frac=0.2, generator=torch.Generator().manual_seed(0))
    assert (d1 <= d0).all() and d1.mean() < 0.95 * d0.mean()
    changed = (nnf1 != nnf0).any(0)
    assert changed.sum() <= int(0.2 * q.numel)
    assert d0[changed].min() >= d0.kthvalue(q.numel - int(0.2 * q.numel)).values
    assert torch.allclose(patch_distances(q, k, nnf1), d1)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_generation_with_reduced_descriptors_keeps_quality(dtype):
    # PatchMatch at every level (no exact search); 5 levels keep it fast. Measured: full
    # patches 0.646, 32 dims 0.601 (float16 0.605); 8 dims would give 0.97 and fail.
    x = clip(TREE, 8)
    base = dict(exact_max_pairs=0, max_levels=5)
    full = generate(x, PatchNNConfig(search_dim=0, **base), seed=0)
    red = generate(x, PatchNNConfig(search_dim=32, search_dtype=dtype, **base), seed=0)
    assert red.shape == full.shape and torch.isfinite(red).all()
    assert not torch.equal(red, full)  # the option is in effect
    d_full, d_red = mean_nn_dist(full, x), mean_nn_dist(red, x)
    assert d_red <= 1.15 * d_full, (d_red, d_full)


def test_new_search_options_are_validated():
    for kw, key in [({"pm_rescue_frac": 1.5}, "pm_rescue_frac"), ({"search_dim": -1}, "search_dim"),
                    ({"search_dtype": "bf16"}, "search_dtype")]:
        with pytest.raises(HpgenError, match=key):
            generate(torch.zeros(3, 6, 36, 64), PatchNNConfig(**kw))


def test_generation_keeps_at_most_one_set_of_descriptors_alive(monkeypatch):
    """Each level's blurred first key and every EM step's query are projected, and at full
    HD each set of descriptors is gigabytes: when a new set is made, no other query set and
    no stale key set may still be alive (only the current key's, while its query is made)."""
    import gc
    import weakref

    made, alive_at_projection = [], []
    original = PatchGrid.project

    def spy(self, *args, **kwargs):
        gc.collect()
        alive_at_projection.append(sum(r() is not None for r in made))
        out = original(self, *args, **kwargs)
        made.append(weakref.ref(out))
        return out

    monkeypatch.setattr(PatchGrid, "project", spy)
    x = clip(TREE, 8)
    generate(x, PatchNNConfig(exact_max_pairs=0, max_levels=3, em_iters=3), seed=0)
    # coarsest level: one EM step (key + query); then per level 2 keys (blurred, sharp) + 3 queries
    assert len(made) == 2 + 2 * 5
    assert max(alive_at_projection) <= 1, alive_at_projection


def test_key_weights_scale_the_cost_in_exact_search_and_patchmatch():
    """A per-key weight multiplies the squared distance in both searches (the completeness
    normalisation): weight 0 on one key makes it every query's match."""
    torch.manual_seed(2)
    q, k = PatchGrid(torch.randn(3, 4, 10, 11), PS), PatchGrid(torch.randn(3, 4, 9, 12), PS)
    w = torch.ones(k.valid)
    nnf, d = exact_nn(q, k, k_weight=w)
    assert torch.equal(nnf, exact_nn(q, k)[0])            # all-ones weights change nothing
    w.view(-1)[7] = 0.0
    assert (k.flat_of(exact_nn(q, k, k_weight=w)[0]) == 7).all()
    field, cost = patchmatch(q, k, k_weight=w, generator=torch.Generator().manual_seed(0))
    assert (k.flat_of(field) == 7).float().mean() > 0.9   # approximate: random search must land on it
    assert torch.allclose(cost, patch_distances(q, k, field) * w.view(-1)[k.flat_of(field)])


def test_completeness_weights_formula():
    """1 / (alpha * patch_dim + distance of the key to its nearest query): a key far from
    every query patch (content the output lacks) costs less per unit of distance."""
    from hpgen.patchnn.generate import completeness_weights

    d = torch.tensor([0.0, 4.0, 100.0])
    w = completeness_weights(d, alpha=0.01, patch_dim=100)  # alpha * dim = 1
    assert torch.allclose(w, torch.tensor([1.0, 0.2, 1 / 101]))


def test_sync_time_leaves_no_levels_of_coarsest_frames_with_more_frames():
    """Issue 12: a 75-frame clip reached the 15 px floor six levels before the 3-frame one,
    and those 15x27 px levels turned the noisy start into a copy of the input. With
    sync_time (default) time reaches its floor at the level where space does; a clip whose
    floors already come together (13 frames) keeps its pyramid."""
    from hpgen.patchnn import PatchNNConfig, pyramid_plan

    old = PatchNNConfig(sync_time=False)
    ins_old, _ = pyramid_plan((75, 144, 256), (75, 144, 256), old)
    assert sum(1 for s in ins_old if s[1:] == ins_old[0][1:]) == 6  # (3..8) x 15 x 27
    ins, outs = pyramid_plan((75, 144, 256), (75, 144, 256), PatchNNConfig())
    assert ins[0] == (3, 15, 27) and ins[-1] == (75, 144, 256)
    assert sum(1 for s in ins if s[1:] == ins[0][1:]) == 1
    assert all(a[0] < b[0] for a, b in zip(ins, ins[1:]))
    assert pyramid_plan((13, 144, 256), (13, 144, 256), PatchNNConfig())[0] == \
        pyramid_plan((13, 144, 256), (13, 144, 256), old)[0]
