"""Fréchet distance between Gaussians fitted to two feature sets.

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr( (S1 S2)^(1/2) )

The classic implementation calls ``scipy.linalg.sqrtm(S1 @ S2)``: a Schur
decomposition of a non-symmetric matrix, which can return complex values and
loses accuracy when the covariances are rank-deficient (per-position features
of one frame often are: fewer positions than channels at deep layers). We use
instead that S1 S2 is similar to the symmetric PSD matrix A = S1^(1/2) S2 S1^(1/2)
(S1 S2 = S1^(1/2) A S1^(-1/2)), so

    tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i(A)),

with S1^(1/2) from a symmetric eigendecomposition. Only ``eigh`` is used, all in
float64, and tiny negative eigenvalues from rounding are clamped to 0. Works on
any torch device.
"""
from __future__ import annotations

import torch


def feature_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance (like ``np.cov``, ddof=1) of features (N, D), in float64."""
    x = x.detach().reshape(x.shape[0], -1).to(torch.float64)
    n = x.shape[0]
    if n < 2:
        raise ValueError("need at least 2 feature vectors for a covariance")
    mu = x.mean(0)
    xc = x - mu
    cov = xc.T @ xc / (n - 1)
    return mu, cov


def _sqrt_psd(s: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); float64 throughout."""
    dev = mu1.device if isinstance(mu1, torch.Tensor) else "cpu"
    mu1, mu2, sigma1, sigma2 = (torch.as_tensor(a, dtype=torch.float64, device=dev)
                                for a in (mu1, mu2, sigma1, sigma2))
    sigma1 = (sigma1 + sigma1.T) / 2  # exact symmetry for eigh
    sigma2 = (sigma2 + sigma2.T) / 2
    r1 = _sqrt_psd(sigma1)
    a = r1 @ sigma2 @ r1
    tr_covmean = torch.linalg.eigvalsh((a + a.T) / 2).clamp_min(0).sqrt().sum()
    diff = mu1 - mu2
    d = diff.dot(diff) + sigma1.trace() + sigma2.trace() - 2 * tr_covmean
    # Rounding can push the distance of identical distributions a hair below 0.
    return float(d.clamp_min(0).item())


def frechet_distance_features(x: torch.Tensor, y: torch.Tensor) -> float:
    """Fréchet distance between feature sets (N1, D) and (N2, D)."""
    return frechet_distance(*feature_stats(x), *feature_stats(y))
