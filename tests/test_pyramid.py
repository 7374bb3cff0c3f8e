import math

import pytest
import torch

from hpgen.errors import HpgenError
from hpgen.pyramid import (build_reals, clip_starts, pyramid_shapes, rescale_shapes, resize, scale_rates,
                           temporal_indices)


def paper(hw):
    return pyramid_shapes(hw, num_scales=10, min_size=32, max_size=256, factor=4 / 3, rates=[1, 2, 3, 4])


def test_paper_shapes_landscape():
    shapes = paper((1080, 1920))
    heights = [s.height for s in shapes]
    assert heights[0] == 32 and heights[-1] == 256
    assert all(b >= a for a, b in zip(heights, heights[1:]))
    for a, b in zip(heights, heights[1:]):
        assert b == 256 or abs(b / a - 4 / 3) < 0.05  # about 4/3 until capped
    for s in shapes:  # aspect ratio kept
        assert abs(s.width / s.height - 1920 / 1080) < 0.05
    assert shapes[0].frames == 4 and shapes[-1].frames == 13
    assert [s.frames for s in shapes] == sorted(s.frames for s in shapes)


def test_tall_video_uses_the_short_side():
    shapes = paper((1920, 1080))
    assert shapes[0].width == 32 and shapes[-1].width == 256
    assert all(s.height > s.width for s in shapes)
    assert abs(shapes[-1].height / shapes[-1].width - 1920 / 1080) < 0.02


def test_small_input_caps_the_finest_scale():
    shapes = paper((144, 256))
    assert shapes[-1].height == 144 and shapes[-1].width == 256


def test_input_smaller_than_coarsest_scale_is_an_error():
    with pytest.raises(HpgenError, match="smaller than the coarsest"):
        paper((20, 40))


def test_rates_index_linearly_from_largest_to_smallest():
    assert scale_rates([1, 2, 3, 4], 10) == [4, 4, 3, 3, 3, 2, 2, 2, 1, 1]
    assert scale_rates([1, 2, 3, 4], 4) == [4, 3, 2, 1]
    assert scale_rates([2, 1], 1) == [1]


def test_temporal_indices_keep_first_and_last_frame_of_the_clip():
    lcm = math.lcm(1, 2, 3, 4)
    for s in paper((256, 456)):
        idx = temporal_indices(5, s)
        assert idx[0] == 5 and idx[-1] == 5 + lcm and len(idx) == s.frames
        assert all(b - a == s.rate for a, b in zip(idx, idx[1:]))


def test_clip_starts_and_very_short_clip():
    assert clip_starts(40, 13) == [0, 13, 26]
    assert clip_starts(40, 13, max_clips=2) == [0, 13]
    with pytest.raises(HpgenError, match="needs at least 13"):
        clip_starts(12, 13)


def test_temporal_upsampling_keeps_end_frames_and_is_exact_on_aligned_frames():
    torch.manual_seed(0)
    full = torch.randn(3, 13, 8, 8)
    coarse = full[:, ::4]  # rate 4: frames 0, 4, 8, 12
    up = resize(coarse, (13, 8, 8))
    assert torch.equal(up[:, 0], full[:, 0]) and torch.allclose(up[:, -1], full[:, 12])
    assert torch.allclose(up[:, 4], full[:, 4], atol=1e-6) and torch.allclose(up[:, 8], full[:, 8], atol=1e-6)
    # Linear in time between aligned frames.
    assert torch.allclose(up[:, 2], 0.5 * (full[:, 0] + full[:, 4]), atol=1e-6)


def test_spatial_resize_keeps_constant_video_and_batch_layout():
    x = torch.full((2, 3, 5, 20, 30), 0.25)
    y = resize(x, (5, 11, 17))
    assert y.shape == (2, 3, 5, 11, 17) and torch.allclose(y, torch.full_like(y, 0.25))
    assert torch.equal(resize(x, (5, 20, 30)), x)


def test_up_then_down_is_close_to_identity_for_smooth_video():
    t = torch.linspace(0, 1, 9).view(1, 9, 1, 1)
    h = torch.linspace(0, 1, 16).view(1, 1, 16, 1)
    x = (torch.sin(3 * t) + torch.cos(2 * h)).expand(3, 9, 16, 24).contiguous()
    back = resize(resize(x, (17, 32, 48)), (9, 16, 24))
    assert (back - x).abs().max() < 0.05


def test_build_reals_subsamples_time_and_resizes_space():
    shapes = pyramid_shapes((64, 96), num_scales=3, min_size=16, max_size=64, factor=2, rates=[1, 2, 4])
    clip = torch.randn(2, 3, 5, 64, 96)
    reals = build_reals(clip, shapes)
    assert [tuple(r.shape[2:]) for r in reals] == [s.thw for s in shapes]
    assert torch.equal(reals[-1], clip)  # finest scale: rate 1, input size
    assert torch.allclose(reals[0][:, :, -1], resize(clip[:, :, 4:5], (1, 16, 24))[:, :, 0], atol=1e-6)


def test_rescale_shapes_for_sampling_at_other_sizes():
    shapes = paper((144, 256))
    out = rescale_shapes(shapes, frames=25, height=288)
    assert out[-1].thw == (25, 288, 512)
    assert out[0].height == 64  # every scale scaled by the same factor
    assert all(s.frames >= 2 for s in out)


def test_rescale_keeps_a_fixed_frame_pyramid_fixed():
    shapes = pyramid_shapes((144, 256), num_scales=4, min_size=25, max_size=144, factor=4 / 3, rates=[1], frames=8)
    assert {s.frames for s in shapes} == {8}
    out = rescale_shapes(shapes, frames=16)
    assert [s.frames for s in out] == [16, 16, 16, 16]


def test_resize_window_equals_a_window_of_resize():
    from hpgen.pyramid import resize_window, source_box

    torch.manual_seed(0)
    for (t, h, w), (T, H, W) in [((4, 17, 30), (5, 23, 40)), ((7, 30, 53), (7, 30, 53)), ((1, 9, 9), (3, 12, 12))]:
        full = torch.randn(2, 3, t, h, w, dtype=torch.float64)
        ref = resize(full, (T, H, W))
        for box in [(0, 5, 0, 7), (3, 11, 4, 9), (H - 6, H, W - 9, W), (0, H, 0, W)]:
            sb = source_box(box, (h, w), (H, W))
            got = resize_window(full[..., sb[0]:sb[1], sb[2]:sb[3]], sb, (h, w), (T, H, W), box)
            torch.testing.assert_close(got, ref[..., box[0]:box[1], box[2]:box[3]], rtol=0, atol=1e-12)
            # Up-sampling reads at most the box plus one tap row and column on each side.
            assert sb[1] - sb[0] <= box[1] - box[0] + 2 and sb[3] - sb[2] <= box[3] - box[2] + 2
