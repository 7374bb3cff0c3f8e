"""Applications of a trained generator stack (SinGAN-GIF Sec. 5, HP-VAE-GAN Fig. 8), as pure
functions of tensors. ``hpgen apply`` (hpgen/commands/apply.py) does the I/O.

All of them are one operation, SinGAN's injection: put a video into the pyramid at scale s
(resize it to that scale's shape) and run the generators s..N on it, with their noise. What
differs is the input and what is done with the output:

    lengthen / retarget   random samples with more frames or another frame size
    slomo                 random samples along a slowed-down latent path (trained for it)
    superres              repeated passes through the finest generator, each up-sampling by
                          at most the pyramid's scale factor, to exactly k times the size
    edit / harmonize      the edited (or pasted) video injected at s, optionally several passes
                          (output down-sampled to s again), blended into the input with a
                          feathered mask so that nothing changes away from the edit
    paint                 a painting injected at a coarse scale, no blending
    animate               a still image repeated in time, injected at scale 1 (the coarsest
                          takes noise only), so the finer generators add the motion

Works for SinGAN stacks and for HP-VAE-GAN stacks (whose patch-VAE scales take no noise).
Videos are (B, 3, T, H, W) in [-1, 1].
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .errors import HpgenError
from .pyramid import ScaleShape, rescale_shapes, resize


def _check_scale(model, start: int) -> None:
    if not 1 <= start < model.num_scales:
        raise HpgenError(f"injection scale must be between 1 and {model.num_scales - 1} "
                         "(scale 0 only takes noise)")


def inject(model, video: torch.Tensor, shapes: Sequence[ScaleShape], start: int, passes: int = 1,
           generator: torch.Generator | None = None, noise: bool = True) -> torch.Tensor:
    """Run scales start..N on ``video`` put at scale ``start`` (down-sampled to scale start-1,
    then up-sampled by G_start's step); each further pass re-injects the previous pass's output (SinGAN-GIF Sec. 5.4: one pass may not remove every artefact)."""
    _check_scale(model, start)
    if passes < 1:
        raise HpgenError("--passes must be >= 1")
    x = video
    for _ in range(passes):
        # As in SinGAN, the input is brought to scale s-1's size and G_s sees it up-sampled:
        # the blurred input G_s was trained on, not a sharper image it never saw.
        x = resize(x, shapes[start - 1].thw)
        for n in range(start, model.num_scales):
            z = model.make_noise(n, shapes[n], x.shape[0], generator) if noise else None
            x = model.refine(x, n, shapes[n], z)
    return x


# ---------------------------------------------------------------------------
# applications

def generate(method, model, shapes: Sequence[ScaleShape], frames: int | None = None, height: int | None = None,
             width: int | None = None, generator=None) -> torch.Tensor:
    """A random sample of another length (video lengthening, Sec. 5.3) or frame size (Sec. 5.1):
    the networks are fully convolutional, so only the noise maps change shape."""
    fin = shapes[-1]
    if height and not width:
        width = round(fin.width * height / fin.height)
    if width and not height:
        height = round(fin.height * width / fin.width)
    sh = rescale_shapes(shapes, frames or fin.frames, height or fin.height, width or fin.width)
    return method.sample(model, sh, batch=1, generator=generator)


def slomo(method, model, shapes: Sequence[ScaleShape], factor: int, generator=None) -> torch.Tensor:
    """factor x the trained frames along a latent path slowed down by ``factor`` (Sec. 5.2)."""
    if factor < 1:
        raise HpgenError("--factor must be a positive integer")
    if not getattr(model, "latent_path", False):
        raise HpgenError("this generator was not trained for slo-mo; train with singan.slomo_factors=[1, 2] "
                         "(or the factors you need)")
    return method.sample(model, shapes, batch=1, generator=generator, factor=factor)


SUPERRES_RECON_WEIGHT = 125.0  # SinGAN-GIF Sec. 5.5: "the reconstruction error is given a higher weight of 125"


def superres_recipe(factor: int) -> dict:
    """SinGAN-GIF Sec. 5.5: to up-sample by an integer k, train with the pyramid scale factor
    k**(1/k) and reconstruction weight 125, then pass the input k times through the finest
    generator (k steps of k**(1/k) make k)."""
    if factor != int(factor) or factor < 2:
        raise HpgenError(f"--recipe paper needs an integer --factor >= 2 (SinGAN-GIF Sec. 5.5: k in N), got {factor}")
    k = int(factor)
    return {"scale_factor": k ** (1.0 / k), "recon_weight": SUPERRES_RECON_WEIGHT, "passes": k}


def check_superres_run(config: dict, factor: int) -> dict:
    """The recipe for ``factor``, or a one-line error saying how this run differs from it and
    how to train one that does not."""
    r = superres_recipe(factor)
    have_r, have_w = config["pyramid"]["scale_factor"], config["train"]["recon_weight"]
    if abs(have_r - r["scale_factor"]) > 1e-4 * r["scale_factor"] or have_w != r["recon_weight"]:
        raise HpgenError(f"--recipe paper --factor {r['passes']}: this run was trained with pyramid.scale_factor="
                         f"{have_r:.6g} and train.recon_weight={have_w:g}; SinGAN-GIF Sec. 5.5 trains with "
                         f"{r['passes']}**(1/{r['passes']}) = {r['scale_factor']:.6g} and 125: hpgen train --config "
                         f"configs/singan_gif/superres.toml pyramid.scale_factor={r['scale_factor']!r}")
    return r


def super_resolve(model, video: torch.Tensor, factor: float, scale_factor: float, generator=None,
                  noise: bool = True, passes: int | None = None) -> torch.Tensor:
    """SinGAN's super-resolution (SinGAN-GIF Sec. 5.5): ceil(log k / log r) passes through the
    finest generator (or ``passes``), each enlarging by k**(1/passes) <= r (the step it was
    trained on), the last one landing exactly on k x the input's height and width; frames are kept."""
    if factor <= 1:
        raise HpgenError("--factor must be > 1")
    b, c, t, h, w = video.shape
    if passes is None:
        passes = max(1, math.ceil(math.log(factor) / math.log(scale_factor) - 1e-9))
    fin = model.num_scales - 1
    x = video
    for i in range(1, passes + 1):
        s = factor ** (i / passes)
        shape = ScaleShape(t, round(h * s), round(w * s), 1)
        if i == passes:
            shape = ScaleShape(t, round(h * factor), round(w * factor), 1)
        z = model.make_noise(fin, shape, b, generator) if noise else None
        x = model.refine(x, fin, shape, z)
    return x


def feather_mask(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """A soft version of a binary mask (B, 1, T, H, W): 1 on the mask and up to ``radius``
    pixels around it, then a linear ramp to 0 over the next ``radius`` pixels (SinGAN's
    dilated, blurred mask), frame by frame."""
    if radius <= 0:
        return mask.float()
    b, _, t, h, w = mask.shape
    m = mask.float().transpose(1, 2).reshape(b * t, 1, h, w)
    k = 2 * radius + 1
    m = F.max_pool2d(m, k, stride=1, padding=radius)
    m = F.avg_pool2d(F.pad(m, (radius,) * 4, mode="replicate"), k, stride=1)
    return m.clamp(0, 1).reshape(b, t, 1, h, w).transpose(1, 2)


def edit(model, shapes: Sequence[ScaleShape], edited: torch.Tensor, mask: torch.Tensor | None, start: int,
         passes: int = 1, feather: int | None = None, generator=None, blend: bool = True) -> torch.Tensor:
    """Editing / harmonisation (SinGAN-GIF Sec. 5.4, SinGAN Sec. 4): inject the edited video
    at ``start``, run the finer scales (``passes`` times), then keep the generated pixels only
    inside the feathered edit mask. ``feather`` defaults to one pixel of the injection scale."""
    b, _, t, h, w = edited.shape
    sh = rescale_shapes(shapes, t, h, w)
    out = inject(model, edited, sh, start, passes, generator)
    if not blend or mask is None:
        return out
    if feather is None:
        feather = max(1, math.ceil(h / sh[start].height))
    soft = feather_mask(mask.expand(b, 1, t, h, w), feather)
    return soft * out + (1 - soft) * edited


def animate(model, shapes: Sequence[ScaleShape], still: torch.Tensor, frames: int, start: int = 1,
            generator=None) -> torch.Tensor:
    """Motion transfer (SinGAN-GIF Sec. 5.6): the still (B, 3, 1, H, W) repeated ``frames``
    times and injected at ``start`` (the second-coarsest scale by default)."""
    if frames < 2:
        raise HpgenError("--frames must be >= 2 to animate")
    b, c, _, h, w = still.shape
    sh = rescale_shapes(shapes, frames, h, w)
    return inject(model, still.expand(b, c, frames, h, w).contiguous(), sh, start, 1, generator)


def paint(model, shapes: Sequence[ScaleShape], painting: torch.Tensor, start: int, frames: int | None = None,
          generator=None) -> torch.Tensor:
    """Paint-to-video (SinGAN Sec. 4, HP-VAE-GAN Fig. 8): a coarse painting (a still or a video)
    injected at a coarse scale; the finer scales turn its colour blobs into the input's textures."""
    b, c, t, h, w = painting.shape
    if t == 1 and (frames or shapes[-1].frames) > 1:
        t = frames or shapes[-1].frames
        painting = painting.expand(b, c, t, h, w).contiguous()
    return inject(model, painting, rescale_shapes(shapes, t, h, w), start, 1, generator)
