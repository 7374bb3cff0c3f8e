"""What the trainer and the sampler ask of a method (HP-VAE-GAN, SinGAN-GIF, baselines).

A method is a configuration of shared pieces, not a training loop. It must provide:

    name                                   registry key (``train.method``)
    dims                                   3 (video) or 2 (image mode)
    build_model() -> nn.Module             the generator stack (pure module, no scales yet)
    grow(model, critic, n) -> critic|None  add scale n's networks; return the critic(s) to train
    param_groups(model, critic, n)         {"g": [...], "d": [...]} Adam groups; also sets
                                           requires_grad and train/eval modes for scale n
    begin_scale(model, state)              per-scale set-up (noise amplitudes, cached inputs)
    begin_iteration(model, state)          per-iteration set-up (random prefixes)
    phases(model, critic, state)           [(engine name, closure -> (loss, stats)), ...]
    model_args() -> dict                   constructor arguments saved in generator.pt
    model_from_args(args, num_scales)      (classmethod) rebuild the stack for sampling
    sample(model, shapes, batch, generator, stop=None) -> (B, C, T, H, W)
    data_parallel                          True if a D-rank run equals a one-rank run on the same
                                           clips (global-batch noise via ScaleState.randn, sums
                                           scaled by ScaleState.sum_scale); the trainer refuses
                                           multi-rank runs of methods without it
    replicated_clips (optional)            True: every rank holds every clip and the method picks
                                           each step's clips for the global batch (SinGAN-GIF);
                                           otherwise the clips are split over the replicas
    check_parallel(num_clips, D, P)        (optional) one-line HpgenError for a run that cannot
                                           be split this way, before anything is written
    owners(model, critic, n)               [(module, scale)]: the networks scale n updates, each
                                           with the scale whose stage runs it (pipelined runs)

The trainer runs each phase as: loss, stats[, after_backward] = closure();
engines[name].backward(loss); after_backward(); engines[name].step(). One scalar, one
backward, one step per engine and phase. In a pipelined run every rank runs every phase
(the same collectives in the same order); a closure returns loss None on a stage with no
part in it, and ``after_backward`` passes gradients down the pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..pyramid import ScaleShape


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass
class ScaleState:
    """What one scale's phases read: the pyramid, this replica's per-scale reals
    (B, C, T, H, W) and tensors cached for the scale or the iteration.

    Parallelism is explicit here so that a P x D run equals a one-rank run on the same
    clips: ``randn`` draws noise for the *global* batch with the RNG every rank shares and
    keeps this replica's slice; gradients are averaged over all P x D ranks (zeros on ranks
    that did not use a parameter), so a per-replica sum over clips is scaled by
    ``sum_scale`` (= P x D) and a per-replica mean by ``mean_scale`` (= P); ``all_mean``
    averages a statistic over replicas (every rank calls it; ranks that do not hold the
    value pass zeros). ``pipe`` runs scale chains across pipeline stages.
    """
    n: int
    shapes: list[ScaleShape]
    reals: list[torch.Tensor]
    cache: dict = field(default_factory=dict)
    dp_rank: int = 0
    dp_size: int = 1
    stages: int = 1
    all_mean: Callable[[torch.Tensor], torch.Tensor] = _identity
    pipe: object = None
    step: int = 0  # the iteration of scale n being run (the trainer sets it; lazy penalties count by it)

    def __post_init__(self):
        if self.pipe is None:  # a one-stage pipeline: every scale local, no communication
            from ..engine.pipeline import Pipeline
            from ..placement import Layout

            self.pipe = Pipeline(Layout(1, 1, 0, (0,), len(self.shapes)), self.reals[0].device)

    @property
    def sum_scale(self) -> float:
        return float(self.dp_size * self.stages)

    @property
    def mean_scale(self) -> float:
        return float(self.stages)

    @property
    def batch(self) -> int:
        return self.reals[0].shape[0]

    def micro(self, t: torch.Tensor, m: int) -> torch.Tensor:
        """Micro-batch m of a per-replica batch tensor."""
        sizes = self.pipe.micro_sizes(t.shape[0])
        start = sum(sizes[:m])
        return t[start:start + sizes[m]]

    def draw(self, sample: Callable[[int], torch.Tensor], local_batch: int) -> torch.Tensor:
        """``sample(global batch)`` drawn for the global batch (the same call on every rank,
        so the shared RNG stays in step), this replica's slice kept."""
        full = sample(local_batch * self.dp_size)
        return full[self.dp_rank * local_batch:(self.dp_rank + 1) * local_batch]

    def randn(self, local_shape, device=None, dtype=None) -> torch.Tensor:
        b = local_shape[0]
        device = device if device is not None else self.reals[0].device
        full = torch.randn((b * self.dp_size, *local_shape[1:]), device=device)
        out = full[self.dp_rank * b:(self.dp_rank + 1) * b]
        return out.to(dtype) if dtype is not None else out

    def rand(self, local_shape, device=None) -> torch.Tensor:
        b = local_shape[0]
        device = device if device is not None else self.reals[0].device
        full = torch.rand((b * self.dp_size, *local_shape[1:]), device=device)
        return full[self.dp_rank * b:(self.dp_rank + 1) * b]
