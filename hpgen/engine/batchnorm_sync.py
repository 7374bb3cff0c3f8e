"""Data parallelism for BatchNorm: statistics summed over the global batch of clips."""
from __future__ import annotations

import torch
import torch.nn as nn


class AllReduceBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are summed over all data-parallel ranks, so a
    D-rank run normalises exactly as one rank holding the whole batch would (torch's
    SyncBatchNorm is GPU-only). The state-dict keys are BatchNorm's, so checkpoints and
    exported generators do not change."""

    # The data-parallel group of this rank's pipeline stage, by key into _BN_GROUPS (process
    # groups cannot be deep-copied, and a new scale's generator is a deep copy of the last).
    group_key: str | None = None

    def _check_input_dim(self, x):
        if x.dim() < 3:
            raise ValueError(f"expected at least 3D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed.nn.functional as dist_fn
        import torch.nn.functional as F

        if not self.training and self.track_running_stats:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        group = _BN_GROUPS.get(self.group_key)

        def all_sum(t):
            return dist_fn.all_reduce(t, group=group) if group is not None else dist_fn.all_reduce(t)

        # Two passes, as BatchNorm computes on one rank: the mean, then the mean squared
        # deviation from it. (E[x^2] - E[x]^2 in one pass loses digits to cancellation: a
        # 2-rank SinGAN-GIF run then drifted from one rank by 4e-4 in the critic loss.)
        count = torch.tensor([x.numel() // c], dtype=torch.float32, device=x.device)
        stats = all_sum(torch.cat([xf.sum(dims), count]))
        n = stats[-1]
        mean = stats[:c] / n
        shape = [1, c] + [1] * (x.dim() - 2)
        dev = xf - mean.view(shape)
        var = all_sum(dev.pow(2).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
                self.running_mean.mul_(1 - m).add_(m * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - m).add_(m * (var * n / (n - 1)).to(self.running_var.dtype))
                self.num_batches_tracked.add_(1)
        y = dev * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.float().view(shape) + self.bias.float().view(shape)
        return y.to(x.dtype)


_BN_GROUPS: dict = {}


def sync_batchnorm(module: nn.Module, group=None) -> nn.Module:
    """Swap every BatchNorm of ``module`` for AllReduceBatchNorm (same parameters and buffers)
    whose statistics are summed over ``group`` (None: all ranks)."""
    key = None
    if group is not None:
        key = f"group{id(group)}"
        _BN_GROUPS[key] = group
    for name, child in module.named_children():
        if isinstance(child, AllReduceBatchNorm):
            child.group_key = key
        elif isinstance(child, nn.modules.batchnorm._BatchNorm):
            new = AllReduceBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)
            new.group_key = key
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            new.to(next(iter(child.state_dict().values())).device)
            setattr(module, name, new)
        else:
            sync_batchnorm(child, group)
    return module
