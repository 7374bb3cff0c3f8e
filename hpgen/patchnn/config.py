"""Typed settings of the patch nearest-neighbour generator (VGPNN).

Defaults follow the paper and its reference code (3x7x7 patches, factor 0.85 in space
and time, coarsest level 3 frames and 15 px, median voting), with the number of
EM and PatchMatch iterations chosen so that a 144x256x13 video takes well under a
minute on two CPU cores: PatchMatch is warm-started from the previous EM iteration
and from the coarser level, so a few iterations per EM step suffice.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import _f
from ..errors import HpgenError


@dataclass
class PatchNNConfig:
    patch_size: list = _f([3, 7, 7], "space-time patch size (T, H, W); all odd or even, any positive")
    spatial_factor: float = _f(0.85, "height/width ratio between consecutive pyramid levels")
    temporal_factor: float = _f(0.85, "frame-count ratio between consecutive pyramid levels (1: no temporal pyramid)")
    sync_time: bool = _f(True, "when time needs more pyramid levels than space to reach its floor, shrink time faster (factor (min_frames / frames)^(1 / spatial levels)) so that it reaches its floor at the same level as space, and no level has the coarsest frame size with more than min_frames frames. Issue 12: with a 75-frame clip and factor 0.85, six levels of 15x27 px frames sat between the coarsest and the first larger one, and their EM iterations turned the noisy start into an exact copy of the input (75 frames in and out, 75x72x128: 2 of 3 samples with noise 2, 1 of 3 with the reference code's noise 5 per voxel); a 13-frame clip, whose time and space floors come together, never did")
    min_size: int = _f(15, "shorter frame side at the coarsest level")
    min_frames: int = _f(3, "frames at the coarsest level (raised to the temporal patch size if smaller)")
    max_levels: int = _f(0, "keep at most this many of the finest levels (0: all)")
    em_iters: int = _f(3, "EM (nearest-neighbour + voting) iterations at every level but the coarsest")
    em_iters_coarsest: int = _f(1, "EM iterations at the coarsest level (the reference code uses 1; with completeness_first_step off use 2, so that one coarsest step applies the completeness normalisation to the layout the noisy step made)")
    em_iters_max_voxels: int = _f(0, "levels with more output voxels than this use one EM iteration (0: no limit)")
    sharp_keys_after_first: bool = _f(True, "after the first EM iteration of a level, compare against the sharp level itself (K=V), as the output is no longer blurred")
    voting: str = _f("median", "how overlapping patches are folded into pixels: median or mean (at the fine levels of fine_size, if any, voting_fine instead)")
    fine_size: int = _f(0, "levels whose shorter output side is larger than this many pixels are fine levels, which use voting_fine and em_iters_fine; the coarser ones, which decide the layout and the objects, keep voting and em_iters (0, the default: no fine levels). Issue 12, fourth pass: 40 (the split of completeness_max_size) softened the hard seams of the 75-frame airballoons samples and kept the clouds' stripes, but not their pale flat patches (made at the coarse levels) and raised SIFID to 1.53x VGPNN's (the bound is 1.5x; 1.34x with 0), so it is an option (docs/BENCHMARKS.md)")
    voting_fine: str = _f("mean", "voting at the fine levels (fine_size): median or mean. With the median, adjacent regions copied from different input offsets meet at a hard seam (the vote flips in one column); the mean spreads the step over the patch width and equals the median where the field is coherent. The VGPNN reference code votes by median everywhere")
    em_iters_fine: int = _f(5, "EM iterations at the fine levels (fine_size; the VGPNN reference code's J = 5): converged fields keep the mean vote from blurring (with 3 the airballoons clouds went soft). 5 at the coarse levels too made a 13-frame airballoons sample a near copy of the input (max PSNR 31 dB)")
    noise_std: float = _f(2.0, "std of the noise added to the coarsest initial guess (video values lie in [-1, 1]; below ~1.5 the output mostly reproduces the input, the reference code uses 5 per voxel, which lost the object of tests/test_patchnn_objects.py in frames 0-4 of a sample even with completeness on)")
    noise_per_voxel: bool = _f(False, "draw the coarsest noise independently for every voxel, as the reference code does (run_generation.py: torch.randn_like(q0)); false (default): one draw per spatial position replicated along time, as the paper's text says (Sec. 2: keeps motion coherent; issue 12 measured that per-voxel noise lets a moving object vanish from frames)")
    completeness: bool = _f(True, "GPNN's completeness normalisation (Granot et al., Drop the GAN, CVPR 2022): divide each query-to-key distance by alpha + the key's distance to its nearest query patch, so rare input patches (objects) are not lost; one extra reverse search per EM iteration. Not in the VGPNN paper; the VGPNN reference code has it off (reconstruct_qkv(bidi=False, alpha=None)). Issue 12: without it a moving object was lost from frames of a sample (tests/test_patchnn_objects.py). At the input's full length it can converge to a copy of the input; sync_time and copy_retries guard against that (docs/BENCHMARKS.md)")
    alpha: float = _f(0.005, "alpha of that normalisation, as a mean squared difference per patch value in [-1, 1] (smaller: stronger pull towards unused input patches). 0.005 is GPNN's default (iyttor/GPNN model/parser.py --alpha; there on unsquared distances of [0, 1] patches); measured here: 0.05 lost the quality gain (docs/BENCHMARKS.md)")
    completeness_first_step: bool = _f(True, "apply the completeness normalisation in the first EM step of the coarsest level too, whose query is the input plus noise (with noise off, or for inpainting, it always applies). Issue 12, third pass: that query is nearly pure noise (std 2 against values in [-1, 1]), every key is far from every query patch, and the normalisation then chooses the layout instead of the query: the keys farthest from the noise win (dark ground, water, the red square of tests/test_patchnn_objects.py). Over 40 seeds at 3x15x27 it doubled the row-profile error of the coarsest output (tests/test_patchnn_layout.py) and on HP-VAE-GAN's lake clip it put the water above the sky. Off (a plain first step; em_iters_coarsest = 2 then normalises the second) fixes that layout, but on the 75-frame airballoons clip it did not remove the pasted sky rectangles, made one sample of three an exact copy, and lost the square of tests/test_patchnn_objects.py from frames 0-2 of seed 1, so it is not the default (docs/BENCHMARKS.md)")
    completeness_max_size: int = _f(40, "apply the completeness normalisation only at levels whose shorter output side is at most this many pixels (0: at every level). Issue 12, third pass: at the fine levels it made sky positions take rare patches (balloon bottoms, ground, flat horizon sky), the dark blobs and pasted pale rectangles of the 75-frame airballoons samples; the coarse levels, where it keeps objects, stay normalised. 40 vs 0 on airballoons, one run: coherence 0.125 vs 0.157, the four issue-12 bounds kept, generation 0.68x the time (docs/BENCHMARKS.md)")
    copy_retries: int = _f(3, "generation with noise: when after some pyramid level the output is the input itself at that level (mean absolute difference below copy_eps, possible only when the output has the input's size), start again from the coarsest level with a new noise draw, at most this many times (0: never). Issue 12: at the input's full length, EM with the completeness normalisation can converge to the identity (1 of 3 75-frame airballoons samples was an exact copy); it shows at the coarse levels, so a retry costs little")
    copy_eps: float = _f(0.01, "that threshold, a mean absolute difference in [-1, 1] units (a sample that is not a copy is above ~0.03 at every level)")
    frames_ratio: float = _f(0.75, "output frames / input frames when --frames is not given (<1 adds temporal diversity)")
    pm_iters: int = _f(20, "PatchMatch iterations from a random field (default of patchmatch())")
    pm_iters_warm: int = _f(2, "PatchMatch iterations when the field is warm-started (previous EM step or level)")
    pm_steps: list = _f([4, 2, 1], "propagation jump lengths, cycled over iterations (jump flooding spreads good matches fast)")
    pm_random: int = _f(3, "random-search samples per position and iteration (radius halves each sample)")
    pm_rescue_frac: float = _f(0.1, "cold start only: after the iterations, re-search this fraction of worst positions exactly in a PCA space (on real clips ~10% of positions hold ~95% of PatchMatch's excess distance; 0: off)")
    pm_rescue_dim: int = _f(32, "PCA dims of that re-search (fitted on the key's patches; the best of pm_rescue_topk is kept by true distance)")
    pm_rescue_topk: int = _f(8, "candidates per rescued position, re-ranked by true patch distance")
    search_dim: int = _f(64, "inside generation, PatchMatch compares PCA projections of the patches to this many dims (fitted per level on the key; 0: full patches). A candidate then reads 64 values instead of 147*C (441 for RGB): 7x (float32) to 14x (float16) less memory traffic; voting still copies the true patches")
    search_dtype: str = _f("auto", "storage of those descriptors: float32, float16, or auto (= float16: half the memory and half the bytes per candidate, and the search only ranks candidates; on CPU, where half arithmetic is slow, gathered descriptors are compared in float32)")
    exact_max_pairs: float = _f(2.0e7, "use exact search instead of PatchMatch when query x key patch pairs are at most this")
    chunk: int = _f(0, "positions per chunk of patch distances (0: 8192 on CPU, 262144 on CUDA)")
    sample_seed: int = _f(0, "seed of sample 0; sample i uses sample_seed + i")


@dataclass
class AnalogyConfig:
    clusters: int = _f(4, "k-means bins of the dynamic structure (flow magnitude, or sketch intensity)")
    dyn_weight: float = _f(2.0, "weight of the dynamic-structure channel against the RGB channels in patch distances")
    flow: str = _f("farneback", "flow method when no precomputed flow (e.g. RAFT .npy/.flo, --content-flow/--style-flow) is given: farneback (OpenCV)")


@dataclass
class VGPNNConfig:
    patchnn: PatchNNConfig = field(default_factory=PatchNNConfig)
    analogy: AnalogyConfig = field(default_factory=AnalogyConfig)


def validate_patchnn(cfg: PatchNNConfig) -> PatchNNConfig:
    """User-facing checks of a PatchNNConfig; raises HpgenError with the offending key."""
    p = cfg.patch_size
    if len(p) != 3 or any(int(v) < 1 for v in p):
        raise HpgenError("patchnn.patch_size must be three positive integers (T, H, W)")
    if not 0.0 < cfg.spatial_factor < 1.0:
        raise HpgenError("patchnn.spatial_factor must be in (0, 1)")
    if not 0.0 < cfg.temporal_factor <= 1.0:
        raise HpgenError("patchnn.temporal_factor must be in (0, 1]")
    if cfg.voting not in ("median", "mean") or cfg.voting_fine not in ("median", "mean"):
        raise HpgenError("patchnn.voting and voting_fine must be 'median' or 'mean'")
    if cfg.em_iters < 1 or cfg.em_iters_coarsest < 1 or cfg.em_iters_fine < 1:
        raise HpgenError("patchnn.em_iters, em_iters_coarsest and em_iters_fine must be >= 1")
    if cfg.fine_size < 0:
        raise HpgenError("patchnn.fine_size must be >= 0")
    if cfg.pm_iters < 0 or cfg.pm_iters_warm < 0 or cfg.pm_random < 0:
        raise HpgenError("patchnn PatchMatch iteration counts must be >= 0")
    if not 0.0 <= cfg.pm_rescue_frac <= 1.0:
        raise HpgenError("patchnn.pm_rescue_frac must be in [0, 1]")
    if cfg.pm_rescue_dim < 0 or cfg.pm_rescue_topk < 0 or cfg.search_dim < 0:
        raise HpgenError("patchnn.pm_rescue_dim, pm_rescue_topk and search_dim must be >= 0")
    if cfg.search_dtype not in ("auto", "float32", "float16"):
        raise HpgenError("patchnn.search_dtype must be auto, float32 or float16")
    if not cfg.pm_steps or any(int(s) < 1 for s in cfg.pm_steps):
        raise HpgenError("patchnn.pm_steps must be a non-empty list of positive integers")
    if cfg.frames_ratio <= 0:
        raise HpgenError("patchnn.frames_ratio must be > 0")
    if cfg.alpha <= 0:
        raise HpgenError("patchnn.alpha must be > 0")
    if cfg.completeness_max_size < 0:
        raise HpgenError("patchnn.completeness_max_size must be >= 0")
    if cfg.copy_retries < 0 or cfg.copy_eps < 0:
        raise HpgenError("patchnn.copy_retries and copy_eps must be >= 0")
    if cfg.noise_std < 0:
        raise HpgenError("patchnn.noise_std must be >= 0")
    if cfg.min_size < 1 or cfg.min_frames < 1:
        raise HpgenError("patchnn.min_size and min_frames must be >= 1")
    return cfg


def validate(cfg: VGPNNConfig) -> VGPNNConfig:
    validate_patchnn(cfg.patchnn)
    if cfg.analogy.flow.lower() != "farneback":
        raise HpgenError("analogy.flow must be 'farneback'; give precomputed flow files with --content-flow/--style-flow")
    if cfg.analogy.clusters < 2:
        raise HpgenError("analogy.clusters must be >= 2")
    return cfg
