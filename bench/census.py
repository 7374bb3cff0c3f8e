"""Census of one training iteration per scale, on CPU: FLOPs, aten ops and host syncs, and
a projection of the run's GPU hours from them.

    python bench/census.py --config configs/hpvaegan/paper.toml --out census_paper.json
    python bench/census.py --config configs/hpvaegan/paper.toml --name autograd train.gp_method=\\"autograd\\"

Every scale runs the trainer's own iteration (``hpgen.trainer.run_iteration`` on DeepSpeed
engines) at the preset's true frame sizes, on synthetic clips (content does not change
the cost), after one untimed iteration (Adam's state, the scale's cached inputs).

FLOPs (``torch.utils.flop_counter``'s per-op formulas: convolutions forward and backward,
matmuls) are counted at the true T x H x W but with few channels, and are exact anyway: every
counted op is a convolution or matrix product whose FLOPs are a polynomial of degree 2 in
the width c of the networks when the latent width is a fixed multiple of c (3 colour
channels and 1 score channel stay fixed). The iteration is counted at c = d, 2d, 3d (d the
smallest width that keeps latent/channels exact) and the quadratic through those three
points is evaluated at the preset's width. So a full-HD finest scale is counted in seconds
on a laptop.

aten ops are every operator call that reaches the dispatcher during the iteration (views and
other metadata-only ops are counted separately as ``view_ops``, since they launch no GPU
kernel); ``host_syncs`` counts ``_local_scalar_dense`` (``.item()``/``float()``), each of which
stalls the host on the device. Both do not depend on c; they are counted at c = d.

The projection per iteration is max(FLOPs / R, kernel_ops x h): with no host syncs the host
queues kernels ahead of the device, so an iteration takes the longer of the device's work and
the host's launches. R (sustained FLOP/s) and h (host seconds per launched op) are
arguments; their defaults and the reasons for them are in ``--help`` and docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils.flop_counter import flop_registry  # noqa: E402

from hpgen import engine as eng  # noqa: E402
from hpgen.config import load_config  # noqa: E402
from hpgen.data import plan  # noqa: E402
from hpgen.methods import get_method  # noqa: E402
from hpgen.methods.base import ScaleState  # noqa: E402
from hpgen.trainer import run_iteration  # noqa: E402

# Sustained device rate: what one H100 ran on these convolution shapes (docs/BENCHMARKS.md,
# profile of the old finest scale 13x256x602, 88.3 TFLOP/iter, which this census reproduces:
# 88.27). In fp32 (TF32), 2.48 s/iter of which 1.26 s went to the penalty's double-backward
# convolutions (about 4.6% of the FLOPs); the other ~84.2 TFLOP ran in 1.22 s: 69 TFLOP/s. In
# bf16, 3.84 s/iter of which 3.07 s in the generic kernel those convolutions fell back to:
# ~84.2 TFLOP in 0.77 s, 109 TFLOP/s. The explicit penalty leaves only convolutions of the kind
# that ran at those rates.
RATE_FP32 = 69e12
RATE_BF16 = 109e12
# Host cost per launched (non-view) op: the H100 VAE scales of the old preset took 16, 17, 15
# and 19 ms per iteration for under 1 ms of GPU work, while running 570, 790, 845 and 878
# kernel ops (this census on that code and preset; with view ops 855-1,326): 22 us per op on
# average. It holds DeepSpeed's and Python's per-iteration overheads too.
DEFAULT_HOST_S = 22e-6

VIEW_OPS = {"view", "_unsafe_view", "reshape", "_reshape_alias", "t", "transpose", "permute", "expand", "slice",
            "select", "unsqueeze", "squeeze", "alias", "detach", "as_strided", "unbind", "split", "split_with_sizes",
            "chunk", "narrow", "view_as", "expand_as", "flatten", "unflatten", "lift_fresh", "_to_copy_noop",
            "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "is_same_size", "sym_size",
            "sym_stride", "sym_numel", "sym_storage_offset", "stride", "size", "numel", "dim", "is_nonzero",
            "_has_compatible_shallow_copy_type", "set_", "resolve_conj", "resolve_neg", "conj", "_conj"}


# Convolutions whose result the census does not need: their FLOPs depend on shapes only, and
# no decision of the iteration depends on their values, so ``--shapes-only`` returns zeros of
# the right shape and strides (computed on the meta device) instead of running them. Counts
# are the same (tested); a 13x256x602 finest scale is counted in seconds instead of hours.
SHAPE_ONLY_OPS = {"convolution", "convolution_backward"}


def _zeros_like_result(func, args, kwargs):
    def meta(a):
        return a.to("meta") if isinstance(a, torch.Tensor) else a

    out = func(*[meta(a) for a in args], **{k: meta(v) for k, v in kwargs.items()})

    def real(o):
        if isinstance(o, torch.Tensor):
            return torch.zeros_strided(o.shape, o.stride(), dtype=o.dtype) if hasattr(torch, "zeros_strided") \
                else torch.empty_strided(o.shape, o.stride(), dtype=o.dtype).zero_()
        return o

    return tuple(real(o) for o in out) if isinstance(out, tuple) else real(out)


class Census(TorchDispatchMode):
    """FLOPs, operator calls and host syncs of everything run inside it."""

    def __init__(self, shapes_only: bool = False):
        super().__init__()
        self.flops, self.ops, self.views, self.syncs = 0, 0, 0, 0
        self.by_op: dict[str, int] = {}
        self.shapes_only = shapes_only

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if self.shapes_only and name in SHAPE_ONLY_OPS:
            out = _zeros_like_result(func, args, kwargs)
        else:
            out = func(*args, **kwargs)
        if name in VIEW_OPS:
            self.views += 1
        else:
            self.ops += 1
            self.by_op[name] = self.by_op.get(name, 0) + 1
        if name == "_local_scalar_dense" and not _from_optimizer():
            self.syncs += 1
        count = flop_registry.get(func.overloadpacket)
        if count is not None:
            self.flops += count(*args, **kwargs, out_val=out)
        return out


def _from_optimizer() -> bool:
    """A scalar read inside torch.optim reads a step counter that stays on the host on a GPU
    too (non-fused Adam): no device sync."""
    import traceback

    return any("torch/optim/" in f.filename for f in traceback.extract_stack())


def synthetic_reals(shapes, clips: int) -> list[torch.Tensor]:
    from bench_train import synthetic_reals as sr

    return sr(shapes, clips, "cpu")


def count_scale(cfg, shapes, n: int, step: int, shapes_only: bool = True) -> Census:
    """One iteration of scale n (the ``step``-th; iteration 0 runs untimed before it)."""
    eng.seed_everything(0)
    method = get_method(cfg.train.method)(cfg)
    model, critic = method.build_model(), None
    for k in range(n + 1):
        critic = method.grow(model, critic, k)
    groups = method.param_groups(model, critic, n)
    clip = {"grad_clip": cfg.train.grad_clip} if hasattr(cfg.train, "grad_clip") else {}  # older code: none
    engines = {name: eng.build_engine(critic if name == "d" else model, g, precision="fp32", zero_stage=0,
                                      betas=cfg.train.betas, **clip) for name, g in groups.items()}
    st = ScaleState(n, list(shapes), synthetic_reals(shapes, 1))
    with Census(shapes_only):  # set-up and a warm-up step of the other kind, not counted
        method.begin_scale(model, st)
        st.step = 0 if step else 1
        run_iteration(method, model, critic, st, engines)
    st.step = step
    with Census(shapes_only) as c:
        run_iteration(method, model, critic, st, engines)
    return c


def widths(cfg) -> tuple[int, int]:
    """(d, r): count at channels d, 2d, 3d with latent channels r * channels exactly."""
    ch, lat = cfg.model.channels, cfg.model.latent_channels
    g = math.gcd(ch, lat)
    return ch // g, lat // g  # channels = d * m, latent = r * m for m = g


def quadratic_at(xs, ys, x) -> int:
    """The degree-2 polynomial through (xs, ys), at x (exact, in fractions)."""
    total = Fraction(0)
    for i, (xi, yi) in enumerate(zip(xs, ys)):
        term = Fraction(yi)
        for j, xj in enumerate(xs):
            if j != i:
                term *= Fraction(x - xj, xi - xj)
        total += term
    assert total.denominator == 1, total
    return int(total)


def census(cfg_path: str, overrides: list[str], scales=None, rate=None, host_s=DEFAULT_HOST_S,
           input_hw: tuple[int, int] | None = None, shapes_only: bool = True) -> dict:
    cfg = load_config(cfg_path, overrides)
    rate = rate or (RATE_BF16 if cfg.dist.precision == "bf16" else RATE_FP32)
    if input_hw is None:  # the preset's own clip (only its size is read)
        _, shapes, _ = plan(cfg)
    else:
        from hpgen.pyramid import shapes_from_config

        shapes = shapes_from_config(cfg.pyramid, input_hw)
    d, r = widths(cfg)
    m = cfg.model.channels // d
    steps = [0] if getattr(cfg.train, "gp_every", 1) == 1 or cfg.train.method != "hpvaegan" else [0, 1]
    rows = []
    for n in (scales if scales is not None else range(len(shapes))):
        t0 = time.time()
        row = {"scale": n, "thw": list(shapes[n].thw), "voxels": shapes[n].voxels, "iters": cfg.train.iters(n)}
        flops_by_step = []
        for step in steps:
            counts = []
            for k in (1, 2, 3):
                c = load_config(cfg_path, [*overrides, f"model.channels={k * d}", f"model.latent_channels={k * r}"])
                cen = count_scale(c, shapes, n, step, shapes_only)
                counts.append(cen.flops)
                if k == 1 and step == 0:
                    row.update(aten_ops=cen.ops, view_ops=cen.views, host_syncs=cen.syncs,
                               top_ops=dict(sorted(cen.by_op.items(), key=lambda kv: -kv[1])[:12]))
            flops_by_step.append(quadratic_at([1, 2, 3], counts, m))
        gan = cfg.train.method != "hpvaegan" or n >= cfg.train.vae_scales
        if len(steps) == 2 and gan:
            k = cfg.train.gp_every  # with critic_steps c, a share 1/k of critic steps has the penalty
            with_gp, without = flops_by_step
            row["flops_with_gp"], row["flops_without_gp"] = with_gp, without
            row["flops"] = round(without + (with_gp - without) / k)
        else:
            row["flops"] = flops_by_step[0]
        row["device_s"] = row["flops"] / rate
        row["host_s"] = row["aten_ops"] * host_s
        row["projected_s_per_iter"] = max(row["device_s"], row["host_s"])
        row["count_seconds"] = time.time() - t0
        rows.append(row)
        print(f"scale {n} {shapes[n].thw}: {row['flops'] / 1e12:.3f} TFLOP, {row['aten_ops']} ops, "
              f"{row['host_syncs']} syncs, {row['projected_s_per_iter'] * 1e3:.1f} ms/iter projected "
              f"({row['count_seconds']:.0f} s to count)", flush=True)
    hours = sum(rw["projected_s_per_iter"] * rw["iters"] for rw in rows) / 3600
    return {"config": cfg_path, "overrides": overrides, "input_hw": input_hw, "shapes_only": shapes_only, "channels": cfg.model.channels,
            "critic_steps": cfg.train.critic_steps, "generator_steps": cfg.train.generator_steps,
            "gp_method": getattr(cfg.train, "gp_method", "autograd"), "gp_every": getattr(cfg.train, "gp_every", 1),
            "rate_flops_per_s": rate, "host_s_per_op": host_s, "scales": rows,
            "projected_gpu_hours": hours if scales is None else None,
            "total_flops": sum(rw["flops"] * rw["iters"] for rw in rows)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs/hpvaegan/paper.toml"))
    ap.add_argument("--name", default=None, help="label stored in the JSON")
    ap.add_argument("--scales", default="all", help="all | finest | comma-separated indices")
    ap.add_argument("--rate", type=float, default=None,
                    help="sustained device FLOP/s for the projection (default: the preset's precision: 69e12 fp32, "
                         "109e12 bf16, one H100 on these convolutions; see RATE_FP32 in the source)")
    ap.add_argument("--host-us", type=float, default=DEFAULT_HOST_S * 1e6,
                    help="host microseconds per launched op (default 22: H100 VAE scales, 15-19 ms per iteration "
                         "of 570-878 ops)")
    ap.add_argument("--input-hw", default=None, help="HxW: a synthetic input of this size instead of the preset's clip")
    ap.add_argument("--compute", action="store_true",
                    help="run the convolutions too (default: zeros of their shape, the same counts, far faster)")
    ap.add_argument("--out", default=None)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    eng.setup_distributed("cpu")
    cfg = load_config(args.config, args.overrides)
    num = cfg.pyramid.num_scales
    scales = None if args.scales == "all" else [num - 1] if args.scales == "finest" else \
        [int(s) for s in args.scales.split(",")]
    hw = tuple(int(v) for v in args.input_hw.split("x")) if args.input_hw else None
    report = census(args.config, args.overrides, scales, args.rate, args.host_us * 1e-6, hw, not args.compute)
    report["name"] = args.name
    report["torch"] = torch.__version__
    out = Path(args.out or REPO / "bench" / "results" / f"census_{args.name or Path(args.config).stem}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    if report["projected_gpu_hours"] is not None:
        print(f"projected: {report['projected_gpu_hours']:.2f} GPU hours at "
              f"{report['rate_flops_per_s'] / 1e12:g} TFLOP/s and {args.host_us:g} us/op")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
