"""Contact sheets: layout (rows, evenly spaced frames, resized rows, labels), bad input,
the sheet `hpgen sample` draws from a run directory, and the one `hpgen patchnn` writes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hpgen.cli import main
from hpgen.commands.sample import finest_real
from hpgen.contact_sheet import (BACKGROUND, FRAME_GAP, ROW_GAP, contact_sheet, frame_indices, write_contact_sheet,
                                 write_samples_sheet)
from hpgen.errors import HpgenError
from hpgen.pyramid import resize
from hpgen.video import read_video, to_frames, write_video

from conftest import BUNDLED


def ramp(t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A video whose every frame differs: uniform noise plus the frame index in red."""
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(3, t, h, w, generator=g) * 0.5 - 0.75
    v[0] += torch.linspace(0, 1.5, t).view(t, 1, 1)
    return v.clamp(-1, 1)


def cell(sheet: np.ndarray, row: int, col: int, h: int, w: int, margin: int = 0) -> np.ndarray:
    y, x = row * (h + ROW_GAP), margin + col * (w + FRAME_GAP)
    return sheet[y:y + h, x:x + w]


def test_frame_indices_are_evenly_spaced_with_both_ends():
    assert frame_indices(13, 8) == [0, 2, 3, 5, 7, 9, 10, 12]
    assert frame_indices(5, 8) == [0, 1, 2, 3, 4]
    assert frame_indices(20, 1) == [0]


def test_layout_rows_frames_and_resizing(tmp_path):
    first, small, image = ramp(13, 20, 30), ramp(5, 10, 15, 1), ramp(1, 20, 30, 2)[:, 0]
    sheet = contact_sheet([first, small, image], max_frames=8)
    assert sheet.shape == (3 * 20 + 2 * ROW_GAP, 8 * 30 + 7 * FRAME_GAP, 3)
    want = to_frames(first)
    for col, t in enumerate(frame_indices(13, 8)):          # row 0: frames 0, 2, 3, 5, ...
        assert np.array_equal(cell(sheet, 0, col, 20, 30), want[t])
    up = to_frames(resize(small, (5, 20, 30)))               # row 1: resized to the first row's size
    assert np.array_equal(cell(sheet, 1, 4, 20, 30), up[4])
    assert (cell(sheet, 1, 5, 20, 30) == BACKGROUND).all()   # 5 frames: the rest of the row is empty
    assert np.array_equal(cell(sheet, 2, 0, 20, 30), to_frames(image)[0])
    assert (sheet[20:20 + ROW_GAP] == BACKGROUND).all()      # the gap between rows

    out = write_contact_sheet(tmp_path / "sheet.png", [first, small], labels=["input", "sample 0"])
    png = read_video(out)[0]
    margin = png.shape[1] - (8 * 30 + 7 * FRAME_GAP)
    assert png.shape[0] == 2 * 20 + ROW_GAP and margin > 0
    assert (png[:20, :margin] != BACKGROUND).any()           # a label was drawn
    assert np.array_equal(cell(png, 0, 7, 20, 30, margin), want[12])


def test_frame_height_caps_the_rows():
    sheet = contact_sheet([ramp(3, 40, 60), ramp(3, 10, 10)], frame_height=20)
    assert sheet.shape == (2 * 20 + ROW_GAP, 3 * 30 + 2 * FRAME_GAP, 3)


def test_bad_input_is_one_line_error(tmp_path):
    v = ramp(2, 8, 8)
    for call, match in [(lambda: contact_sheet([]), "at least one"),
                        (lambda: contact_sheet([v, v], labels=["a"]), "1 labels for 2"),
                        (lambda: contact_sheet([torch.zeros(2, 8, 8)]), r"\(3, T, H, W\)"),
                        (lambda: write_contact_sheet(tmp_path / "s.jpg", [v]), "is a .png")]:
        with pytest.raises(HpgenError, match=match) as e:
            call()
        assert "\n" not in str(e.value)


def test_sample_sheet_uses_the_finest_real(tmp_path):
    run = tmp_path / "run"
    # (widths decord decodes: it fails on 8, 12, 16, 24, 48 and 72)
    for k, (h, w) in {0: (8, 14), 2: (12, 18), 10: (16, 26)}.items():   # 10 sorts after 2 by number
        write_video(run / "reals" / f"scale_{k:02d}.mp4", ramp(4, h, w, k), fps=10)
    assert finest_real(run).name == "scale_10.mp4"
    assert finest_real(tmp_path / "nowhere") is None
    samples = [write_video(tmp_path / f"sample_{i:03d}.mp4", ramp(6, 32, 50, 5 + i), fps=10) for i in range(2)]
    png = read_video(write_samples_sheet(tmp_path / "contact_sheet.png", samples, finest_real(run)))[0]
    assert png.shape[0] == 3 * 16 + 2 * ROW_GAP                        # input + 2 samples, at the input's 16 px
    alone = read_video(write_samples_sheet(tmp_path / "alone.png", samples, None))[0]
    assert alone.shape[0] == 2 * 32 + ROW_GAP                          # no reals: samples only


def test_patchnn_writes_a_sheet(tmp_path, capsys):
    out = tmp_path / "pn"
    assert main(["patchnn", str(BUNDLED), "--out", str(out), "--num", "2", "--input-height", "24",
                 "--input-frames", "6", "--device", "cpu"]) == 0
    assert f"wrote {out / 'contact_sheet.png'}" in capsys.readouterr().out
    png = read_video(out / "contact_sheet.png")[0]
    assert png.shape[0] == 3 * 24 + 2 * ROW_GAP                        # input + 2 samples
    assert main(["patchnn", str(BUNDLED), "--out", str(tmp_path / "rt"), "--retarget", "--frames", "4",
                 "--input-height", "24", "--input-frames", "6", "--device", "cpu"]) == 0
    assert not (tmp_path / "rt" / "contact_sheet.png").exists()
