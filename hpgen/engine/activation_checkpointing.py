"""Activation checkpointing of conv blocks, switchable per scale, with exact replay
(BatchNorm, spectral-norm and parametrisation-cache state) under the gradient penalty's
double backward."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils import parametrize


class _ReplayState:
    """Makes a checkpointed block's recomputation replay its forward exactly.

    Created when the block's forward starts. Recomputation (re-entered by a double
    backward, as in the gradient penalty, or run by the phase's backward after the forward's
    context has been left) must neither see nor change state that moved since:

    - BatchNorm gets momentum 0 (running statistics unchanged, batch counter restored);
    - spectral-norm vectors u, v are set back to their values at this forward, so the power
      iteration and sigma replay bit for bit; the current vectors are put back afterwards;
    - the parametrisation cache (``torch.nn.utils.parametrize.cached()``) is put back as
      this forward saw it. A critic phase computes the spectral-norm weights once and shares
      them between D(real), D(fake) and the penalty: the block's first call computes a
      weight and caches it, every later call reads that tensor and runs no spectral-norm op.
      The backward runs after the phase has left ``cached()``, so without this a later
      call's recomputation would run the parametrisation afresh (a power iteration, sigma
      and a division the forward never ran: a different sequence of saved tensors, which
      torch.utils.checkpoint rejects with CheckpointError, and a weight from a different
      u, v). The recomputation gets a private cache holding exactly the entries of this
      block's parametrised tensors that existed when the forward started (the very tensors
      it used), and caching on or off as it was then; a weight the forward computed itself
      is computed again, from the replayed u, v, into that private cache and dropped."""

    def __init__(self, block: nn.Module):
        from torch.nn.utils.parametrizations import _SpectralNorm

        self.bns = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.sns = [m for m in block.modules() if isinstance(m, _SpectralNorm)]
        self.at_forward = [(sn._u.clone(), sn._v.clone()) for sn in self.sns]
        self.cache_enabled = bool(parametrize._cache_enabled)
        keys = [(id(m), name) for m in block.modules() if parametrize.is_parametrized(m)
                for name in m.parametrizations]
        self.cache = {k: parametrize._cache[k] for k in keys if k in parametrize._cache} \
            if self.cache_enabled else {}
        self.saved: list = []

    def __enter__(self):
        self.saved.append(([(bn.momentum, None if bn.num_batches_tracked is None else bn.num_batches_tracked.clone())
                            for bn in self.bns], [(sn._u.clone(), sn._v.clone()) for sn in self.sns],
                           (parametrize._cache_enabled, parametrize._cache)))
        for bn in self.bns:
            bn.momentum = 0.0
        with torch.no_grad():
            for sn, (u, v) in zip(self.sns, self.at_forward):
                sn._u.copy_(u)
                sn._v.copy_(v)
        parametrize._cache_enabled = int(self.cache_enabled)
        parametrize._cache = dict(self.cache)
        return self

    def __exit__(self, *exc):
        bn_state, sn_state, (cache_enabled, cache) = self.saved.pop()
        parametrize._cache_enabled, parametrize._cache = cache_enabled, cache
        for bn, (mom, nbt) in zip(self.bns, bn_state):
            bn.momentum = mom
            if nbt is not None:
                bn.num_batches_tracked.copy_(nbt)
        with torch.no_grad():
            for sn, (u, v) in zip(self.sns, sn_state):
                sn._u.copy_(u)
                sn._v.copy_(v)
        return False


def _recompute_context(block: nn.Module):
    import contextlib

    return contextlib.nullcontext(), _ReplayState(block)


def _checkpointed_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    from torch.utils.checkpoint import checkpoint

    inner = type(block).forward
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in block.parameters())):
        return checkpoint(inner, block, x, use_reentrant=False, context_fn=lambda: _recompute_context(block))
    return inner(block, x)


def set_activation_checkpointing(module: nn.Module, enabled: bool) -> None:
    """Recompute every conv block of ``module`` (ConvBlock, and the separable 3D blocks of
    SinGAN-GIF's coarse generators) in the backward pass instead of storing its activations
    (or undo that). The forward is patched per instance, so parameter names, state dicts and
    checkpoints are unchanged."""
    import functools

    from ..models.blocks import ConvBlock
    from ..models.separable import SeparableBlock

    for m in module.modules():
        if isinstance(m, (ConvBlock, SeparableBlock)):
            if enabled:
                m.forward = functools.partial(_checkpointed_forward, m)
            elif "forward" in m.__dict__:
                del m.forward
