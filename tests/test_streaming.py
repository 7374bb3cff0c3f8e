"""Long inputs are streamed: each step decodes only its clips, at each scale's size, in
DataLoader workers; memory stays bounded however long the video is."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from hpgen.data import ClipStream, StepBatches
from hpgen.pyramid import ScaleShape
from hpgen.video import VideoSource

from conftest import BUNDLED, REPO, clean_env

FRAMES, H, W = 2000, 1080, 1920


def _tree_rss(pid: int) -> int:
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    stack += [int(x) for x in f.read().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            pass
    return total


@pytest.fixture(scope="module")
def long_1080p(tmp_path_factory):
    """2000 frames of 1080p moving gradient (fast to encode, cheap to store: ~5 MB)."""
    import av

    path = tmp_path_factory.mktemp("long") / "long1080.mp4"
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([xx * 255 // W, yy * 255 // H, (xx + yy) * 255 // (H + W)], -1).astype(np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "40", "g": "48"}
        for i in range(FRAMES):
            for p in s.encode(av.VideoFrame.from_ndarray(np.roll(base, 8 * i, axis=1), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.mark.slow
def test_2000_frame_1080p_video_trains_with_bounded_memory(long_1080p, tmp_path):
    whole = FRAMES * H * W * 3  # bytes if the video were decoded whole, even as uint8
    bound = 2 * 2**30  # measured: ~0.75 GiB for the trainer, its worker and their children
    assert bound < whole / 4
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "hpgen", "train", "--out", str(run), "--no-progress", "--video", str(long_1080p),
           "pyramid.num_scales=3", "pyramid.min_height=16", "pyramid.max_height=32", "pyramid.rates=[1,2]",
           "model.channels=8", "model.latent_channels=8", "train.vae_scales=2", "train.iters_per_scale=4",
           "train.checkpoint_every=2", "train.log_every=2", "data.clips_per_step=2", "data.workers=1",
           "train.eval_samples=2"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=clean_env(OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.05)
    out = proc.stdout.read()
    assert proc.returncode == 0, out[-3000:]
    assert "666 clip(s), streaming 2 per rank per step" in out
    assert "segmentation fault" not in out.lower()
    assert (run / "generator.pt").is_file()
    assert 0 < peak < bound, f"peak RSS {peak / 2**30:.2f} GiB (whole video: {whole / 2**30:.1f} GiB)"


def test_clip_stream_decodes_each_scale_at_its_size_and_rate():
    shapes = [ScaleShape(2, 16, 38, 2), ScaleShape(3, 32, 75, 1)]
    ds = ClipStream(VideoSource(BUNDLED), shapes, [0, 3, 6], [0, 1])
    item = ds[1]
    assert item[0].shape == (3, 2, 16, 38) and item[1].shape == (3, 3, 32, 75)
    src = VideoSource(BUNDLED)
    from hpgen.pyramid import resize
    from hpgen.video import to_tensor

    # rate 2: frames 3, 5, decoded at the finest size and resized (antialiased bilinear)
    assert torch.equal(item[0], resize(to_tensor(src.read([3, 5], size=(32, 75))), (2, 16, 38)))


def test_resident_and_streaming_feeds_give_equal_tensors():
    """The same clip at the same scale is the same tensor whether it was decoded once and kept
    or streamed (before, streaming decoded each scale with decord's scaler and the resident
    feed resized from the finest size with antialiased bilinear: up to 0.2 apart on a
    [-1, 1] scale on this clip)."""
    from hpgen.config import load_config
    from hpgen.data import ResidentFeed, StreamFeed

    cfg = load_config(None, [f'data.video="{BUNDLED}"', "pyramid.num_scales=4", "pyramid.min_height=16",
                             "pyramid.max_height=48", "pyramid.rates=[1,2]", "data.max_clips=3",
                             "data.clips_per_step=1", "data.workers=0"])
    resident, stream = ResidentFeed(cfg, 0, 1), StreamFeed(cfg, 0, 1)
    assert resident.shapes == stream.shapes and resident.data.starts == stream.starts
    ds = ClipStream(stream.source, stream.shapes, stream.starts, list(range(len(stream.shapes))))
    for k in range(len(stream.starts)):
        item = ds[k]
        for n in range(len(stream.shapes)):
            assert torch.equal(resident.data.reals[n][k], item[n]), (k, n)
    for a, b in zip(resident.preview(), stream.preview()):
        assert torch.equal(a, b)
    # the trainer's batches: StreamFeed's scale-n batch holds the chosen clip's scales 0 and n
    batch = next(stream.batches(2, 0, 1, "cpu"))
    k = StepBatches(3, 1, 0, 1, cfg.train.seed, 2, 0, 1).batch(0)[0]
    assert torch.equal(batch[2][0], resident.data.reals[2][k]) and torch.equal(batch[0][0], resident.data.reals[0][k])
    assert batch[1] is None


def test_step_batches_are_a_function_of_the_step_alone():
    full = StepBatches(10, 2, 0, 1, seed=1, scale=2, first_step=0, steps=12)
    resumed = StepBatches(10, 2, 0, 1, seed=1, scale=2, first_step=7, steps=12)
    assert list(full)[7:] == list(resumed)
    epoch0 = [i for b in list(full)[:5] for i in b]
    assert sorted(epoch0) == list(range(10))  # every clip once per epoch
    r0 = StepBatches(10, 2, 0, 2, seed=1, scale=2, first_step=0, steps=5)
    r1 = StepBatches(10, 2, 1, 2, seed=1, scale=2, first_step=0, steps=5)
    for a, b in zip(r0, r1):
        assert not set(a) & set(b)  # ranks take disjoint slices of the global batch
    other = StepBatches(10, 2, 0, 1, seed=1, scale=3, first_step=0, steps=5)
    assert list(other) != list(full)[:5]
