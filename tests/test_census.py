"""bench/census.py: its shapes-only mode (zeros for convolutions) counts exactly what running
them counts, and the explicit penalty removes FLOPs (not ops) from a GAN iteration."""
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

import census  # noqa: E402

from hpgen import engine as eng  # noqa: E402

SMALL = ["model.channels=2", "model.latent_channels=4", "model.num_blocks=3", "train.vae_scales=2",
         "pyramid.num_scales=3", "pyramid.max_height=48", "train.iters_per_scale=10"]


def test_shapes_only_counts_equal_computed_counts():
    eng.setup_distributed("cpu")
    cfg = REPO / "configs/hpvaegan/tiny.toml"
    fast = census.census(str(cfg), SMALL, scales=[0, 2], shapes_only=True)
    slow = census.census(str(cfg), SMALL, scales=[0, 2], shapes_only=False)
    for a, b in zip(fast["scales"], slow["scales"]):
        assert (a["flops"], a["aten_ops"], a["view_ops"]) == (b["flops"], b["aten_ops"], b["view_ops"])
        assert a["host_syncs"] == 0


def test_explicit_penalty_costs_less_than_autograd():
    eng.setup_distributed("cpu")
    cfg = str(REPO / "configs/hpvaegan/tiny.toml")
    exp = census.census(cfg, SMALL, scales=[2])["scales"][0]
    aut = census.census(cfg, [*SMALL, 'train.gp_method="autograd"'], scales=[2])["scales"][0]
    assert exp["flops"] < aut["flops"]
    assert exp["aten_ops"] <= aut["aten_ops"]
