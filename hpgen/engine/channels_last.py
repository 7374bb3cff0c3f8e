"""Memory layout: channels_last_3d activations for GPU tensor cores."""
from __future__ import annotations

import torch
import torch.nn as nn


def _to_channels_last(module: nn.Module, args):
    x = args[0]
    if x.dim() == 5 and not x.is_contiguous(memory_format=torch.channels_last_3d):
        return (x.contiguous(memory_format=torch.channels_last_3d), *args[1:])
    return None


def set_channels_last(module: nn.Module, enabled: bool) -> None:
    """Feed every 3D convolution of ``module`` N,T,H,W,C (channels_last_3d) activations, the
    layout GPU tensor cores use natively, instead of letting cuDNN transpose NCDHW around
    each bf16 convolution. Done with forward pre-hooks on the convolutions, because DeepSpeed's
    bf16 optimizer re-flattens the weights into contiguous buffers (a weight-side format would
    not survive), and the models stay layout-agnostic."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            # Found by identity rather than by handle: a new scale's generator is a deep copy,
            # and a copied handle would point at the copied-from hook table.
            for key in [k for k, fn in m._forward_pre_hooks.items() if fn is _to_channels_last]:
                del m._forward_pre_hooks[key]
            if enabled:
                m.register_forward_pre_hook(_to_channels_last)
