"""Training methods as configurations of the shared pieces (models, losses, pyramid).

A method builds its networks, says which parameters train at scale n, and lists the
phases of one iteration as (engine name, loss closure) pairs; hpgen/trainer.py runs
them, so no method owns a training loop.
"""
from .hpvaegan import HPVAEGANMethod
from .singan import SinGANMethod

METHODS = {"hpvaegan": HPVAEGANMethod, "singan": SinGANMethod}


def get_method(name: str):
    from ..errors import HpgenError

    if name not in METHODS:
        raise HpgenError(f"unknown train.method '{name}' (known: {', '.join(sorted(METHODS))})")
    return METHODS[name]
