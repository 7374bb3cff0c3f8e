"""Device and multi-process sharing for everything that is not training.

Sampling, the patch-NN generator, applications and evaluation all go through
``InferenceContext``. It wraps ``accelerate.Accelerator`` so that the same
command runs on a laptop CPU, one GPU, or several GPUs under
``accelerate launch`` (each process takes its share of the sample indices).
Training never uses this: DeepSpeed is the one training engine (hpgen/engine/).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import HpgenError


def resolve_device(name: str = "auto") -> str:
    name = (name or "auto").lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HpgenError("--device cuda was asked for but no CUDA GPU is available (use --device cpu)")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise HpgenError(f"unknown device '{name}' (use auto, cpu or cuda)")
    return name


@dataclass
class InferenceContext:
    device: torch.device
    process_index: int = 0
    num_processes: int = 1
    _accelerator: object = None

    @classmethod
    def create(cls, device: str = "auto") -> "InferenceContext":
        dev = resolve_device(device)
        from accelerate import Accelerator

        acc = Accelerator(cpu=(dev == "cpu"))
        return cls(acc.device, acc.process_index, acc.num_processes, acc)

    def share(self, items: Sequence) -> list:
        """This process's share of ``items`` (round-robin, so shares differ by at most one)."""
        return list(items)[self.process_index::self.num_processes]

    @property
    def is_main(self) -> bool:
        return self.process_index == 0

    def wait(self) -> None:
        if self._accelerator is not None and self.num_processes > 1:
            self._accelerator.wait_for_everyone()
