"""Bidirectional similarity (coherence / completeness): texture soup in the input's colours
passes coherence and fails completeness; a shifted copy passes both; noise scores about 1.
Synthetic scenes and the bundled clip only (nothing outside the repository)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from hpgen.metrics.bidirectional import BidirectionalReference, bidirectional, uniform_noise, working_thw
from hpgen.metrics.core import DEFAULT_METRICS, Evaluator
from hpgen.patchnn.exact import exact_nn_both
from hpgen.patchnn.patches import PatchGrid
from hpgen.pyramid import resize
from hpgen.video import read_video, to_tensor, write_video

from conftest import BUNDLED


def scene(t: int = 8, h: int = 24, w: int = 40, seed: int = 0) -> torch.Tensor:
    """A bright sky band over a smooth textured ground, and a red square moving right along
    the horizon: (3, t, h, w) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    v = torch.empty(3, t, h, w)
    sky = h // 3
    yy, xx = torch.linspace(0, 1, sky).view(sky, 1), torch.linspace(0, 1, w).view(1, w)
    for c, base in enumerate((0.35, 0.65, 0.95)):
        v[c, :, :sky] = base - 0.25 * yy + 0.05 * xx
    tex = F.avg_pool2d(torch.rand(1, 3, h - sky + 4, w + 4, generator=g), 5, 1)[0]
    for c, base in enumerate((-0.3, 0.1, -0.5)):
        v[c, :, sky:] = base + 0.8 * (tex[c] - 0.5)
    for i in range(t):
        x0 = 2 + i * (w - 10) // max(1, t - 1)
        v[:, i, sky - 3:sky + 3, x0:x0 + 6] = torch.tensor([0.9, -0.8, -0.7]).view(3, 1, 1)
    return v


def soup(real: torch.Tensor, top: int, block: int = 8, seed: int = 1) -> torch.Tensor:
    """Texture soup: tiles of ``real`` below row ``top`` only (e.g. just the ground), randomly
    re-placed over the whole frame."""
    g = torch.Generator().manual_seed(seed)
    _, _, h, w = real.shape
    src = real[:, :, top:]
    out = torch.empty_like(real)
    for y in range(0, h, block):
        for x in range(0, w, block):
            bh, bw = min(block, h - y), min(block, w - x)
            sy = int(torch.randint(0, src.shape[2] - bh + 1, (1,), generator=g))
            sx = int(torch.randint(0, src.shape[3] - bw + 1, (1,), generator=g))
            out[:, :, y:y + bh, x:x + bw] = src[:, :, sy:sy + bh, sx:sx + bw]
    return out


def shifted(v: torch.Tensor, dx: int = 2) -> torch.Tensor:
    """Moved left by ``dx`` px, the last column repeated (no wrap-around seam)."""
    return torch.cat([v[..., dx:], v[..., -1:].expand(*v.shape[:-1], dx)], -1)


# Squared distances are found through float32 |k|^2 - 2 q.k, so between near-duplicate
# patches (the sky's gentle gradient: 1e-5 apart) the argmin may pick a neighbour; a copy
# then scores ~1e-5, not exactly 0.
COPY_TOL = 1e-3


@pytest.mark.parametrize("frames", [8, 2, 1], ids=["video", "2-frames", "image"])
def test_soup_passes_coherence_and_fails_completeness(frames):
    real = scene(t=frames)
    ref = BidirectionalReference(real)
    assert ref.thw == (frames, 24, 40) and ref.patch == ((3, 7, 7) if frames >= 3 else (1, 7, 7))
    copy, good = ref.score(real), ref.score(shifted(real))
    bad = ref.score(soup(real, top=24 // 3 + 3))   # ground below the object only
    noise = ref.score(uniform_noise(real.shape, seed=123))
    assert copy["coherence"] < COPY_TOL and copy["completeness"] < COPY_TOL, copy
    assert good["coherence"] < 0.1 and good["completeness"] < 0.2, good
    assert bad["coherence"] < 0.1, bad                             # every soup patch is ground-like
    assert bad["completeness"] > 0.5 and bad["completeness"] > 3 * good["completeness"], (bad, good)
    for m in ("coherence", "completeness"):                        # 1 = noise, by construction
        assert noise[m] == pytest.approx(1.0, abs=0.05), noise


def test_time_flip_is_far_better_than_soup():
    real = scene()
    ref = BidirectionalReference(real)
    flip, bad = ref.score(real.flip(1)), ref.score(soup(real, top=11))
    assert flip["coherence"] < 0.5 and flip["completeness"] < 0.5 * bad["completeness"], (flip, bad)


def test_bundled_clip_soup_and_shift():
    """Real footage: soup of the lower half (road and fence) vs a 2-px shift."""
    clip = to_tensor(read_video(BUNDLED, list(range(6))))
    real = resize(clip, working_thw(clip.shape[1:], 24))
    good = bidirectional(real, shifted(real))
    bad = bidirectional(real, soup(real, top=real.shape[2] // 2))
    assert good["coherence"] < 0.2 and good["completeness"] < 0.2, good
    assert bad["completeness"] > 2 * good["completeness"], (bad, good)


def test_working_size_keeps_aspect_and_frames_and_never_enlarges():
    assert working_thw((13, 144, 256), 36) == (13, 36, 64)
    assert working_thw((5, 24, 40), 36) == (5, 24, 40)
    assert working_thw((5, 72, 128), None) == (5, 72, 128)
    real = resize(scene(t=4), (4, 48, 80))
    ev = Evaluator(real, ["coherence", "completeness"], bidir_height=24)
    rep = ev.evaluate([real, shifted(real, 4)])
    assert "3x7x7 (TxHxW) patch NN at 4x24x40" in rep["settings"]["bidirectional"]
    assert rep["per_fake"][0]["completeness"] < COPY_TOL
    assert rep["summary"]["coherence"]["n"] == 2


def test_exact_nn_both_matches_brute_force_in_both_directions():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, 10, 11, generator=g), torch.randn(3, 5, 9, 12, generator=g)
    ga, gb = PatchGrid(a, (3, 7, 7)), PatchGrid(b, (3, 7, 7))
    full = torch.cdist(ga.all_patches().double(), gb.all_patches().double()) ** 2
    for chunk in (0, 7):   # one chunk, and several (the column minimum spans chunks)
        nab, dab, nba, dba = exact_nn_both(ga, gb, chunk)
        assert torch.equal(gb.flat_of(nab), full.argmin(1)) and torch.equal(ga.flat_of(nba), full.argmin(0))
        assert torch.allclose(dab.double(), full.min(1).values, rtol=1e-4)
        assert torch.allclose(dba.double(), full.min(0).values, rtol=1e-4)


def test_defaults_and_eval_cli_report_both(tmp_path, capsys):
    from hpgen.cli import main

    assert {"coherence", "completeness"} <= set(DEFAULT_METRICS)
    real = scene()
    write_video(tmp_path / "real.gif", real, 10)
    write_video(tmp_path / "good.gif", shifted(real), 10)
    write_video(tmp_path / "soup.gif", soup(real, top=11), 10)
    out = tmp_path / "scores.json"
    rc = main(["eval", "--real", str(tmp_path / "real.gif"), "--fake", str(tmp_path / "good.gif"),
               str(tmp_path / "soup.gif"), "--metrics", "coherence,completeness", "--device", "cpu",
               "--json", str(out)])
    assert rc == 0
    rep = json.loads(out.read_text())
    good, bad = rep["per_fake"]
    assert bad["completeness"] > 3 * good["completeness"] and bad["coherence"] < 0.1
    assert "8x24x40" in rep["settings"]["bidirectional"]
    err = capsys.readouterr().err
    assert "coherence: " in err and "completeness: " in err


def test_training_hook_reports_both():
    from hpgen.metrics.hook import evaluate_samples

    real = scene(t=4)
    vals = evaluate_samples(real, [real, soup(real, top=11)], ["coherence", "completeness"])
    assert set(vals) == {"coherence", "completeness"}
    assert vals["completeness"] > 0.2  # the soup's half of the mean


def test_shift_copy_is_one_for_a_shifted_copy_and_low_for_soup():
    """shift_copy: a copy, or the input moved by a few px, is one piece (about 1); texture
    soup, tiles from many places, is many pieces (far lower)."""
    real = scene(t=6, h=36, w=64)
    assert bidirectional(real, real, height=0)["shift_copy"] > 0.9   # float32 near-ties in the smooth sky (COPY_TOL)
    moved = bidirectional(real, shifted(real, 3), height=0)["shift_copy"]
    tiles = bidirectional(real, soup(real, top=0, seed=3), height=0)["shift_copy"]
    assert moved > 0.9 and tiles < 0.5 * moved, (moved, tiles)
