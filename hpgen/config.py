"""Typed configuration: frozen-by-convention dataclasses loaded from TOML.

``load_config(path, overrides)`` reads a TOML preset into the dataclass tree,
applies ``section.key=value`` overrides from the command line, and rejects any
unknown key (a typo must never silently fall back to a default). Every field has
a one-line help string in ``metadata["help"]`` that ``hpgen train --help-config``
prints. ``dump_toml`` writes the resolved config into each run directory, and
``config_from_dict`` rebuilds it from a checkpoint, so a run directory is
self-describing.
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from .errors import HpgenError


def _f(default, help: str, scalar_ok: bool = False, **kw):
    """A field with its help text; ``scalar_ok``: a list field that also takes one number
    (meaning: that number for every item)."""
    meta = {"help": help, "scalar_ok": scalar_ok}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class DataConfig:
    video: str = _f("", "input video: mp4/avi/mov/gif file, image, or folder of numbered frames")
    start_frame: int = _f(0, "first frame of the input to use")
    max_frames: int = _f(0, "use at most this many input frames (0: all); a long input becomes several clips")
    max_clips: int = _f(0, "train on at most this many LCM(rates)+1-frame clips (0: all that fit)")
    clips_per_step: int = _f(0, "hpvaegan: 0: every clip in every step (the paper's summed loss, clips decoded once "
                                "and kept); k>0: stream k clips per rank per step, decoded on the fly at each scale's "
                                "size (for long or large inputs that must never be decoded whole). singan: k clips "
                                "per data-parallel replica per step (0: 1), drawn from every clip, which every "
                                "rank holds (docs/methods.md)")
    workers: int = _f(2, "DataLoader worker processes that decode streamed clips (0: decode in the trainer)")


@dataclass
class PyramidConfig:
    num_scales: int = _f(10, "N+1: number of scales, 0 (coarsest) .. N (finest)")
    min_height: int = _f(32, "size of the measured frame side (see 'side') at scale 0")
    max_height: int = _f(256, "size of the measured frame side at the finest scale (capped by the input's)")
    side: str = _f("shorter", "which frame side min_height/max_height measure: 'shorter' (the paper's heights for "
                              "landscape video) or 'longer' (the authors' code: 256 wide, so 144x256 for 16:9)")
    scale_factor: float = _f(4.0 / 3.0, "height ratio between consecutive scales (paper: 1.33)")
    rates: list = _f([1, 2, 3, 4], "temporal sampling rates Omega; scale 0 uses the largest, scale N the smallest")
    image: bool = _f(False, "image mode: a single frame, spatial-only pyramid, 2D convolutions")
    frames: int = _f(0, "fixed frames at every scale, no temporal pyramid (SinGAN-GIF: 8); 0: frames from rates")

    def clip_frames(self) -> int:
        """Frames of one training clip at full rate: LCM(Omega)+1, so end frames survive every rate
        (or ``frames`` when the pyramid is spatial-only in time, as in SinGAN-GIF)."""
        if self.image:
            return 1
        return self.frames if self.frames else math.lcm(*self.rates) + 1


@dataclass
class ModelConfig:
    channels: int = _f(64, "channels of every conv block (G, D and E)")
    num_blocks: int = _f(5, "conv blocks per generator/critic/encoder (receptive field 2*blocks+1)")
    kernel: int = _f(3, "conv kernel size in every dimension")
    latent_channels: int = _f(128, "channels of the patch-VAE latent z (M and S heads)")
    encoder_blocks: int = _f(0, "conv blocks of the patch-VAE encoder before its heads (0: num_blocks; the authors' "
                                "code: 3)")
    norm_stats: str = _f("running", "BatchNorm statistics of the HP-VAE-GAN generators outside the trained scale: "
                                    "'running' (averages kept in training; PyTorch eval mode) or 'batch' (each "
                                    "batch's own, in the frozen prefix and at sampling; the authors' code, which "
                                    "never calls eval())")
    output: str = _f("residual", "HP-VAE-GAN scales n >= 1: 'residual', up + tanh(G^n(up + z_n)) (Eq. 6/9 with G "
                                 "ending in tanh), or 'tanh', tanh(up + G^n(up + z_n)) with a linear last conv (the "
                                 "authors' code)")


@dataclass
class TrainConfig:
    method: str = _f("hpvaegan", "training method: hpvaegan or singan (SinGAN-GIF and the baselines, see [singan])")
    vae_scales: int = _f(4, "scales 0..M use the patch-VAE; this is M+1 (paper: M=3, so 4)")
    iters_per_scale: list = _f([20000], "optimisation steps per scale: one number for every scale, or a list "
                                        "with one per scale (the coarse scales cost a fraction of the fine ones)",
                               scalar_ok=True)
    lr: float = _f(5e-4, "Adam learning rate of every network")
    betas: list = _f([0.5, 0.999], "Adam betas")
    lr_decay_at: float = _f(0.0, "fraction of each scale's steps after which every network trained there runs at "
                                 "lr_decay_gamma x its learning rate (0: never; SinGAN's and ConSinGAN's code: 0.8)")
    lr_decay_gamma: float = _f(0.1, "the learning-rate factor of lr_decay_at (SinGAN's and ConSinGAN's code: 0.1)")
    lr_decay_vae: float = _f(0.2, "E and G^0 learning rate factor per scale after scale 0, during the VAE scales")
    beta_kl: float = _f(0.1, "beta_vae: weight of the KL term (Eq. 8)")
    beta_adv: float = _f(0.1, "beta_adv: weight of the adversarial term (Eq. 11)")
    gan_recon: str = _f("mean", "the latent of the reconstruction path x-bar^n at the GAN scales (Eq. 11's recon term): "
                                "'mean' (the encoder's mean: one fixed input per scale) or 'posterior' (a fresh "
                                "z = mu + sigma * eps every iteration, as the authors' code does; the paper does not "
                                "say)")
    gp_weight: float = _f(0.1, "lambda of the WGAN-GP gradient penalty (Eq. 10)")
    gp_norm: str = _f("voxel", "gradient-penalty norm: 'voxel' (over channels at each position, mean over "
                               "positions; the released code of SinGAN, ConSinGAN and HP-VAE-GAN, whose patch critics "
                               "score every position) or 'sample' (over the whole clip, as the WGAN-GP paper does for a "
                               "critic with one score per sample; with a patch critic it flattens the critic: "
                               "docs/BENCHMARKS.md)")
    gp_method: str = _f("explicit", "how the penalty's input gradient is computed: 'explicit' (the critic's chain rule "
                                    "with transposed convolutions and LeakyReLU masks, a first-order graph; "
                                    "models/input_grad.py) or 'autograd' (create_graph=True and a double backward); "
                                    "the same values and gradients")
    gp_every: int = _f(1, "lazy regularisation (StyleGAN2 Sec. 3.1): the penalty on every k-th critic step only, "
                          "with weight k * gp_weight (1: every step)")
    critic_steps: int = _f(3, "critic updates per generator update at GAN scales")
    generator_steps: int = _f(3, "generator updates per iteration at GAN scales")
    grad_clip: float = _f(1.0, "clip each network's global gradient norm at this value (0: no clipping); 1.0 is "
                               "DeepSpeed's default, which every hpgen run had before this key existed")
    grad_clip_critic: float = _f(-1.0, "the critic's gradient-norm clip (0: none; -1: train.grad_clip); the "
                                       "HP-VAE-GAN code clips only the generator")
    noise_amp: float = _f(0.1, "z_n amplitude = noise_amp * RMSE(upsampled reconstruction, real) at each GAN scale")
    recon_weight: float = _f(1.0, "weight of the reconstruction term at GAN scales (Eq. 11 has 1)")
    crop_height: int = _f(0, "GAN scales train on random crops this many pixels high (0: full frames); the "
                             "generators are convolutional, so sampling and reconstruction stay full-frame")
    crop_width: int = _f(0, "crop width at the GAN scales (0: full frames)")
    sample_tile: int = _f(0, "end-of-scale snapshots build the frame from tiles of this many pixels (hpvaegan; 0: "
                             "whole frames); with crops, when a whole frame does not fit in memory")
    seed: int = _f(0, "random seed of the run")
    log_every: int = _f(50, "steps between scalar logs")
    checkpoint_every: int = _f(500, "steps between resumable checkpoints")
    eval_metrics: list = _f(["diversity_gray", "diversity_lab", "coherence", "completeness"],
                            "metrics (hpgen eval names) on fixed samples at the end of every scale, to metrics.jsonl "
                            "and TensorBoard; add sifid/svfid when their weights packages are installed")
    eval_samples: int = _f(4, "fixed-seed samples scored by eval_metrics at the end of every scale")
    keep_checkpoints: int = _f(2, "how many newest checkpoints to keep")
    device: str = _f("auto", "auto|cpu|cuda")

    def clip_for(self, net: str) -> float:
        """The gradient-norm clip of engine ``net`` ("g" or "d")."""
        if net == "d" and self.grad_clip_critic != -1:
            return self.grad_clip_critic
        return self.grad_clip

    def iters(self, n: int) -> int:
        """Steps of scale n."""
        its = self.iters_per_scale
        return its[0] if len(its) == 1 else its[n]

    def lr_factor(self, n: int, step: int) -> float:
        """Learning-rate factor at step ``step`` (from 0) of scale n: 1, then lr_decay_gamma from
        the step ``lr_decay_at`` x the scale's steps on (a step decay, as SinGAN's MultiStepLR)."""
        if self.lr_decay_at and step >= int(self.lr_decay_at * self.iters(n)):
            return self.lr_decay_gamma
        return 1.0

    def gp_weight_at(self, critic_step: int) -> float:
        """The penalty's weight at the critic step ``critic_step`` of a scale (counted from 0):
        k * gp_weight on every k-th step, 0 between (lazy regularisation, k = gp_every)."""
        return self.gp_weight * self.gp_every if critic_step % self.gp_every == 0 else 0.0

    def steps_before(self, n: int) -> int:
        """Global step at which scale n starts (logs and metrics order the scales by it)."""
        return sum(self.iters(k) for k in range(n))


@dataclass
class SinGANConfig:
    """SinGAN-family options (train.method = "singan"): SinGAN-GIF, SinGAN-3D, ConSinGAN-3D and
    their image-mode versions are presets of these (docs/methods.md)."""
    conv3d_scales: int = _f(-1, "coarsest scales with 3D generators; finer ones are 2D on frame+neighbours (-1: all 3D)")
    separable: bool = _f(False, "channel-wise separable 3D convs (1xkxk spatial, then kx1x1 per channel) in 3D generators")
    neighbours: int = _f(1, "2D generators see this many frames either side, concatenated on channels")
    image_critic: float = _f(0.0, "weight of the per-frame 2D WGAN-GP critic (SinGAN-GIF: 1; 0: none)")
    video_critic: float = _f(1.0, "weight of the 3D WGAN-GP critic (SinGAN-GIF alpha = 5)")
    stat_weight: float = _f(0.0, "gamma: weight of the colour-statistics loss, Eq. 6 of SinGAN-GIF (paper: 2)")
    recon_loss: str = _f("mse", "reconstruction term: 'l1' (SinGAN-GIF Eq. 5) or 'mse' (SinGAN's squared L2); "
                                "every preset names its own")
    concurrent: int = _f(1, "stages trained at once (ConSinGAN: 3); 1 trains only the newest (SinGAN)")
    lr_scale: float = _f(0.1, "ConSinGAN: a stage k below the newest trains at lr * lr_scale**k")
    slomo_factors: list = _f([1], "frame-rate factors trained (e.g. [1, 2]); >1 uses a latent-path noise and "
                                  "sub-sampled video critic so that `hpgen apply slomo` can slow down")


@dataclass
class DistConfig:
    pipeline_stages: int = _f(1, "P: pipeline stages over the scales (world size = P x D; rank = replica * P + stage)")
    stage_starts: list = _f([], "first scale of stages 1..P-1 (empty: balanced by voxels x layers, docs/ARCHITECTURE.md)")
    micro_batches: int = _f(1, "micro-batches per step that flow through the pipeline stages; part of the recipe "
                               "(BatchNorm statistics are per micro-batch), so P=1 with the same value is the same run")
    precision: str = _f("fp32", "fp32|bf16: bf16 runs the networks in bfloat16 with fp32 master weights (DeepSpeed)")
    zero_stage: int = _f(0, "DeepSpeed ZeRO stage for the optimiser states: 0 or 1")
    channels_last: bool = _f(False, "run 3D convolutions on channels-last (N,T,H,W,C) activations; a GPU speed "
                                    "option, see docs/BENCHMARKS.md")
    checkpoint_min_voxels: int = _f(0, "recompute conv activations in backward at scales with at least this many "
                                       "voxels per clip (0: never); trades compute for memory")
    timeout_s: int = _f(1800, "collective timeout: a stuck rank fails instead of hanging")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    pyramid: PyramidConfig = field(default_factory=PyramidConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    singan: SinGANConfig = field(default_factory=SinGANConfig)


# ---------------------------------------------------------------------------
# generic loading / overriding / dumping of any dataclass tree

def _coerce(value: Any, default: Any, where: str) -> Any:
    """Check/convert a TOML or command-line value to the type of the field's default."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise HpgenError(f"config key {where}: expected true/false, got {value!r}")
    if isinstance(default, int):
        try:
            if isinstance(value, str):
                return int(value)
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        except ValueError:
            pass
        raise HpgenError(f"config key {where}: expected an integer, got {value!r}")
    if isinstance(default, float):
        try:
            if isinstance(value, str):
                return float(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        except ValueError:
            pass
        raise HpgenError(f"config key {where}: expected a number, got {value!r}")
    if isinstance(default, list):
        if isinstance(value, str):
            try:
                value = tomllib.loads(f"v = {value}")["v"]
            except tomllib.TOMLDecodeError:
                value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise HpgenError(f"config key {where}: expected a list, got {value!r}")
        if default:
            value = [_coerce(v, default[0], where) for v in value]
        return value
    if isinstance(default, str):
        return str(value)
    return value


def _merge(obj, data: dict, prefix: str = ""):
    if not isinstance(data, dict):
        raise HpgenError(f"config section {prefix.rstrip('.') or '<root>'} must be a table")
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in data.items():
        where = prefix + key
        if key not in names:
            raise HpgenError(f"unknown config key '{where}' (known here: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, where + ".")
        else:
            if names[key].metadata.get("scalar_ok") and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = [value]
            setattr(obj, key, _coerce(value, current, where))
    return obj


def apply_overrides(cfg, overrides: list[str]):
    """Apply ``section.key=value`` strings (values parsed as TOML where possible)."""
    for item in overrides:
        if "=" not in item:
            raise HpgenError(f"override '{item}' is not of the form section.key=value")
        path, raw = item.split("=", 1)
        parts = path.strip().split(".")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare string such as a path
        nested: Any = value
        for p in reversed(parts):
            nested = {p: nested}
        _merge(cfg, nested)
    return cfg


def config_from_dict(data: dict, cls=Config):
    return _merge(cls(), data)


def load_config(path: str | Path | None, overrides: list[str] | None = None, cls=Config):
    cfg = cls()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise HpgenError(f"config file not found: {p}")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise HpgenError(f"config file {p} is not valid TOML: {e}") from None
        _merge(cfg, data)
    apply_overrides(cfg, overrides or [])
    validate(cfg)
    return cfg


def validate(cfg) -> None:
    """Cross-field checks that a type check cannot express."""
    if isinstance(cfg, Config):
        py, tr = cfg.pyramid, cfg.train
        if py.num_scales < 1:
            raise HpgenError("pyramid.num_scales must be >= 1")
        if not py.rates or any(r < 1 for r in py.rates):
            raise HpgenError("pyramid.rates must be a non-empty list of positive integers")
        if py.scale_factor <= 1.0:
            raise HpgenError("pyramid.scale_factor must be > 1")
        if py.min_height < 8 or py.max_height < py.min_height:
            raise HpgenError("pyramid heights must satisfy 8 <= min_height <= max_height")
        if py.side not in ("shorter", "longer"):
            raise HpgenError(f"pyramid.side must be 'shorter' or 'longer', not '{py.side}'")
        if cfg.model.norm_stats not in ("running", "batch"):
            raise HpgenError(f"model.norm_stats must be 'running' or 'batch', not '{cfg.model.norm_stats}'")
        if cfg.model.output not in ("residual", "tanh"):
            raise HpgenError(f"model.output must be 'residual' or 'tanh', not '{cfg.model.output}'")
        if tr.gp_norm not in ("sample", "voxel"):
            raise HpgenError(f"train.gp_norm must be 'sample' or 'voxel', not '{tr.gp_norm}'")
        if tr.gan_recon not in ("mean", "posterior"):
            raise HpgenError(f"train.gan_recon must be 'mean' or 'posterior', not '{tr.gan_recon}'")
        if tr.gp_method not in ("explicit", "autograd"):
            raise HpgenError(f"train.gp_method must be 'explicit' or 'autograd', not '{tr.gp_method}'")
        if tr.grad_clip < 0:
            raise HpgenError("train.grad_clip must be >= 0 (0: no clipping)")
        if tr.grad_clip_critic < 0 and tr.grad_clip_critic != -1:
            raise HpgenError("train.grad_clip_critic must be >= 0 (0: no clipping) or -1 (train.grad_clip)")
        if not 0 <= tr.lr_decay_at < 1:
            raise HpgenError("train.lr_decay_at must be in [0, 1) (0: no decay)")
        if tr.lr_decay_gamma <= 0:
            raise HpgenError("train.lr_decay_gamma must be > 0")
        if tr.gp_every < 1:
            raise HpgenError("train.gp_every must be >= 1 (1: the penalty at every critic step)")
        if cfg.model.encoder_blocks < 0:
            raise HpgenError("model.encoder_blocks must be >= 0 (0: model.num_blocks)")
        if not 1 <= tr.vae_scales <= py.num_scales:
            raise HpgenError("train.vae_scales must be between 1 and pyramid.num_scales")
        its = tr.iters_per_scale
        if not its or any(i < 1 for i in its) or len(its) not in (1, py.num_scales):
            raise HpgenError(f"train.iters_per_scale must be one number >= 1 or a list of {py.num_scales} "
                             f"(one per scale), got {its}")
        d = cfg.dist
        if d.precision not in ("fp32", "bf16"):
            raise HpgenError(f"dist.precision must be fp32 or bf16, not '{d.precision}'")
        if d.zero_stage not in (0, 1):
            raise HpgenError("dist.zero_stage must be 0 or 1 (ZeRO-2/3 shard gradients, which this GAN "
                             "training with two engines does not support)")
        if d.pipeline_stages < 1 or d.micro_batches < 1:
            raise HpgenError("dist.pipeline_stages and dist.micro_batches must be >= 1")
        if tr.sample_tile < 0 or (tr.sample_tile and tr.method != "hpvaegan"):
            raise HpgenError("train.sample_tile must be >= 0, and tiled snapshots exist for hpvaegan only")
        if tr.sample_tile and cfg.model.norm_stats == "batch":
            raise HpgenError("train.sample_tile needs model.norm_stats = \"running\" (with per-sample BatchNorm "
                             "statistics a tile would be normalised by itself)")
        if tr.crop_height < 0 or tr.crop_width < 0:
            raise HpgenError("train.crop_height and train.crop_width must be >= 0 (0: full frames)")
        rf = cfg.model.num_blocks * (cfg.model.kernel - 1) + 1
        for name, v in (("crop_height", tr.crop_height), ("crop_width", tr.crop_width)):
            if 0 < v <= rf:
                raise HpgenError(f"train.{name}={v} must exceed the receptive field of the generators and critics "
                                 f"({rf} pixels for {cfg.model.num_blocks} blocks of kernel {cfg.model.kernel}), "
                                 "or the crops hold no complete patch")
        if py.frames < 0 or py.frames == 1:
            raise HpgenError("pyramid.frames must be 0 (use rates) or >= 2 (use pyramid.image for one frame)")
        sg = cfg.singan
        if sg.concurrent < 1 or sg.neighbours < 0 or not sg.slomo_factors or any(f < 1 for f in sg.slomo_factors):
            raise HpgenError("singan.concurrent >= 1, singan.neighbours >= 0 and positive singan.slomo_factors")
        if sg.recon_loss not in ("l1", "mse"):
            raise HpgenError(f"singan.recon_loss must be 'l1' or 'mse', not '{sg.recon_loss}'")
        if sg.image_critic < 0 or sg.video_critic < 0 or sg.image_critic + sg.video_critic == 0:
            raise HpgenError("singan.image_critic and singan.video_critic must be >= 0, not both 0")


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _toml_value(v) -> str:
    """One value as TOML on one line (for ``describe``; tomli-w writes arrays one item a line)."""
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return tomli_w.dumps({"v": v}).partition("=")[2].strip()


def dump_toml(cfg) -> str:
    """The config as a TOML document (tomli-w), which ``load_config``/``config_from_dict``
    read back to an equal config."""
    return tomli_w.dumps(to_dict(cfg))


def describe(cfg) -> str:
    """Help text for every key: name, current value, and its docstring."""
    out: list[str] = []

    def walk(obj, prefix):
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if dataclasses.is_dataclass(v):
                walk(v, prefix + f.name + ".")
            else:
                out.append(f"  {prefix + f.name} = {_toml_value(v)}\n      {f.metadata.get('help', '')}")

    walk(cfg, "")
    return "\n".join(out)
