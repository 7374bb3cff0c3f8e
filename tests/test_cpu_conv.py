"""The permuted CPU path of Conv3d (hpgen/engine/cpu_conv.py) is the same convolution."""
import copy

import torch

from hpgen import losses
from hpgen.engine import set_cpu_conv3d_layout
from hpgen.engine import cpu_conv
from hpgen.engine.cpu_conv import frames_path, permuted_order
from hpgen.models import PatchCritic
from hpgen.models.separable import SeparableConv3d


def _critic_phase(critic, real, fake):
    critic.zero_grad()
    loss, _ = losses.wgan_critic(critic, real, fake, 0.1, eps=torch.tensor([0.3, 0.8]), gp_norm="voxel")
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in critic.parameters()]


def test_permuted_conv3d_equals_conv3d_in_value_and_double_backward():
    torch.manual_seed(0)
    real, fake = torch.randn(2, 3, 4, 9, 14, dtype=torch.float64), torch.randn(2, 3, 4, 9, 14, dtype=torch.float64)
    ref = PatchCritic(3, channels=6, num_blocks=3).double().eval()  # eval: spectral norm's u stays put
    fast = set_cpu_conv3d_layout(copy.deepcopy(ref), always=True)
    assert any("_conv_forward" in m.__dict__ for m in fast.modules())
    (la, ga), (lb, gb) = _critic_phase(ref, real, fake), _critic_phase(fast, real, fake)
    assert torch.allclose(la, lb, rtol=1e-6, atol=0)  # the losses are summed in float32
    for a, b in zip(ga, gb):  # the gradient penalty's double backward too
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-9)


def test_permuted_path_handles_anisotropic_kernels_and_survives_deepcopy():
    torch.manual_seed(1)
    conv = torch.nn.Conv3d(4, 5, (3, 1, 5), stride=(1, 2, 1), padding=(1, 0, 2), dilation=(2, 1, 1)).double()
    x = torch.randn(1, 4, 6, 11, 13, dtype=torch.float64)
    want = conv(x)
    fast = set_cpu_conv3d_layout(copy.deepcopy(conv), always=True)
    assert torch.allclose(fast(x), want, rtol=1e-12, atol=1e-12)
    again = copy.deepcopy(fast)  # a new scale's generator is a deep copy of the last
    again.weight.data.mul_(2)
    assert torch.allclose(again(x) - again.bias.view(1, -1, 1, 1, 1), 2 * (want - conv.bias.view(1, -1, 1, 1, 1)))
    set_cpu_conv3d_layout(fast, enabled=False)
    assert "_conv_forward" not in fast.__dict__
    sep = SeparableConv3d(4, 4, 3).double()  # SinGAN-GIF's 1xkxk then kx1x1 pair
    want = sep(x)
    assert torch.allclose(set_cpu_conv3d_layout(sep, always=True)(x), want, rtol=1e-12, atol=1e-12)


def test_the_permutation_is_used_only_where_it_moves_pytorch_to_onednn():
    # One 7-frame clip at 36x64, 32 channels: N*C*T*H = 8064 takes slow_conv3d; frames last: oneDNN.
    assert permuted_order((1, 32, 7, 36, 64)) == [1, 2, 0]
    assert permuted_order((2, 32, 7, 36, 64)) is None    # N > 1: oneDNN already
    assert permuted_order((1, 32, 13, 72, 128)) is None  # large enough already
    assert permuted_order((1, 8, 3, 12, 28)) is None     # slow_conv3d either way: left exactly as it was
    assert permuted_order((1, 32, 7, 36, 64), dtype=torch.float64) is None


def test_frames_path_equals_conv3d_in_value_and_double_backward():
    """The coarsest scales' convolutions run as one Conv2d over the frames: the same
    convolution, gradient-penalty double backward included, for any time stride, dilation
    and padding."""
    torch.manual_seed(2)
    real, fake = torch.randn(2, 3, 4, 9, 14, dtype=torch.float64), torch.randn(2, 3, 4, 9, 14, dtype=torch.float64)
    ref = PatchCritic(3, channels=6, num_blocks=3).double().eval()
    fast = set_cpu_conv3d_layout(copy.deepcopy(ref), always="frames")
    assert any(m.__dict__.get("_always_frames") for m in fast.modules())
    (la, ga), (lb, gb) = _critic_phase(ref, real, fake), _critic_phase(fast, real, fake)
    assert torch.allclose(la, lb, rtol=1e-6, atol=0)
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-9)
    for kw in (dict(kernel_size=(3, 1, 5), stride=(2, 2, 1), padding=(2, 0, 2), dilation=(2, 1, 1)),
               dict(kernel_size=(1, 3, 3), padding=(0, 1, 1)), dict(kernel_size=(2, 3, 3), stride=(3, 1, 1))):
        conv = torch.nn.Conv3d(4, 5, **kw).double()
        x = torch.randn(1, 4, 7, 11, 13, dtype=torch.float64)
        fast = set_cpu_conv3d_layout(copy.deepcopy(conv), always="frames")
        assert torch.allclose(fast(x), conv(x), rtol=1e-12, atol=1e-12), kw
    sep = SeparableConv3d(4, 4, 3).double()  # its kx1x1 half is grouped: left to PyTorch
    assert torch.allclose(set_cpu_conv3d_layout(copy.deepcopy(sep), always="frames")(x), sep(x), rtol=1e-12, atol=1e-12)


def test_the_frames_path_is_used_only_where_pytorch_would_take_slow_conv3d(monkeypatch):
    assert frames_path((1, 16, 8, 21, 37))       # SinGAN-GIF demo scale 0: slow in every axis order
    assert frames_path((1, 32, 3, 18, 32))       # HP-VAE-GAN demo scale 0
    assert not frames_path((1, 32, 7, 36, 64))   # the permutation reaches oneDNN there
    assert not frames_path((2, 16, 8, 21, 37))   # N > 1: oneDNN already
    assert not frames_path((1, 32, 13, 72, 128))  # large enough already
    assert not frames_path((1, 16, 8, 21, 37), groups=16)
    assert not frames_path((1, 16, 8, 21, 37), kernel=(3, 5, 5))  # PyTorch takes oneDNN for these kernels
    assert not frames_path((1, 16, 8, 21, 37), dtype=torch.float64)
    # And a module in a run (not forced) takes it on such an input, with the same result.
    torch.manual_seed(3)
    conv = torch.nn.Conv3d(16, 16, 3, padding=1)
    x = torch.randn(1, 16, 8, 21, 37)
    fast = set_cpu_conv3d_layout(copy.deepcopy(conv))
    calls = []
    orig = cpu_conv.frames_conv3d
    monkeypatch.setattr(cpu_conv, "frames_conv3d", lambda *a: calls.append(1) or orig(*a))
    assert torch.allclose(fast(x), conv(x), rtol=1e-4, atol=1e-4) and calls
