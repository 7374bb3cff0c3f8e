"""max_psnr, the copy check: exact against a brute-force loop; copies in any frame order
and shifted by a pixel or two score the cap, noise and new content score low."""
from __future__ import annotations

import math

import pytest
import torch

from hpgen.metrics.copy_check import CAP_DB, best_copy, max_psnr
from hpgen.metrics.core import DEFAULT_METRICS, Evaluator


def brute_force(real, fake, s):
    r, f = (real.double() + 1) / 2, (fake.double() + 1) / 2
    _, _, h, w = r.shape
    best = -math.inf
    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            for i in range(f.shape[1]):
                for j in range(r.shape[1]):
                    a = r[:, j, s:h - s, s:w - s]
                    b = f[:, i, s + dy:h - s + dy, s + dx:w - s + dx]
                    best = max(best, 10 * math.log10(1 / float(((a - b) ** 2).mean())))
    return best


def test_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(3, 3, 12, 15, generator=g) * 2 - 1
    fake = (real.flip(1) + 0.3 * torch.randn(real.shape, generator=g)).clamp(-1, 1)
    assert max_psnr(real, fake, 2) == pytest.approx(brute_force(real, fake, 2), rel=1e-9)


def test_copies_score_the_cap_and_noise_does_not():
    g = torch.Generator().manual_seed(1)
    real = torch.nn.functional.avg_pool3d(torch.rand(1, 3, 5, 24, 32, generator=g), (1, 3, 3), 1, (0, 1, 1))[0] * 2 - 1
    assert max_psnr(real, real) == CAP_DB
    moved = torch.cat([real[..., :1], real[..., :-1]], -1).flip(1)   # 1 px right, time reversed
    hit = best_copy(real, moved)
    assert hit["psnr"] == CAP_DB and hit["shift"] == [0, 1] and hit["real_frame"] == 4 - hit["fake_frame"]
    assert max_psnr(real, torch.rand(real.shape, generator=g) * 2 - 1) < 15
    with pytest.raises(ValueError, match="frames differ"):
        max_psnr(real, real[..., :20])


def test_registered_for_eval():
    assert "max_psnr" in DEFAULT_METRICS
    real = torch.rand(3, 4, 16, 20) * 2 - 1
    rep = Evaluator(real, ["max_psnr"]).evaluate([real, torch.zeros_like(real)])
    assert rep["per_fake"][0]["max_psnr"] == CAP_DB and rep["per_fake"][1]["max_psnr"] < 20
    assert "shifts up to 2 px" in rep["settings"]["max_psnr"]
