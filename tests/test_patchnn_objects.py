"""Regression test of issue 12: hpgen patchnn keeps the input's salient object.

A synthetic clip: one red square moving right across a static textured background, in
every frame. Patch statistics alone allow an output without the square (its patches are
rare: 3% of the frame), and the VGPNN recipe without GPNN's completeness
normalisation (the defaults before issue 12) lost it from frames 0-2 of the seed-1 sample
(it pops up mid-frame in frame 3). With the defaults (completeness normalisation on),
every frame of every sample must show the square, and each sample must be more complete
(bidirectional completeness) than the background alone, i.e. than a perfect copy of the
input with the square painted out.
"""
from __future__ import annotations

import torch

from hpgen.metrics.bidirectional import bidirectional
from hpgen.patchnn import PatchNNConfig, generate

RED = torch.tensor([1.0, -1.0, -1.0])
T, H, W, SIDE = 13, 72, 128, 16
SEEDS = (0, 1, 2)


def background(seed: int = 0) -> torch.Tensor:
    """Static smoothed noise in blue-green tones, (3, H, W) in [-1, 1]: no pixel is red."""
    g = torch.Generator().manual_seed(seed)
    bg = torch.nn.functional.avg_pool2d(torch.rand(1, 3, H + 2, W + 2, generator=g), 3, 1)[0]
    return (bg - 0.5) * 2.0 * torch.tensor([0.3, 0.5, 0.6]).view(3, 1, 1) + torch.tensor([-0.4, 0.0, 0.2]).view(3, 1, 1)


def moving_square(with_square: bool = True) -> torch.Tensor:
    """(3, T, H, W): the background in every frame, and the red square moving from the
    left edge to the right edge at mid height."""
    v = background().unsqueeze(1).repeat(1, T, 1, 1)
    if with_square:
        y0 = (H - SIDE) // 2
        for i in range(T):
            x0 = 4 + round(i * (W - SIDE - 8) / (T - 1))
            v[:, i, y0:y0 + SIDE, x0:x0 + SIDE] = RED.view(3, 1, 1)
    return v.clamp(-1, 1)


def red_area(video: torch.Tensor) -> torch.Tensor:
    """Red pixels per frame, in units of the square's area. A pixel is red when every
    channel is within 0.5 of pure red, half the distance to the nearest background colour
    (the background's red channel is at most -0.1, so no background pixel qualifies)."""
    close = (video - RED.view(3, 1, 1, 1)).abs().amax(0) < 0.5
    return close.flatten(1).sum(1) / SIDE ** 2


def test_the_clip_is_what_the_test_assumes():
    assert torch.all(red_area(moving_square()) == 1.0)
    assert torch.all(red_area(moving_square(False)) == 0.0)


def test_every_sample_keeps_the_object_in_every_frame():
    x = moving_square()
    cfg = PatchNNConfig()  # the defaults (completeness=False, the old default, fails: seed 1)
    samples = [generate(x, cfg, out_shape=(T, H, W), seed=seed) for seed in SEEDS]
    for seed, y in zip(SEEDS, samples):
        area = red_area(y)
        # At least half the square in every frame: the object is there, whole or cut by the
        # frame's edge; a lost object leaves 0.
        assert (area >= 0.5).all(), f"seed {seed}: the square's area per frame {[round(a, 2) for a in area.tolist()]}"
    # Completeness at the metric's default working size (36 px high; 3 s a sample on CPU)
    floor = bidirectional(x, moving_square(False))["completeness"]  # the object painted out
    for seed, y in zip(SEEDS, samples):
        comp = bidirectional(x, y)["completeness"]
        assert comp < floor, f"seed {seed}: completeness {comp:.3f} not below the object-less copy's {floor:.3f}"
