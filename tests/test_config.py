import pytest

from hpgen.config import Config, apply_overrides, config_from_dict, dump_toml, load_config, to_dict
from hpgen.errors import HpgenError

from conftest import REPO


def test_presets_load_and_roundtrip():
    for name in ("demo", "paper"):
        cfg = load_config(REPO / "configs" / "hpvaegan" / f"{name}.toml")
        import tomllib

        again = config_from_dict(tomllib.loads(dump_toml(cfg)))
        assert to_dict(again) == to_dict(cfg)


def test_resolved_config_file_loads_back_with_awkward_strings(tmp_path):
    """config.toml in a run directory (tomli-w) reads back to the same config, whatever the
    video path holds: quotes, backslashes, a newline, a tab, non-ASCII."""
    from hpgen.patchnn.config import VGPNNConfig

    cfg = load_config(REPO / "configs" / "hpvaegan" / "demo.toml")
    cfg.data.video = 'C:\\clips\\my "best"\nshot\t\u00e9.mp4'
    path = tmp_path / "config.toml"
    path.write_text(dump_toml(cfg))
    assert to_dict(load_config(path)) == to_dict(cfg)
    v = VGPNNConfig()
    path.write_text(dump_toml(v))
    assert to_dict(load_config(path, cls=VGPNNConfig)) == to_dict(v)


def test_paper_preset_has_the_authors_published_values():
    cfg = load_config(REPO / "configs" / "hpvaegan" / "paper.toml")
    assert cfg.pyramid.num_scales == 10 and cfg.train.vae_scales == 3  # N=9; the code's 3 VAE levels
    assert (cfg.pyramid.min_height, cfg.pyramid.max_height, cfg.pyramid.side) == (32, 256, "longer")
    assert (cfg.model.num_blocks, cfg.model.encoder_blocks, cfg.model.norm_stats) == (7, 3, "batch")
    assert (cfg.train.critic_steps, cfg.train.generator_steps, cfg.train.gp_norm) == (1, 1, "voxel")
    assert cfg.pyramid.rates == [1, 2, 3, 4] and cfg.pyramid.clip_frames() == 13
    assert cfg.model.channels == 64 and cfg.model.kernel == 3 and cfg.model.latent_channels == 128
    assert cfg.train.lr == 5e-4 and cfg.train.beta_kl == 0.1 and cfg.train.lr_decay_vae == 0.2


def test_unknown_key_in_file_is_an_error(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[train]\nitters_per_scale = 3\n")
    with pytest.raises(HpgenError, match="unknown config key 'train.itters_per_scale'"):
        load_config(p)


def test_unknown_section_and_override_are_errors():
    with pytest.raises(HpgenError, match="unknown config key 'nope'"):
        apply_overrides(Config(), ["nope.x=1"])
    with pytest.raises(HpgenError, match="unknown config key 'train.lrr'"):
        apply_overrides(Config(), ["train.lrr=1"])


def test_overrides_are_typed():
    cfg = apply_overrides(Config(), ["train.lr=1e-3", "pyramid.rates=[1,2]", "pyramid.image=true",
                                     "data.video=some/path.mp4", "train.iters_per_scale=7"])
    assert cfg.train.lr == 1e-3 and cfg.pyramid.rates == [1, 2] and cfg.pyramid.image is True
    assert cfg.data.video == "some/path.mp4" and cfg.train.iters_per_scale == [7]  # one number: every scale
    with pytest.raises(HpgenError, match="expected an integer"):
        apply_overrides(Config(), ["train.iters_per_scale=lots"])
    with pytest.raises(HpgenError, match="section.key=value"):
        apply_overrides(Config(), ["train.lr"])


def test_cross_field_validation(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[train]\nvae_scales = 20\n")
    with pytest.raises(HpgenError, match="vae_scales"):
        load_config(p)
