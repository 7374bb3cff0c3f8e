"""Bad input gets one line naming the problem (exit 2, no traceback), and nothing that
already exists is overwritten."""
import numpy as np
from PIL import Image

from hpgen.cli import main
from hpgen.config import load_config
from hpgen.video import read_video, write_video

from conftest import REPO, untrained_run

DEMO = str(REPO / "configs" / "hpvaegan" / "demo.toml")


def _fails(capsys, argv, match):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("hpgen: error: ") and match in err, err
    return err


def test_missing_video(capsys, tmp_path):
    _fails(capsys, ["train", "--config", DEMO, "--video", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "r")],
           "input video not found")
    assert not (tmp_path / "r").exists()


def test_corrupt_video(capsys, tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    _fails(capsys, ["train", "--config", DEMO, "--video", str(bad), "--dry-run"], "cannot decode video")


def test_clip_shorter_than_the_pyramid_needs(capsys, tmp_path, bikes):
    short = write_video(tmp_path / "short.mp4", read_video(bikes, range(5), size=(136, 320)), fps=25)
    _fails(capsys, ["train", "--config", str(REPO / "configs/hpvaegan/paper.toml"), "--video", str(short),
                    "--dry-run"], "needs at least 13")


def test_frame_folder_with_gaps(capsys, tmp_path):
    for i in (0, 1, 3):
        Image.new("RGB", (64, 48)).save(tmp_path / f"{i:04d}.png")
    _fails(capsys, ["train", "--config", DEMO, "--video", str(tmp_path), "--dry-run"], "has gaps")


def test_unknown_config_key(capsys, tmp_path):
    _fails(capsys, ["train", "--config", DEMO, "train.learning_rate=1", "--dry-run"],
           "unknown config key 'train.learning_rate'")
    cfg = tmp_path / "x.toml"
    cfg.write_text("[model]\nchanels = 3\n")
    _fails(capsys, ["train", "--config", str(cfg), "--dry-run"], "unknown config key 'model.chanels'")


def test_grayscale_is_accepted_with_a_note(capsys, tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "gray"
    folder.mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (60, 80), dtype=np.uint8), mode="L").save(folder / f"{i}.png")
    assert main(["train", "--config", DEMO, "--video", str(folder), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "8 frames 60x80" in out and "scale" in out


def test_dry_run_prints_config_and_pyramid(capsys):
    assert main(["train", "--config", DEMO, "--dry-run"]) == 0
    out = capsys.readouterr().out
    n = load_config(DEMO).pyramid.num_scales
    assert "[pyramid]" in out and f"num_scales = {n}" in out
    assert "frames  height  width" in out and "vae" in out and "gan" in out
    assert out.count(" gan\n") + out.count(" vae\n") == n  # one pyramid row per scale


def test_finished_run_is_never_overwritten(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "generator.pt").write_bytes(b"precious")
    _fails(capsys, ["train", "--config", DEMO, "--out", str(run)], "already holds a finished run")
    assert (run / "generator.pt").read_bytes() == b"precious"


def test_foreign_directory_is_never_used(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    _fails(capsys, ["train", "--config", DEMO, "--out", str(tmp_path)], "not an hpgen run directory")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_sample_without_generator(capsys, tmp_path):
    _fails(capsys, ["sample", str(tmp_path), "--num", "1", "--out", str(tmp_path / "o")], "no trained generator")


def test_sample_sizes_that_cannot_be_made_are_one_line_errors(capsys, tmp_path):
    run = untrained_run(tmp_path / "run")  # tiny preset: 36x64 finest, 18x32 coarsest, receptive field 15
    out = tmp_path / "o"
    for args, match in ((["--frames", "0"], "--frames must be >= 1, got 0"),
                        (["--frames", "-1"], "--frames must be >= 1, got -1"),
                        (["--height", "3"], "an output of 3x5 makes the coarsest scale 2x3 pixels"),
                        (["--height", "12"], "smaller than 15 (the generators' receptive field); use at least "
                                             "about 30x54"),
                        (["--width", "2"], "an output of 1x2"),
                        (["--num", "0"], "--num must be >= 1")):
        _fails(capsys, ["sample", str(run), "--num", "1", "--out", str(out), "--device", "cpu", *args], match)
    assert not out.exists()  # nothing written


def test_train_refuses_a_run_larger_than_memory_before_decoding(capsys, tmp_path, monkeypatch):
    """hpgen train estimates the peak of its largest scale before any clip is decoded and
    refuses in one line naming the keys that shrink the run; nothing is written."""
    import hpgen.trainer
    from hpgen import memory
    from hpgen.video import VideoSource

    decoded = []
    monkeypatch.setattr(VideoSource, "read", lambda self, *a, **k: decoded.append(a))
    out = tmp_path / "run"
    # far beyond any machine: 2^18 channels (the estimate is linear in them)
    err = _fails(capsys, ["train", "--config", DEMO, "--out", str(out), "model.channels=262144"],
                 "training needs about")
    assert "GiB at its peak (" in err and "GiB free" in err and "--no-memory-check" in err
    assert "dist.precision=bf16" in err and "dist.checkpoint_min_voxels=1 (activation checkpointing)" in err
    assert "train.crop_height" not in err  # the demo preset trains on crops already
    # the demo preset itself, on a machine with no memory to spare
    monkeypatch.setattr(memory, "available_bytes", lambda device: 0)
    monkeypatch.setattr(memory, "_own_rss", lambda: 0)
    _fails(capsys, ["train", "--config", DEMO, "--out", str(out)], "training needs about 0.")
    assert not decoded and not out.exists()
    # --no-memory-check goes on to decoding (stopped there)
    def stop(*a, **k):
        raise hpgen.trainer.HpgenError("reached decoding")

    monkeypatch.setattr(hpgen.trainer, "make_feed", stop)
    _fails(capsys, ["train", "--config", DEMO, "--out", str(out), "--no-memory-check"], "reached decoding")
    assert not out.exists()
