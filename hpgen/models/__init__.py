"""Pure nn.Modules. Nothing here knows about DeepSpeed, ranks, precision or checkpointing:
hpgen/engine/ applies those from outside."""
from .blocks import ConvBlock, conv_stack
from .critic import PatchCritic
from .encoder import PatchEncoder
from .generator import ScaleGenerator
from .hpvaegan import HPVAEGAN

__all__ = ["ConvBlock", "conv_stack", "PatchCritic", "PatchEncoder", "ScaleGenerator", "HPVAEGAN"]
