"""`hpgen sample` writes mp4, gif or png strips, chosen by --format or by --out's suffix
(on an untrained generator.pt: the format is what is tested, not the pictures)."""
import numpy as np
from PIL import Image

from hpgen.cli import main
from hpgen.video import VideoSource

from conftest import untrained_run

GIF_MAGIC = (b"GIF87a", b"GIF89a")


def test_sample_gif_from_the_out_suffix_keeps_an_odd_size(tmp_path, capsys):
    run = untrained_run(tmp_path / "run")  # tiny preset: 7x36x64
    out = tmp_path / "gifs" / "fake.gif"
    assert main(["sample", str(run), "--num", "1", "--out", str(out), "--height", "37", "--device", "cpu"]) == 0
    assert out.read_bytes()[:6] in GIF_MAGIC
    v = VideoSource(out)
    assert (v.num_frames, v.info.height, v.info.width) == (7, 37, 66)  # gif: the exact (odd) size
    assert sorted(p.name for p in out.parent.iterdir()) == ["fake.gif", "fake_contact_sheet.png"]
    # several samples under one name: fake_000.gif, ...
    assert main(["sample", str(run), "--num", "2", "--out", str(out), "--device", "cpu"]) == 0
    assert (out.parent / "fake_000.gif").read_bytes()[:6] in GIF_MAGIC
    assert (out.parent / "fake_001.gif").is_file()


def test_sample_format_flag_gif_and_png(tmp_path, capsys):
    run = untrained_run(tmp_path / "run")
    gifs, pngs = tmp_path / "g", tmp_path / "p"
    assert main(["sample", str(run), "--num", "2", "--out", str(gifs), "--format", "gif", "--device", "cpu"]) == 0
    assert sorted(p.name for p in gifs.iterdir()) == ["contact_sheet.png", "sample_000.gif", "sample_001.gif"]
    assert all((gifs / f"sample_{i:03d}.gif").read_bytes()[:6] in GIF_MAGIC for i in range(2))
    assert main(["sample", str(run), "--num", "1", "--out", str(pngs), "--format", "PNG", "--device", "cpu"]) == 0
    strip = np.asarray(Image.open(pngs / "sample_000.png"))
    assert strip.shape == (36, 7 * 64, 3)  # the frames side by side; no contact sheet for strips
    assert sorted(p.name for p in pngs.iterdir()) == ["sample_000.png"]
    capsys.readouterr()
    for argv, match in ((["--out", str(tmp_path / "a.mp4"), "--format", "gif"], "names a .mp4 file but --format is gif"),
                        (["--out", str(tmp_path / "b"), "--format", "avi"], "--format avi: use one of mp4, gif, png")):
        assert main(["sample", str(run), "--num", "1", "--device", "cpu", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("hpgen: error: ") and match in err and "\n" not in err, err
    assert not (tmp_path / "a.mp4").exists() and not (tmp_path / "b").exists()
