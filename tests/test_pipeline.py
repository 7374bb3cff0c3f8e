"""Pipeline placement (contiguous, cost-balanced) and spatial crops at the GAN scales.

The multi-rank equivalence of pipelined runs is in test_distributed.py."""
import itertools
import random

import pytest
import torch

from hpgen import engine as eng
from hpgen.config import load_config
from hpgen.data import load_training_data
from hpgen.errors import HpgenError
from hpgen.methods.base import ScaleState
from hpgen.methods.hpvaegan import HPVAEGANMethod
from hpgen.placement import make_layout, partition, scale_costs
from hpgen.pyramid import ScaleShape

from conftest import BUNDLED, run_hpgen


def _brute_force(costs, stages):
    best = None
    for cuts in itertools.combinations(range(1, len(costs)), stages - 1):
        bounds = [0, *cuts, len(costs)]
        worst = max(sum(costs[a:b]) for a, b in zip(bounds, bounds[1:]))
        best = worst if best is None else min(best, worst)
    return best


def test_partition_is_contiguous_and_optimal():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 9)
        costs = [rng.uniform(0.1, 10) for _ in range(n)]
        p = rng.randint(1, n)
        starts = partition(costs, p)
        assert starts[0] == 0 and starts == sorted(set(starts)) and len(starts) == p
        bounds = [*starts, n]
        worst = max(sum(costs[a:b]) for a, b in zip(bounds, bounds[1:]))
        assert worst == pytest.approx(_brute_force(costs, p))


def test_placement_balances_cost_not_scale_count():
    # A 4/3 pyramid: the finest scale alone costs about as much as all coarser ones.
    shapes = [ScaleShape(frames=13, height=round(32 * (4 / 3) ** k), width=round(57 * (4 / 3) ** k), rate=1)
              for k in range(8)]
    costs = scale_costs(shapes, num_blocks=5, gan_from=4)
    layout, _ = make_layout(2, 0, 2, shapes, 5, 4)
    assert layout.starts == (0, 7)  # by count it would be (0, 4)
    assert [layout.owner(k) for k in range(8)] == [0] * 7 + [1]
    share = sum(costs[:7]) / sum(costs)
    assert 0.4 < share < 0.6


def test_layout_grid_and_explicit_starts():
    shapes = [ScaleShape(frames=3, height=10 + k, width=10 + k, rate=1) for k in range(5)]
    layout, _ = make_layout(4, 3, 2, shapes, 3, 2, starts=[2])
    assert (layout.stage, layout.replica, layout.replicas) == (1, 1, 2)
    assert list(layout.scales(0)) == [0, 1] and list(layout.scales(1)) == [2, 3, 4]
    assert layout.rank_of(0) == 2 and layout.rank_of(1, 0) == 1
    for bad in ([0], [5], [3, 2]):
        with pytest.raises(HpgenError, match="stage_starts"):
            make_layout(6, 0, 2 if len(bad) == 1 else 3, shapes, 3, 2, starts=bad)
    with pytest.raises(HpgenError, match="not a multiple"):
        make_layout(3, 0, 2, shapes, 3, 2)
    with pytest.raises(HpgenError, match="between 1 and 5"):
        make_layout(6, 0, 6, shapes, 3, 2)


def test_crop_below_the_receptive_field_is_a_one_line_error(tmp_path):
    proc = run_hpgen("train", "--out", str(tmp_path / "r"), "--video", str(BUNDLED), "train.crop_height=9")
    assert proc.returncode == 2 and "receptive field" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def gan_scale():
    eng.setup_distributed("cpu")
    over = [f'data.video="{BUNDLED}"', "data.max_clips=2", "pyramid.num_scales=3", "pyramid.min_height=16",
            "pyramid.max_height=36", "pyramid.scale_factor=1.5", "pyramid.rates=[1,2]", "model.channels=8",
            "model.latent_channels=8", "model.num_blocks=3", "train.vae_scales=1", "train.critic_steps=1",
            "train.generator_steps=1"]
    return over


def _gan_scale_state(over):
    """(data, method, model, ScaleState) at the first GAN scale (n = 2), begin_scale done."""
    cfg = load_config(None, over)
    data = load_training_data(cfg)
    torch.manual_seed(0)
    method = HPVAEGANMethod(cfg)
    model, critic = method.build_model(), None
    n = 2
    for k in range(n + 1):
        critic = method.grow(model, critic, k)
    method.param_groups(model, critic, n)
    st = ScaleState(n, data.shapes, data.reals)
    method.begin_scale(model, st)
    return data, method, model, st


def _prefix(over, crop, seen=None):
    data, method, model, st = _gan_scale_state(
        over + ([f"train.crop_height={crop[0]}", f"train.crop_width={crop[1]}"] if crop else []))
    if seen is not None:  # record the frame sizes G^1 runs on in the random prefix
        inner = model.refine_upsampled
        model.refine_upsampled = lambda up, k, noise=None: (seen.append((k, up.shape[-2:])), inner(up, k, noise))[1]
    torch.manual_seed(1)
    method.begin_iteration(model, st)
    return data, st


def test_gan_phases_see_one_crop_of_real_prefix_and_reconstruction(gan_scale):
    data, full = _prefix(gan_scale, None)
    ch, cw = 12, 20
    seen = []
    _, st = _prefix(gan_scale, (ch, cw), seen)
    s = data.shapes[2]
    # The random prefix ran G^1 only on windows under the crops, not on the whole frame.
    g1 = [hw for k, hw in seen if k == 1]
    assert g1 and all(hw[0] * hw[1] < data.shapes[1].height * data.shapes[1].width for hw in g1), g1
    assert (s.height, s.width) != (ch, cw)
    for i in range(data.reals[2].shape[0]):
        real_c = st.cache["real"][i]
        assert real_c.shape[-2:] == (ch, cw)
        # Find the crop's window in the full real clip; the random prefix and the
        # reconstruction input must be cut at that same window.
        hits = [(y, x) for y in range(s.height - ch + 1) for x in range(s.width - cw + 1)
                if torch.equal(data.reals[2][i, :, :, y:y + ch, x:x + cw], real_c)]
        assert hits, "the real crop is not a window of the real clip"
        y, x = hits[0]
        torch.testing.assert_close(st.cache["fake_up"][i], full.cache["fake_up"][i, :, :, y:y + ch, x:x + cw])
        torch.testing.assert_close(st.cache["recon_in"][i], full.cache["recon_in"][i, :, :, y:y + ch, x:x + cw])
    assert all(z.shape[-2:] == (ch, cw) for z in st.cache["zn"])


def test_gan_reconstruction_latent_mean_or_posterior(gan_scale):
    """train.gan_recon: the mean path is one fixed input per scale; the posterior path draws
    z = mu + sigma * eps every iteration (the authors' code), so it moves between iterations
    and collapses onto the mean path when sigma -> 0."""
    def state(recon):
        _, method, model, st = _gan_scale_state(gan_scale + [f"train.gan_recon={recon}"])
        return lambda: (method.begin_iteration(model, st), st.cache["recon_in"].clone())[1], model

    step, _ = state("mean")
    mean = step()
    torch.testing.assert_close(step(), mean)  # one fixed input per scale
    step, model = state("posterior")
    a, b = step(), step()
    assert not torch.allclose(a, mean, atol=1e-4) and not torch.allclose(a, b, atol=1e-4)  # a new draw each time
    with torch.no_grad():
        model.encoder.logvar_head.bias.fill_(-60.0)  # sigma = e^-30: the draw is the mean
    torch.testing.assert_close(step(), mean)


@pytest.mark.slow
def test_training_on_crops_samples_full_frames(tmp_path):
    run = tmp_path / "crop"
    run_hpgen("train", "--out", str(run), "--no-progress", "--video", str(BUNDLED), "data.max_clips=1",
              "pyramid.num_scales=3", "pyramid.min_height=16", "pyramid.max_height=36", "pyramid.scale_factor=1.5",
              "pyramid.rates=[1,2]", "model.channels=8", "model.latent_channels=8", "model.num_blocks=3",
              "train.vae_scales=1", "train.iters_per_scale=4", "train.critic_steps=1", "train.generator_steps=1",
              "train.crop_height=12", "train.crop_width=16", "train.sample_tile=12", "train.eval_metrics=[]", check=True,
              env={"OMP_NUM_THREADS": "1"})
    assert (run / "samples" / "scale_02.mp4").is_file()  # the end-of-scale snapshot, built from tiles
    proc = run_hpgen("sample", str(run), "--num", "2", "--out", str(tmp_path / "s"), check=True)
    run_hpgen("sample", str(run), "--num", "1", "--out", str(tmp_path / "t"), "--tile", "10", check=True)
    from hpgen.contact_sheet import ROW_GAP
    from hpgen.video import mp4_size, read_video

    payload = torch.load(run / "generator.pt", weights_only=False)
    fin = payload["shapes"][-1]
    h, w = mp4_size(fin["height"], fin["width"])  # an odd last row/column is dropped in mp4
    a = read_video(tmp_path / "s" / "sample_000.mp4")
    assert a.shape == (fin["frames"], h, w, 3)
    # Tiled sampling gives the same video (up to rounding and H.264).
    t = read_video(tmp_path / "t" / "sample_000.mp4")
    assert t.shape == a.shape and abs(t.astype(int) - a.astype(int)).mean() < 2
    assert (fin["height"], fin["width"]) != (12, 16)
    # The contact sheet: the run's finest real video on top, then one row per sample.
    sheet = tmp_path / "s" / "contact_sheet.png"
    assert str(sheet) in proc.stdout.splitlines()
    assert read_video(sheet)[0].shape[0] == 3 * h + 2 * ROW_GAP


def test_dry_run_shows_the_placement():
    proc = run_hpgen("train", "--config", "configs/hpvaegan/paper.toml", "--video", str(BUNDLED), "--dry-run",
                     "dist.pipeline_stages=2", check=True)
    table = proc.stdout.split("# pyramid\n")[1].splitlines()
    assert table[0].split()[-2:] == ["stage", "cost"]
    stages = [int(row.split()[-2]) for row in table[1:]]
    assert stages == sorted(stages) and set(stages) == {0, 1} and stages[-1] == 1
