"""The exact input gradient of a conv critic, grad_x sum D(x), as a first-order graph.

WGAN-GP needs grad_x D(x_hat) with a graph back to the critic's weights. Autograd gets it
with ``create_graph=True`` and a second backward through the first one, and that double
backward costs twice over:
  * each weight gradient of the penalty becomes a convolution whose *kernel* is a whole
    gradient video (``_convolution_double_backward``); GPU libraries have no fast kernel for
    that shape (pytorch #22577, #54840);
  * the derivative of ``leaky_relu_backward`` with respect to its input is zero, yet the
    second backward still pushes those zeros through the whole forward graph of D(x_hat).

For a chain of convolutions and LeakyReLUs the chain rule gives the gradient directly:

    grad_x sum D(x) = W_1^T M_1 W_2^T M_2 ... W_L^T 1

with W_l^T the transposed convolution of layer l (conv_transpose) and M_l the LeakyReLU's
slope mask at x (1 where its input is > 0, else the slope). The masks are piecewise constant
in the weights (autograd's double backward treats them so too), so this is the same function
of the weights, and its gradient is ordinary first-order backprop: convolutions with k^d
kernels only, and no pass over D(x_hat)'s forward graph. Biases do not enter it.

BatchNorm (the SinGAN critics) is handled exactly: with batch statistics its input gradient
depends on the normalised activations, so then (only then) the forward is recorded too.
Spectral norm is a reparametrisation of the conv weight: the weight is read once per call,
with its graph to the raw weight, and used for both the forward and the transposed pass.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

_CONVS = (nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d)


def leaf_layers(module: nn.Module) -> list[nn.Module]:
    """The layers of a (nested) nn.Sequential in order of application. Any other container
    or layer type is refused by ``input_gradient`` rather than differentiated wrongly."""
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in leaf_layers(child)]
    return [module]


def has_rule(body: nn.Module) -> bool:
    """True if ``input_gradient`` has a rule for every layer of ``body``. A BatchNorm subclass
    (such as the engine's cross-rank BatchNorm under data parallelism, whose statistics, and so
    whose gradient, span every rank) has none: callers fall back to autograd there."""
    return all(isinstance(m, _CONVS + _NORMS + (nn.LeakyReLU, nn.Identity)) and
               (not isinstance(m, _NORMS) or type(m) in _NORMS) for m in leaf_layers(body))


def uses_batch_statistics(module: nn.Module) -> bool:
    """True if a BatchNorm in ``module`` normalises with the statistics of the batch at hand,
    so that a sample's score depends on the other samples of its batch."""
    return any(isinstance(m, _NORMS) and (m.training or not m.track_running_stats) for m in module.modules())


def _conv_input_grad(conv: nn.Module, weight: torch.Tensor, g: torch.Tensor, in_shape) -> torch.Tensor:
    """W^T g: the gradient of <conv(x), g> with respect to x (conv_transpose with conv's geometry)."""
    dims = weight.dim() - 2
    k = weight.shape[2:]
    same = all(s == 1 for s in conv.stride) and not isinstance(conv.padding, str) and all(
        p == d * (kk - 1) // 2 and (d * (kk - 1)) % 2 == 0 for p, d, kk in zip(conv.padding, conv.dilation, k))
    if same and conv.groups == 1 and conv.padding_mode == "zeros":
        # Stride 1 with 'same' padding: the transposed convolution is the convolution with the
        # kernel flipped in space and its channel axes swapped, at the same padding. Running it
        # through the module's own _conv_forward keeps any per-device kernel choice applied to
        # the module (hpgen.engine.cpu_conv) for this pass too.
        flipped = weight.flip(list(range(2, 2 + dims))).transpose(0, 1)
        return conv._conv_forward(g, flipped, None)
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise NotImplementedError(f"explicit input gradient: padding {conv.padding!r}/{conv.padding_mode} of {conv}")
    out_pad = [i - ((o - 1) * s - 2 * p + d * (kk - 1) + 1) for i, o, s, p, d, kk in
               zip(in_shape[2:], g.shape[2:], conv.stride, conv.padding, conv.dilation, k)]
    fn = F.conv_transpose3d if dims == 3 else F.conv_transpose2d
    return fn(g, weight, None, conv.stride, conv.padding, out_pad, conv.groups, conv.dilation)


def input_gradient(body: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """grad_x sum(body(x)) for an nn.Sequential of Conv2d/Conv3d (spectral norm allowed),
    LeakyReLU, BatchNorm and Identity layers, as a graph in the parameters only (``x`` is
    treated as a constant). Equal to ``torch.autograd.grad(body(x).sum(), x,
    create_graph=True)`` in value and in its gradients with respect to every parameter.
    BatchNorm in training mode updates its running statistics once, as one forward would."""
    layers = leaf_layers(body)
    for m in layers:
        if not has_rule(m):
            raise NotImplementedError(f"explicit input gradient: no rule for {type(m).__name__}; "
                                      "use train.gp_method = \"autograd\"")
    # Weights read once, with their graph (spectral norm's power iteration runs here).
    weights = {id(m): m.weight for m in layers if isinstance(m, _CONVS)}
    gammas = {id(m): m.weight for m in layers if isinstance(m, _NORMS) and m.affine}
    record = uses_batch_statistics(body) and torch.is_grad_enabled()
    tape: list = []
    h = x.detach()
    with torch.set_grad_enabled(record):
        for m in layers:
            if isinstance(m, _CONVS):
                tape.append(("conv", m, h.shape))
                h = m._conv_forward(h, weights[id(m)], m.bias)
            elif isinstance(m, nn.LeakyReLU):
                slope = m.negative_slope
                tape.append(("scale", torch.where(h > 0, h.new_ones(()), h.new_full((), slope)).detach()))
                h = F.leaky_relu(h, slope)
            elif isinstance(m, _NORMS):
                red = [0] + list(range(2, h.dim()))
                view = (1, -1) + (1,) * (h.dim() - 2)
                gamma = gammas.get(id(m))  # reshaped in the backward loop, where grad is on
                if m.training or not m.track_running_stats:
                    var, mean = torch.var_mean(h, dim=red, keepdim=True, correction=0)
                    invstd = torch.rsqrt(var + m.eps)
                    tape.append(("batchnorm", gamma, invstd, (h - mean) * invstd, red))
                else:
                    invstd = torch.rsqrt(m.running_var + m.eps).view(view).to(h.dtype)
                    tape.append(("scale", invstd))
                    if gamma is not None:
                        tape.append(("channel_scale", gamma))
                h = m(h)
    g = torch.ones_like(h)
    for item in reversed(tape):
        if item[0] == "conv":
            _, m, shape = item
            g = _conv_input_grad(m, weights[id(m)], g, shape)
        elif item[0] == "scale":
            g = g * item[1]
        elif item[0] == "channel_scale":
            g = g * item[1].view((1, -1) + (1,) * (g.dim() - 2))
        else:  # d/dh of gamma * (h - mean) * invstd with batch statistics
            _, gamma, invstd, xhat, red = item
            gx = g if gamma is None else g * gamma.view((1, -1) + (1,) * (g.dim() - 2))
            g = invstd * (gx - gx.mean(red, keepdim=True) - xhat * (gx * xhat).mean(red, keepdim=True))
    return g
