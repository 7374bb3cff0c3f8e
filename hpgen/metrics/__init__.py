"""Offline metrics for single-video generation: SIFID, SVFID (I3D or C3D),
pixel diversity (grey and LAB), NNF-diversity and bidirectional similarity
(coherence / completeness) and a copy check (max PSNR). See docs/metrics.md.

Heavy pieces (backbones, weights) load lazily on first use, so importing this
package is cheap and works without the weights packages installed.
"""
from .bidirectional import BidirectionalReference, bidirectional
from .copy_check import best_copy, max_psnr
from .core import DEFAULT_METRICS, REGISTRY, Evaluator, MetricSpec, parse_metrics, prepare_fake
from .diversity import diversity_gray, diversity_lab, rgb_to_lab, to_gray
from .frechet import feature_stats, frechet_distance, frechet_distance_features
from .nnf import nearest_neighbour_field, nnfdiv
from .sifid import sifid
from .svfid import C3DBackbone, I3DBackbone, svfid
from .weights import PIP_COMMAND

__all__ = [
    "BidirectionalReference", "bidirectional", "best_copy", "max_psnr",
    "DEFAULT_METRICS", "REGISTRY", "Evaluator", "MetricSpec", "parse_metrics", "prepare_fake",
    "diversity_gray", "diversity_lab", "rgb_to_lab", "to_gray",
    "feature_stats", "frechet_distance", "frechet_distance_features",
    "nearest_neighbour_field", "nnfdiv", "sifid", "svfid", "C3DBackbone", "I3DBackbone", "PIP_COMMAND",
]
