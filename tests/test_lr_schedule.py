"""The in-scale learning-rate step decay, ``train.lr_decay_at`` / ``train.lr_decay_gamma``:
SinGAN's and ConSinGAN's code multiply every learning rate by 0.1 after 80% of a scale's
iterations (MultiStepLR), so each frozen scale hands a settled generator to the next."""
import json

import pytest
import torch

from hpgen import engine as eng
from hpgen.config import load_config

from conftest import REPO, run_hpgen

TINY = REPO / "configs/hpvaegan/tiny.toml"


def test_the_factor_steps_down_at_the_stated_fraction_of_each_scale():
    cfg = load_config(TINY, ["train.iters_per_scale=[10,10,10,5]", "train.lr_decay_at=0.8"])
    assert [cfg.train.lr_factor(0, s) for s in range(10)] == pytest.approx([1.0] * 8 + [0.1] * 2)
    assert [cfg.train.lr_factor(3, s) for s in range(5)] == pytest.approx([1.0] * 4 + [0.1])
    off = load_config(TINY, ["train.iters_per_scale=[10,10,10,5]"])
    assert {off.train.lr_factor(n, s) for n in range(4) for s in range(10 if n < 3 else 5)} == {1.0}
    for bad in ("train.lr_decay_at=1.0", "train.lr_decay_at=-0.1", "train.lr_decay_gamma=0"):
        with pytest.raises(Exception, match="lr_decay"):
            load_config(TINY, [bad])


def test_the_engine_steps_at_the_scheduled_rate_and_a_resumed_state_does_not_carry_a_stale_rate():
    eng.setup_distributed("cpu")
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1)
    groups = [{"params": [net.weight], "lr": 1e-3}, {"params": [net.bias], "lr": 2e-4}]
    engine = eng.build_engine(net, groups, grad_clip=0.0)
    cfg = load_config(TINY, ["train.iters_per_scale=[4]", "train.lr_decay_at=0.5", "train.lr_decay_gamma=0.01"])
    moved = []
    for step in range(4):
        eng.set_lr_factor(engine, cfg.train.lr_factor(0, step))
        before = net.weight.detach().clone()
        loss = net(torch.ones(2, 4)).pow(2).mean()
        engine.backward(loss)
        engine.step()
        moved.append(float((net.weight.detach() - before).abs().max()))
    # Adam's first steps move each weight by about lr: 1e-3 before the milestone, 1e-5 after.
    assert moved[0] == pytest.approx(1e-3, rel=0.05) and moved[1] == pytest.approx(1e-3, rel=0.05)
    assert moved[2] == pytest.approx(1e-5, rel=0.05) and moved[3] == pytest.approx(1e-5, rel=0.05)
    # A checkpoint saved after the milestone restores the decayed rate into the optimiser; the
    # schedule sets the rate from the built (base) rate, not from whatever was loaded.
    for g in engine.optimizer.param_groups:
        g["lr"] = 123.0
    eng.set_lr_factor(engine, 1.0)
    assert [g["lr"] for g in engine.optimizer.param_groups] == [1e-3, 2e-4]


def test_training_logs_the_schedule_it_runs(tmp_path):
    out = tmp_path / "run"
    run_hpgen("train", "--config", str(TINY), "--out", str(out), "--no-progress", "model.channels=8",
              "model.latent_channels=8", "train.iters_per_scale=[2,2,2,5]", "train.log_every=1",
              "train.lr_decay_at=0.6", "train.eval_metrics=[]", timeout=300)
    rows = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    last = [r["lr_factor"] for r in rows if r["scale"] == 3]
    assert last == pytest.approx([1.0, 1.0, 1.0, 0.1, 0.1])  # int(0.6 * 5) = 3 steps at the full rate
