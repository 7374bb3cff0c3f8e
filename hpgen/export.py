"""The single-file generator that ``hpgen sample`` needs: constructor arguments, pyramid,
config and fp32 weights, loadable with no DeepSpeed and no process group (nanoGPT's lesson:
a checkpoint that carries its own constructor arguments needs nothing else)."""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch

from .errors import HpgenError
from .pyramid import ScaleShape

FORMAT = "hpgen-generator/1"


def export_generator(path: Path, *, method: str, model: torch.nn.Module, model_args: dict,
                     shapes: list[ScaleShape], config: dict, fps: float) -> Path:
    state = {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu()
             for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "method": method, "model_args": model_args,
               "num_scales": len(shapes), "shapes": [asdict(s) for s in shapes],
               "config": config, "fps": fps, "state_dict": state}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_generator(path: Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "generator.pt"
    if not path.is_file():
        raise HpgenError(f"no trained generator at {path} (has the run finished? `hpgen train` writes it last)")
    try:
        # weights_only: tensors and plain data only, so a generator.pt from someone else can
        # never run code when it is sampled (the file holds nothing else: see export_generator).
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HpgenError(f"cannot read generator {path} (only tensors and plain data are loaded): {first}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise HpgenError(f"{path} is not an hpgen generator file")
    payload["shapes"] = [ScaleShape(**s) for s in payload["shapes"]]
    return payload
