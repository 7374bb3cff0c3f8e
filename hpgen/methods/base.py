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

The trainer runs each phase as: loss, stats = closure(); engines[name].backward(loss);
engines[name].step(). One scalar, one backward, one step per engine and phase.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..pyramid import ScaleShape


@dataclass
class ScaleState:
    """What one scale's phases read: the pyramid, the per-scale reals (B, C, T, H, W) and
    tensors cached for the scale or the iteration."""
    n: int
    shapes: list[ScaleShape]
    reals: list[torch.Tensor]
    cache: dict = field(default_factory=dict)
