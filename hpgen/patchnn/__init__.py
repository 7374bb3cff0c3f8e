"""Patch nearest-neighbour video generation (VGPNN, Haim et al.): no training.

Public API::

    generate(video, cfg, out_shape=None, seed=0, noise=True)  # diverse samples
    retarget(video, out_shape, cfg)                            # any (T, H, W), no noise
    inpaint(video, mask, cfg, seed=0)                          # fill a hole from outside it
    analogy(content_dyn, style, style_dyn, cfg, acfg)          # layout of C, look/motion of S
    video_analogy(content_frames, style_frames, ...)           # same, from frames (flow inside)
    sketch_to_video(sketch_frames, style_frames, ...)
    vpnn(q, k, v, cfg)                                         # one VPNN layer
    patchmatch(q_grid, k_grid, iters=20), exact_nn(q_grid, k_grid)
    PatchGrid(video, patch_size), vote(v, field, out_thw, patch_size, 'median'|'mean')

Videos are float tensors (C, T, H, W) in [-1, 1] (``hpgen.video.to_tensor``).
"""
from .analogy import (analogy, dynamic_structure, farneback_flow, flow_magnitude, kmeans_1d, load_flow,
                      read_flo, sketch_structure, sketch_to_video, video_analogy)
from .config import AnalogyConfig, PatchNNConfig, VGPNNConfig
from .exact import exact_nn
from .generate import generate, inpaint, pyramid_plan, retarget, vpnn
from .patches import PatchGrid, patch_distances, vote
from .patchmatch import patchmatch, resize_field

__all__ = [
    "AnalogyConfig", "PatchGrid", "PatchNNConfig", "VGPNNConfig", "analogy", "dynamic_structure",
    "exact_nn", "farneback_flow", "flow_magnitude", "generate", "inpaint", "kmeans_1d", "load_flow",
    "patch_distances", "patchmatch", "pyramid_plan", "read_flo", "resize_field", "retarget",
    "sketch_structure", "sketch_to_video", "video_analogy", "vote", "vpnn",
]
