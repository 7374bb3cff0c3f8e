"""Patch-NN applications: inpainting, video analogies, flow I/O and the command line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hpgen.errors import HpgenError
from hpgen.patchnn import (AnalogyConfig, PatchNNConfig, flow_magnitude, inpaint, kmeans_1d, load_flow,
                           video_analogy)

from conftest import BALLOONS, TREE


def frames(path: Path, n: int, h: int = 36, w: int = 64) -> np.ndarray:
    from hpgen.video import read_video

    return read_video(path, list(range(n)), (h, w))


# ---------------------------------------------------------------------------
# inpainting

def test_inpaint_keeps_outside_and_fills_inside():
    from hpgen.video import to_frames, to_tensor

    f = frames(TREE, 8)
    x = to_tensor(f)
    mask = torch.zeros(8, 36, 64, dtype=torch.bool)
    mask[:, 10:24, 20:40] = True
    holed = torch.where(mask.unsqueeze(0), torch.ones_like(x), x)   # white fill under the mask
    y = inpaint(holed, mask, PatchNNConfig(), seed=0)
    out = to_frames(y)
    m = mask.numpy()
    assert np.array_equal(out[~m], f[~m])                    # outside: unchanged, bit for bit
    inside = y[:, mask]
    assert (inside < 0.99).all(dim=0).float().mean() > 0.99  # inside: not the fill value
    # the fill is plausible: closer to the true hidden pixels than the mean colour is
    err_fill = (y[:, mask] - x[:, mask]).abs().mean()
    err_mean = (x[:, ~mask].mean(1, keepdim=True) - x[:, mask]).abs().mean()
    assert err_fill < err_mean


def test_inpaint_bad_mask_is_a_user_error():
    x = torch.zeros(3, 8, 36, 64)
    with pytest.raises(HpgenError, match="mask has shape"):
        inpaint(x, torch.zeros(8, 36, 60, dtype=torch.bool))
    with pytest.raises(HpgenError, match="mask has shape"):
        inpaint(x, torch.zeros(5, 36, 64, dtype=torch.bool))
    with pytest.raises(HpgenError, match="covers the whole video"):
        inpaint(x, torch.ones(1, 36, 64, dtype=torch.bool))


# ---------------------------------------------------------------------------
# analogies

def _moving_square(t: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    bg = (rng.random((h, w, 3)) * 60 + 80).astype(np.uint8)
    v = np.repeat(bg[None], t, 0)
    for i in range(t):
        x0 = 4 + 3 * i
        v[i, 8:24, x0:x0 + 12] = np.array([220, 40, 40]) + rng.integers(0, 30, (16, 12, 3))
    return v


def test_analogy_follows_content_motion_layout():
    from hpgen.video import to_frames

    style = frames(TREE, 10, 48, 64)            # leaves moving everywhere, in their own way
    content = _moving_square(10, 48, 64)        # motion only along the square's path
    y = video_analogy(content, style, PatchNNConfig(), AnalogyConfig(), seed=0)
    assert tuple(y.shape) == (3, 10, 48, 64)
    out_motion = flow_magnitude(to_frames(y)).mean(0).ravel()
    content_motion = flow_magnitude(content).mean(0)
    corr = np.corrcoef(out_motion, content_motion.ravel())[0, 1]
    # control: the same layout shuffled (moved to the other half of the frame)
    shuffled = np.roll(content_motion, (24, 32), (0, 1)).ravel()
    control = np.corrcoef(out_motion, shuffled)[0, 1]
    assert corr > 0.3 and corr > control + 0.3, (corr, control)


def test_kmeans_bins_are_sorted_and_separate_clusters():
    v = torch.cat([torch.full((100,), 0.0), torch.full((50,), 5.0), torch.full((80,), 10.0)])
    c = kmeans_1d(v + 0.01 * torch.randn(230), 3)
    assert torch.allclose(c, torch.tensor([0.0, 5.0, 10.0]), atol=0.05)


def test_flow_files_npy_and_flo(tmp_path):
    rng = np.random.default_rng(0)
    flow = rng.normal(size=(3, 12, 16, 2)).astype(np.float32)
    np.save(tmp_path / "f.npy", flow)
    folder = tmp_path / "flo"
    folder.mkdir()
    for i, f in enumerate(flow):
        with open(folder / f"{i:04d}.flo", "wb") as fh:
            np.array([202021.25], np.float32).tofile(fh)
            np.array([16, 12], np.int32).tofile(fh)
            f.astype(np.float32).tofile(fh)
    assert np.array_equal(load_flow(tmp_path / "f.npy"), flow)
    assert np.array_equal(load_flow(folder), flow)
    video = np.zeros((4, 12, 16, 3), np.uint8)
    mag = flow_magnitude(video, folder)
    assert mag.shape == (4, 12, 16)
    assert np.allclose(mag[:3], np.linalg.norm(flow, axis=-1)) and np.allclose(mag[3], mag[2])
    with pytest.raises(HpgenError, match="has 4 frames but the flow has 1"):
        flow_magnitude(video, flow[:1])


# ---------------------------------------------------------------------------
# command line

def _cli(argv):
    from hpgen.cli import main

    return main(argv)


def test_cli_generate_writes_samples_config_and_refuses_overwrite(tmp_path, capsys):
    from hpgen.video import VideoSource

    out = tmp_path / "gen"
    argv = ["patchnn", str(BALLOONS), "--num", "2", "--out", str(out), "--input-height", "36",
            "--input-frames", "6", "--device", "cpu", "--frames", "5"]
    assert _cli(argv) == 0
    for i in range(2):
        v = VideoSource(out / f"sample_{i:03d}.mp4")
        assert (v.num_frames, v.info.height, v.info.width) == (5, 36, 64)
    assert "[patchnn]" in (out / "config.toml").read_text()
    capsys.readouterr()
    assert _cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hpgen: error:") and "--overwrite" in err and "\n" not in err
    # retarget to an exact size
    assert _cli(["patchnn", str(BALLOONS), "--retarget", "--out", str(tmp_path / "rt"), "--input-height", "36",
                 "--input-frames", "6", "--device", "cpu", "--frames", "4", "--height", "30", "--width", "50"]) == 0
    v = VideoSource(tmp_path / "rt" / "sample_000.mp4")
    assert (v.num_frames, v.info.height, v.info.width) == (4, 30, 50)


def test_cli_bad_inputs_give_one_line_errors(tmp_path, capsys):
    from PIL import Image

    mask = tmp_path / "mask.png"
    Image.new("RGB", (100, 50), "white").save(mask)
    cases = [
        ["patchnn", str(BALLOONS), "--mask", str(mask), "--out", str(tmp_path / "a"), "--device", "cpu"],
        ["patchnn", str(BALLOONS), "--input-frames", "2", "--out", str(tmp_path / "b"), "--device", "cpu"],
        ["patchnn", str(BALLOONS), "--input-height", "36", "--input-frames", "6", "--height", "5",
         "--out", str(tmp_path / "c"), "--device", "cpu"],
    ]
    for argv, word in zip(cases, ["mask", "fewer than the temporal patch", "smaller than the"]):
        assert _cli(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("hpgen: error:") and word in err and "\n" not in err, err


def test_cli_refuses_a_run_larger_than_free_memory_before_decoding(tmp_path, capsys, monkeypatch):
    """An input too large for the machine gets one line with the estimate and what to change,
    before any frame is decoded and before anything is written; --no-memory-check runs anyway."""
    from hpgen.patchnn import budget
    from hpgen.patchnn.config import PatchNNConfig
    from hpgen.video import VideoSource

    cfg = PatchNNConfig()
    n = VideoSource(BALLOONS).num_frames  # all of them, at 360 px
    small = budget.estimate_bytes((6, 36, 64), (5, 36, 64), cfg)
    large = budget.estimate_bytes((n, 360, 640), (round(0.75 * n), 360, 640), cfg)
    assert large > 2 * small  # the estimate follows the size (linear in voxels, plus fixed buffers)
    # pretend the machine has room for the small run only
    monkeypatch.setattr(budget, "available_bytes", lambda device: (small + large) // 2)
    decoded = []
    monkeypatch.setattr(VideoSource, "read", lambda self, idx: decoded.append(idx))
    out = tmp_path / "big"
    argv = ["patchnn", str(BALLOONS), "--out", str(out), "--device", "cpu", "--input-height", "360"]
    assert _cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hpgen: error: VGPNN ({n}x360x") and "GiB" in err and "--no-memory-check" in err
    assert "\n" not in err
    assert not decoded and not out.exists()
    monkeypatch.undo()
    # the same limit lets the small run through, and the flag skips the check
    monkeypatch.setattr(budget, "available_bytes", lambda device: (small + large) // 2)
    assert _cli(["patchnn", str(BALLOONS), "--out", str(tmp_path / "ok"), "--device", "cpu", "--input-height",
                 "36", "--input-frames", "6", "--frames", "5"]) == 0
    monkeypatch.setattr(budget, "available_bytes", lambda device: 0)
    assert _cli(["patchnn", str(BALLOONS), "--out", str(tmp_path / "forced"), "--device", "cpu",
                 "--input-height", "36", "--input-frames", "6", "--frames", "5", "--no-memory-check"]) == 0
    assert (tmp_path / "forced" / "sample_000.mp4").exists()


def test_cli_writes_gif_or_png_by_suffix_or_format(tmp_path, capsys):
    from PIL import Image

    from hpgen.video import VideoSource

    base = ["patchnn", str(BALLOONS), "--input-height", "36", "--input-frames",
            "6", "--device", "cpu", "--frames", "5"]
    one = tmp_path / "fake.gif"
    assert _cli([*base, "--out", str(one)]) == 0
    assert one.read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    v = VideoSource(one)
    assert (v.num_frames, v.info.height, v.info.width) == (5, 36, 64)
    assert "[patchnn]" in (tmp_path / "fake_config.toml").read_text()
    assert (tmp_path / "fake_contact_sheet.png").is_file()
    strips = tmp_path / "strips"
    assert _cli([*base, "--format", "png", "--out", str(strips)]) == 0
    assert np.asarray(Image.open(strips / "sample_000.png")).shape == (36, 5 * 64, 3)  # frames side by side
    capsys.readouterr()
    assert _cli([*base, "--format", "gif", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "names a .png file but --format is gif" in err and "\n" not in err
