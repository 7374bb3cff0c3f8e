"""C3D (Tran et al. 2015), the backbone HP-VAE-GAN's SVFID names, from a user file.

No redistributable C3D weights exist on PyPI, so the user supplies them: a
PyTorch state dict in the layout of the widely used c3d-pytorch port
(keys ``conv1.weight`` ... ``conv5b.bias``, optionally ``fc6``-``fc8``, which are
ignored), saved with ``torch.save`` (``.pt``/``.pth``/``.pickle``). It is read
with ``torch.load(weights_only=True)`` (no code execution) and its key set and
shapes are checked; give ``sha256`` to pin the exact file.

Input convention of that port: RGB frames with values in [0, 255] (no mean
subtraction), 112x112 crops at training time; we feed the whole frame resized
so that its shorter side is 112 (see svfid.py).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import HpgenError
from .weights import verify_file

# name -> (in, out); pools follow conv1, conv2, conv3b, conv4b, conv5b
CONVS = {"conv1": (3, 64), "conv2": (64, 128), "conv3a": (128, 256), "conv3b": (256, 256),
         "conv4a": (256, 512), "conv4b": (512, 512), "conv5a": (512, 512), "conv5b": (512, 512)}
POOL_AFTER = {"conv1": (1, 2, 2), "conv2": (2, 2, 2), "conv3b": (2, 2, 2), "conv4b": (2, 2, 2)}
LAYERS = tuple(CONVS)
HINT = ("pass a C3D state dict in the c3d-pytorch layout (conv1.weight ... conv5b.bias) "
        "with --c3d-weights")


class C3D(nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleDict({k: nn.Conv3d(i, o, 3, padding=1) for k, (i, o) in CONVS.items()})
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor, layer: str = "conv3b") -> torch.Tensor:
        """(B, 3, T, H, W) RGB in [0, 255] -> ReLU output of conv ``layer`` (B, C, t, h, w)."""
        if layer not in CONVS:
            raise ValueError(f"unknown C3D layer {layer!r}; one of {LAYERS}")
        for name, conv in self.convs.items():
            x = F.relu(conv(x))
            if name == layer:
                return x
            if name in POOL_AFTER:
                k = POOL_AFTER[name]
                # ceil_mode keeps odd frame counts (13 frames) from dropping the last frame
                x = F.max_pool3d(x, k, k, ceil_mode=True)
        raise AssertionError("unreachable")


def load_c3d(path, sha256: str | None = None) -> C3D:
    p = verify_file(path, sha256, "C3D", HINT)
    try:
        sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        raise HpgenError(f"C3D weights file {p} cannot be read ({str(e).splitlines()[0][:120]}); {HINT}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise HpgenError(f"C3D weights file {p} is not a state dict; {HINT}")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    net = C3D()
    want = net.state_dict()  # keys "convs.<layer>.weight"; the file has "<layer>.weight"
    got = {}
    for key, ref in want.items():
        src = key.removeprefix("convs.")
        if src not in sd:
            raise HpgenError(f"C3D weights file {p} lacks '{src}'; {HINT}")
        if tuple(sd[src].shape) != tuple(ref.shape):
            raise HpgenError(f"C3D weights file {p}: '{src}' has shape {tuple(sd[src].shape)}, "
                             f"expected {tuple(ref.shape)}; {HINT}")
        got[key] = sd[src].float()
    net.load_state_dict(got)
    return net.eval()
