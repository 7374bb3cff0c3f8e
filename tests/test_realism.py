"""Realism regression: a tiny HP-VAE-GAN trained on a real clip with a clear layout (sky,
balloons, ground; tests/data) must make samples that keep the scene, measured by the
bidirectional patch similarity (hpgen/metrics/bidirectional.py). Completeness, every input
patch having a close generated one, is what texture soup made of the input's colours fails,
while it still passes coherence and pixel diversity (issue: realistic samples)."""
import pytest
import torch

from hpgen.metrics.bidirectional import BidirectionalReference
from hpgen.metrics.copy_check import max_psnr
from hpgen.video import VideoSource, read_video, to_tensor

from conftest import REPO, run_hpgen

TINY = REPO / "configs" / "hpvaegan" / "tiny.toml"
NUM = 4
# Calibrated on CPU runs of this preset, 3 seeds x 4 samples (docs/BENCHMARKS.md, "Realism"):
# every sample of the authors' recipe is at 0.28..0.32; the recipe before it (running
# BatchNorm statistics, height-sized pyramid, 5-conv networks, whole-clip GP norm, 3 + 3
# updates), grey texture soup, at 0.37..0.38 on the same clip.
COMPLETENESS_BOUND = 0.345
# Coherence (every generated patch has a close input patch) is passed by soup too (0.23);
# it only guards against content foreign to the input (noise: 1.0). The recipe: 0.31..0.37.
COHERENCE_BOUND = 0.45


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    run, out = root / "run", root / "samples"
    run_hpgen("train", "--config", str(TINY), "--out", str(run), "--no-progress", check=True, timeout=900)
    run_hpgen("sample", str(run), "--num", str(NUM), "--out", str(out), "--seed", "3", check=True)
    real = to_tensor(read_video(sorted((run / "reals").glob("scale_*.mp4"))[-1]))
    fakes = [to_tensor(read_video(out / f"sample_{i:03d}.mp4")) for i in range(NUM)]
    return real, fakes


@pytest.mark.slow
def test_samples_keep_the_scene_layout(tiny_run):
    real, fakes = tiny_run
    ref = BidirectionalReference(real)
    scores = [ref.score(f) for f in fakes]
    for s in scores:
        assert s["completeness"] < COMPLETENESS_BOUND, scores  # the input's sky, balloons and ground are there
        assert s["coherence"] < COHERENCE_BOUND, scores        # and nothing foreign was made


@pytest.mark.slow
def test_samples_are_new_videos_not_copies(tiny_run):
    real, fakes = tiny_run
    for f in fakes:
        assert max_psnr(real, f) < 30.0  # no frame of any sample is a (shifted) frame of the input
    stack = torch.stack(fakes)
    assert float(stack.std(0).mean() / real.std()) > 0.15  # the samples differ from each other
