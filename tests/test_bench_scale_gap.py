"""bench/bench_scale_gap.py on a synthetic two-scale run: a reference sample is cut to the
frames the run trained on and sampled at each scale's frame step, so the run's own input,
given as the reference, scores near 0 at every scale and far below noise; the run's
metrics.jsonl values are carried next to it; a directory that is not a run is a one-line error."""
from __future__ import annotations

import importlib.util
import json

import torch

from hpgen.pyramid import resize
from hpgen.video import write_video

from conftest import REPO

spec = importlib.util.spec_from_file_location("bench_scale_gap", REPO / "bench" / "bench_scale_gap.py")
gap = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gap)


def moving_clip(t=7, h=32, w=48, step=4, seed=0) -> torch.Tensor:
    """Coloured blobs moving ``step`` px per frame to the right: (3, t, h, w) in [-1, 1]. Smooth
    enough that mp4's chroma subsampling at 16x24 costs little (completeness ~0.06 against
    itself), moving fast enough that frames 0-2 in place of 0, 3, 6 cost 0.2."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.avg_pool2d(torch.rand(1, 3, h + 9, w + 9 + step * t, generator=g), 9, 1)[0]
    base = ((base - base.mean()) * 4).clamp(-1, 1)
    return torch.stack([base[:, :h, i * step:i * step + w] for i in range(t)], 1)


def make_run(tmp_path, real):
    run = tmp_path / "run"
    (run / "reals").mkdir(parents=True)
    coarse = resize(real[:, ::3], (3, 16, 24)).clamp(-1, 1)         # scale 0: every 3rd frame, half size
    write_video(run / "reals" / "scale_00.mp4", coarse, 8)
    write_video(run / "reals" / "scale_01.mp4", real, 8)
    lines = [{"scale": 0, "step": 10, "completeness": 0.31, "coherence": 0.30},
             {"scale": 1, "step": 20, "completeness": 0.22, "coherence": 0.21}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run


def test_reference_is_cut_to_the_trained_frames_at_each_scales_rate(tmp_path):
    real = moving_clip()
    run = make_run(tmp_path, real)
    # The reference: the run's input followed by 6 frames it never trained on (as the
    # published 13-frame samples are to a 7-frame run), and uniform noise of the same length.
    longer = torch.cat([real, moving_clip(seed=5)[:, :6]], 1)
    write_video(tmp_path / "self.mp4", longer, 8)
    write_video(tmp_path / "noise.gif", torch.rand(3, 13, 32, 48) * 2 - 1, 8)
    out = tmp_path / "gap.json"
    assert gap.main(["--run", str(run), "--published", str(tmp_path / "self.mp4"), "--single", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["frames_trained"] == 7
    assert [s["rate"] for s in rep["scales"]] == [3, 1] and rep["scales"][0]["thw"] == [3, 16, 24]
    assert rep["scales"][0]["ours"] == {"coherence": 0.30, "completeness": 0.31}
    self_scores = [s["reference"]["completeness"] for s in rep["scales"]]
    assert gap.main(["--run", str(run), "--published", str(tmp_path / "noise.gif"), "--single",
                     "--out", str(out)]) == 0
    noise_scores = [s["reference"]["completeness"] for s in json.loads(out.read_text())["scales"]]
    for mine, noise in zip(self_scores, noise_scores):
        assert mine < 0.1 and mine < 0.2 * noise, (self_scores, noise_scores)


def test_not_a_run_is_a_one_line_error(tmp_path, capsys):
    rc = gap.main(["--run", str(tmp_path), "--published", str(tmp_path / "x.gif"), "--out", str(tmp_path / "o.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no reals/scale_NN.mp4" in err[0]
    assert not (tmp_path / "o.json").exists()
