"""Shared fixtures and guards. Every clip a test reads ships with the repository
(``hpgen/assets/`` and ``tests/data/``), never ``../shared``, and a test that skips for
any reason but a missing metric-weights package or GPU fails instead, so a clean clone
runs the whole suite (tests/data/README.md)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"
BUNDLED = REPO / "hpgen" / "assets" / "bikes.mp4"          # traffic behind a fence, 640x272, 50 frames
BALLOONS = REPO / "hpgen" / "assets" / "balloons.mp4"      # hot-air balloons, 256x144, 13 frames
TREE = TEST_DATA / "tree_leaves_f00-15.mp4"                # leaves in wind, 320x240, 16 frames

#: the only reasons a test may skip: what a clean clone may genuinely lack
ALLOWED_SKIPS = ("not installed", "CUDA", "GPU")

os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skip for any other reason than ALLOWED_SKIPS is a failure (e.g. a test that looks
    for data outside the repository)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)
        if not any(a in reason for a in ALLOWED_SKIPS):
            report.outcome = "failed"
            report.longrepr = f"skipped for a reason a clean clone must not have: {reason}"


@pytest.fixture
def bikes() -> Path:
    return BUNDLED


@pytest.fixture
def tree() -> Path:
    return TREE


@pytest.fixture(scope="session")
def balloons_frames(tmp_path_factory) -> Path:
    """The balloons clip as a folder of numbered frames 1.png .. 13.png."""
    from PIL import Image

    from hpgen.video import read_video

    folder = tmp_path_factory.mktemp("balloons_frames")
    for i, f in enumerate(read_video(BALLOONS), start=1):
        Image.fromarray(f).save(folder / f"{i}.png")
    return folder


def untrained_run(run_dir: Path, *overrides: str, config: str = "configs/hpvaegan/tiny.toml") -> Path:
    """A run directory holding only a generator.pt of untrained networks (4 channels) with
    the pyramid of ``config`` on its bundled clip: for testing sampling's arguments and
    outputs in a second instead of training."""
    from hpgen.config import load_config, to_dict
    from hpgen.data import plan
    from hpgen.export import export_generator
    from hpgen.methods import get_method

    cfg = load_config(REPO / config, ["model.channels=4", "model.latent_channels=4", *overrides])
    source, shapes, _ = plan(cfg)
    method = get_method(cfg.train.method)(cfg)
    torch.manual_seed(0)
    model = method.model_from_args(method.model_args(), len(shapes))
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    export_generator(Path(run_dir) / "generator.pt", method=method.name, model=model,
                     model_args=method.model_args(), shapes=shapes, config=to_dict(cfg), fps=source.fps)
    return Path(run_dir)


DIST_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def clean_env(**extra) -> dict:
    """os.environ without the process-group variables an in-process test may have set, so a
    subprocess starts its own group instead of joining (or colliding with) ours."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env.update(extra)
    return env


def free_port() -> int:
    """A free TCP port on localhost, for a launcher's --master_port."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (a launcher's workers), from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def run_hpgen(*args: str, cwd: Path = REPO, timeout: int = 900, env: dict | None = None,
              check: bool = False) -> subprocess.CompletedProcess:
    """Run the real command line in a subprocess (the way a user does)."""
    e = clean_env(**(env or {}))
    e.setdefault("PYTHONUNBUFFERED", "1")
    proc = subprocess.run([sys.executable, "-m", "hpgen", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=e)
    if check and proc.returncode != 0:
        raise AssertionError(f"hpgen {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def nearest_patch_distance(fake: torch.Tensor, real: torch.Tensor, ksize=(3, 7, 7)) -> float:
    """Mean squared distance from each patch of ``fake`` (C,T,H,W) to its nearest patch of
    ``real``, per element (exact search)."""
    from hpgen.patchnn.exact import exact_nn
    from hpgen.patchnn.patches import PatchGrid

    kt = min(ksize[0], fake.shape[1], real.shape[1])
    ks = (kt, *ksize[1:])
    _, d = exact_nn(PatchGrid(fake.float(), ks), PatchGrid(real.float(), ks))
    return float(d.mean()) / (fake.shape[0] * ks[0] * ks[1] * ks[2])
