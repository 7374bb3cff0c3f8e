"""Which parameters change at scale n (Sec. 3.2): VAE scales fine-tune E and G^0 and train
G^n with G^1..G^{n-1} frozen; GAN scales train only G^n and D^n."""
import pytest
import torch

from hpgen import engine as eng
from hpgen.config import load_config
from hpgen.data import load_training_data
from hpgen.methods.base import ScaleState
from hpgen.methods.hpvaegan import HPVAEGANMethod
from hpgen.trainer import run_iteration

from conftest import BUNDLED


@pytest.fixture(scope="module")
def tiny():
    eng.setup_distributed("cpu")
    cfg = load_config(None, [f'data.video="{BUNDLED}"', "data.max_clips=1", "pyramid.num_scales=4",
                             "pyramid.min_height=12", "pyramid.max_height=24", "pyramid.scale_factor=1.3",
                             "pyramid.rates=[1,2]", "model.channels=8", "model.latent_channels=8",
                             "train.vae_scales=3", "train.critic_steps=1", "train.generator_steps=1"])
    return cfg, load_training_data(cfg)


def _snapshot(model, critic):
    named = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    if critic is not None:
        named.update({f"critic.{k}": v.detach().clone() for k, v in critic.state_dict().items()})
    return named


def _changed(before, model, critic):
    after = _snapshot(model, critic)
    return {k.split(".")[1] if not k.startswith("model.generators") else ".".join(k.split(".")[1:3])
            for k in before if not torch.equal(before[k], after[k])}


def _step_at(cfg, data, n):
    torch.manual_seed(0)
    method = HPVAEGANMethod(cfg)
    model, critic = method.build_model(), None
    for k in range(n + 1):
        critic = method.grow(model, critic, k)
    groups = method.param_groups(model, critic, n)
    engines = {name: eng.build_engine(critic if name == "d" else model, g) for name, g in groups.items()}
    st = ScaleState(n, data.shapes, data.reals)
    method.begin_scale(model, st)
    before = _snapshot(model, critic)
    run_iteration(method, model, critic, st, engines)
    return groups, _changed(before, model, critic)


def test_vae_scale_trains_e_g0_and_gn_only(tiny):
    cfg, data = tiny
    groups, changed = _step_at(cfg, data, 2)
    assert changed == {"encoder", "decoder", "generators.1"}  # G^2 is generators[1]; G^1 frozen
    assert set(groups) == {"g"}
    lrs = sorted(g["lr"] for g in groups["g"])
    assert lrs == pytest.approx(sorted([cfg.train.lr * 0.2 ** 2, cfg.train.lr]))


def test_scale0_trains_e_and_g0(tiny):
    cfg, data = tiny
    _, changed = _step_at(cfg, data, 0)
    assert changed == {"encoder", "decoder"}


def test_gan_scale_trains_only_gn_and_dn(tiny):
    cfg, data = tiny
    groups, changed = _step_at(cfg, data, 3)
    # noise_amps is set once per scale by begin_scale (before the snapshot), so it does not show here.
    assert changed == {"generators.2", "body"}  # G^3, and the critic's body
    assert set(groups) == {"g", "d"}
