"""In-training metrics: a fixed set of samples scored at the end of every scale.

The trainer calls, at the end of scale ``n``::

    values = evaluate_samples(real_n, fixed_samples_n, metrics, device)
    log_metrics(run_dir, writer, scale=n, step=global_step, values=values)

``real_n`` is the scale's real video (C, T, H, W) and the fakes are generated
from noise fixed at the start of training, so successive scales and runs are
comparable. Values land in ``<run_dir>/metrics.jsonl`` (one JSON object per line,
appended, flushed) and, given a ``SummaryWriter``, as scalars ``metrics/<name>``.
Metrics whose weights are missing raise the usual one-line HpgenError; pass a
shorter ``metrics`` list (e.g. only diversity) to train without them.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Sequence

import torch

from .core import Evaluator


@torch.no_grad()
def evaluate_samples(real: torch.Tensor, fakes: Sequence[torch.Tensor], metrics: Sequence[str],
                     device: torch.device | str = "cpu", **evaluator_kwargs) -> dict[str, float]:
    """Mean of each pair metric over ``fakes`` and each set metric, as plain floats.

    Fakes of another size than ``real`` are resized to it. Set metrics with fewer
    than 2 fakes are left out (undefined)."""
    if real.dim() == 5:
        real = real[0]
    fakes = [f[0] if f.dim() == 5 else f for f in fakes]
    ev = Evaluator(real, list(metrics), device, **evaluator_kwargs)
    report = ev.evaluate(fakes)
    out = {}
    for name, s in report["summary"].items():
        v = s.get("mean", s.get("value"))
        if v is not None:
            out[name] = float(v)
    return out


def log_metrics(run_dir, writer, scale: int, step: int, values: dict[str, float]) -> dict:
    """Append ``{"scale", "step", "time", <values>}`` to ``run_dir/metrics.jsonl`` and, when
    ``writer`` is given, TensorBoard scalars ``metrics/<name>`` at ``step`` (the global step
    already orders scales, so one curve per metric spans the whole run)."""
    record = {"scale": int(scale), "step": int(step), "time": time.time()}
    record.update({k: (float(v) if v is not None and math.isfinite(float(v)) else None)
                   for k, v in values.items()})
    path = Path(run_dir) / "metrics.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
    if writer is not None:
        for k, v in values.items():
            if v is not None:
                writer.add_scalar(f"metrics/{k}", float(v), global_step=int(step))
        writer.flush()
    return record
