"""Pipeline parallelism across scales: the chain G^0 -> G^1 -> ... -> G^n split over P stages.

A method describes one pass as a chain of per-scale steps ``step(k, x, m) -> (x, loss)``
(k: scale, x: the previous scale's output or None at k=0, m: micro-batch). ``chain``
runs the steps this rank's stage owns, for every micro-batch in turn, receiving x from
the previous stage and sending its output to the next, so stage p works on micro-batch
m+1 while stage p+1 works on m (the forward fills the pipeline, GPipe style).

For a pass that trains through the stages (the patch-VAE phase, where E and G^0 learn
from the reconstruction at scale n), each stage backpropagates once, after its forward:
``surrogate`` receives d(loss)/d(output) from the next stage for every micro-batch and
returns local losses + <output, gradient>, whose gradient is this stage's share of the
global one; ``send_input_grads`` passes d/d(input) on to the previous stage. DeepSpeed's
all-reduce inside backward is disabled on pipelined engines (``defer_allreduce``),
because it is a collective over every rank and would deadlock against the point-to-point
gradients still travelling down the pipeline; the trainer reduces before each step.

Parameters are replicated on every rank: they are a few MB (a 3D conv stack of 64
channels), against GBs of activations at the fine scales. Work and activations are what
the pipeline partitions. Gradients are averaged over all P x D ranks, with zeros where a
rank did not touch a parameter, and the losses are scaled to match (ScaleState), so every
rank applies the same Adam update and holds the same weights: checkpoints, export and
resume need nothing pipeline-specific. Only buffers that a forward updates (BatchNorm
statistics, spectral-norm vectors) are copied from the stage that owns them
(``sync_buffers``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn as nn

from ..placement import Layout
from .distributed import multi_rank

Step = Callable[[int, "torch.Tensor | None", int], "tuple[torch.Tensor, torch.Tensor | None]"]


@dataclass
class ChainPass:
    """What one stage kept from a chain pass (per micro-batch)."""
    inputs: list = field(default_factory=list)    # received activations (leaves), or None at stage 0
    outputs: list = field(default_factory=list)   # this stage's last output
    losses: list = field(default_factory=list)    # local loss terms, or None
    prev: int | None = None                       # rank we received from
    next: int | None = None                       # rank we sent to
    active: bool = False

    def output(self) -> torch.Tensor | None:
        """The chain's result (on the stage owning its last scale): micro-batches concatenated."""
        if not self.active or self.next is not None:
            return None
        return torch.cat(self.outputs) if len(self.outputs) > 1 else self.outputs[0]


class Pipeline:
    def __init__(self, layout: Layout, device: torch.device, micro_batches: int = 1):
        self.layout, self.device, self.micro_batches = layout, device, micro_batches
        self.dp_group = None
        if multi_rank() and layout.stages > 1 and layout.replicas > 1:
            # new_group is collective: every rank creates every stage's group, in order.
            for p in range(layout.stages):
                ranks = [layout.rank_of(p, d) for d in range(layout.replicas)]
                g = dist.new_group(ranks)
                if p == layout.stage:
                    self.dp_group = g

    @property
    def pipelined(self) -> bool:
        return self.layout.stages > 1

    def owns(self, k: int) -> bool:
        return self.layout.owns(k)

    def micro_sizes(self, batch: int) -> list[int]:
        m = min(self.micro_batches, batch)
        return [len(c) for c in torch.arange(batch).tensor_split(m)]

    # -- forward -----------------------------------------------------------------
    def chain(self, step: Step, last: int, batch: int, shape_of: Callable[[int, int], tuple], dtype: torch.dtype,
              grad: bool = False) -> ChainPass:
        """Run scales 0..``last`` of the chain for a local batch of ``batch`` clips, split into
        micro-batches. ``shape_of(k, b)`` is the shape of step k's output for b clips (the
        receiver allocates it)."""
        L = self.layout
        mine = [k for k in L.scales() if k <= last]
        res = ChainPass()
        if not mine:
            return res  # this stage holds only finer scales: nothing to do in this pass
        res.active = True
        res.prev = L.rank_of(L.stage - 1) if mine[0] > 0 else None
        res.next = L.rank_of(L.stage + 1) if L.owner(last) > L.stage else None
        for m, b in enumerate(self.micro_sizes(batch)):
            x = None
            if res.prev is not None:
                x = torch.empty(shape_of(mine[0] - 1, b), dtype=dtype, device=self.device)
                dist.recv(x, src=res.prev)
                x.requires_grad_(grad)
            res.inputs.append(x)
            loss = None
            with torch.set_grad_enabled(grad):
                for k in mine:
                    x, term = step(k, x, m)
                    if term is not None:
                        loss = term if loss is None else loss + term
            if res.next is not None:
                dist.send(x.detach().contiguous(), dst=res.next)
            res.outputs.append(x)
            res.losses.append(loss)
        return res

    # -- backward ----------------------------------------------------------------
    def surrogate(self, res: ChainPass) -> torch.Tensor | None:
        """Local losses + <output, d(loss)/d(output) received from the next stage>."""
        terms = [t for t in res.losses if t is not None]
        if res.active and res.next is not None:
            for out in res.outputs:
                g = torch.empty_like(out, memory_format=torch.contiguous_format)
                dist.recv(g, src=res.next)
                terms.append((out * g).sum())
        if not terms:
            return None
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        return total

    def send_input_grads(self, res: ChainPass) -> None:
        if not (res.active and res.prev is not None):
            return
        for x in res.inputs:
            g = x.grad if x.grad is not None else torch.zeros_like(x)
            dist.send(g.contiguous(), dst=res.prev)


# -- gradients, buffers, statistics --------------------------------------------------

def cover_trainable(loss: torch.Tensor | None, engine) -> torch.Tensor:
    """``loss`` + 0 x every trainable parameter, so every rank produces a gradient tensor for
    every parameter (zeros where its stage did not use it) and the all-reduce lines up."""
    params = [p for p in engine.module.parameters() if p.requires_grad]
    zero = torch.stack([p.sum() for p in params]).sum() * 0.0
    return zero if loss is None else loss + zero.to(loss.dtype)


def defer_allreduce(engine) -> None:
    """Reduce gradients in ``reduce_gradients`` (before step), not inside ``backward``."""
    engine.enable_backward_allreduce = False


def reduce_gradients(engine) -> None:
    engine.allreduce_gradients()


def world_sum(t: torch.Tensor) -> torch.Tensor:
    if not multi_rank():
        return t
    out = t.detach().clone()
    dist.all_reduce(out)
    return out


def sync_buffers(module: nn.Module, src: int) -> None:
    """Copy every buffer of ``module`` from rank ``src`` (its owner) to all ranks."""
    if not multi_rank():
        return
    for b in module.buffers():
        dist.broadcast(b.data, src=src)


def gather_stats(stats: dict[str, float]) -> dict[str, float]:
    """Average logged scalars over the ranks that report them (stages report different keys)."""
    if not multi_rank():
        return stats
    every: list = [None] * dist.get_world_size()
    dist.all_gather_object(every, stats)
    out: dict[str, list[float]] = {}
    for d in every:
        for k, v in d.items():
            out.setdefault(k, []).append(v)
    return {k: sum(v) / len(v) for k, v in sorted(out.items())}
