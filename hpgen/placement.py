"""Where each scale lives in a P x D world: pure arithmetic, no communication.

Ranks form a grid: ``rank = replica * P + stage``. The P ranks of one replica are a
pipeline over the scales; the D ranks of one stage are data-parallel copies of it.

Scales go to stages in contiguous groups (a stage must hand its output to the next
finer scale's stage), chosen to minimise the most expensive stage. A scale's cost is
estimated as voxels x conv layers that run on it in training: its generator, plus the
encoder at scale 0 and the critic at the adversarial scales. Convolution work and
activation memory are both proportional to that product, so it balances time and
memory at once; the count of scales would not (the finest scale of a 4/3 pyramid
holds about as many voxels as all coarser ones together).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .errors import HpgenError
from .pyramid import ScaleShape


def scale_costs(shapes: Sequence[ScaleShape], num_blocks: int, gan_from: int) -> list[float]:
    """voxels x layers per scale (see the module docstring)."""
    costs = []
    for k, s in enumerate(shapes):
        layers = num_blocks  # the generator's conv blocks
        if k == 0:
            layers += num_blocks  # the encoder (its mean/log-variance heads are small)
        if k >= gan_from:
            layers += num_blocks  # the critic
        costs.append(float(s.voxels * layers))
    return costs


def partition(costs: Sequence[float], stages: int) -> list[int]:
    """First scale of each stage (``starts[0] == 0``): the contiguous split of ``costs`` into
    ``stages`` non-empty groups whose largest sum is smallest (exact, by dynamic programming)."""
    n = len(costs)
    if not 1 <= stages <= n:
        raise HpgenError(f"dist.pipeline_stages={stages} needs between 1 and {n} stages (one per scale at most)")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    # best[p][i]: smallest max-stage cost placing the first i scales on p stages.
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for p in range(1, stages + 1):
        for i in range(p, n + 1):
            for j in range(p - 1, i):
                v = max(best[p - 1][j], prefix[i] - prefix[j])
                if v < best[p][i]:
                    best[p][i], cut[p][i] = v, j
    starts, i = [], n
    for p in range(stages, 0, -1):
        i = cut[p][i]
        starts.append(i)
    return starts[::-1]


@dataclass(frozen=True)
class Layout:
    """This rank's place in the P x D grid and the scale -> stage map."""
    stages: int
    replicas: int
    rank: int
    starts: tuple[int, ...]
    num_scales: int

    @property
    def stage(self) -> int:
        return self.rank % self.stages

    @property
    def replica(self) -> int:
        return self.rank // self.stages

    def owner(self, k: int) -> int:
        """The stage that holds scale k's activations and trains its networks."""
        return max(p for p, s in enumerate(self.starts) if s <= k)

    def scales(self, stage: int | None = None) -> range:
        p = self.stage if stage is None else stage
        stop = self.starts[p + 1] if p + 1 < self.stages else self.num_scales
        return range(self.starts[p], stop)

    def owns(self, k: int) -> bool:
        return self.owner(k) == self.stage

    def rank_of(self, stage: int, replica: int | None = None) -> int:
        return (self.replica if replica is None else replica) * self.stages + stage

    def describe(self, costs: Sequence[float] | None = None) -> str:
        parts = []
        for p in range(self.stages):
            r = self.scales(p)
            share = f", {sum(costs[k] for k in r) / sum(costs):.0%} of the cost" if costs else ""
            parts.append(f"stage {p}: scales {r.start}-{r.stop - 1}{share}")
        return "; ".join(parts)


def replica_of(world_size: int, rank: int, stages: int) -> tuple[int, int]:
    """(this rank's replica, the number of replicas D) in a world of ``stages`` x D ranks."""
    if world_size % stages:
        raise HpgenError(f"world size {world_size} is not a multiple of dist.pipeline_stages={stages} "
                         "(world = P x D)")
    return rank // stages, world_size // stages


def make_layout(world_size: int, rank: int, stages: int, shapes: Sequence[ScaleShape], num_blocks: int,
                gan_from: int, starts: Sequence[int] = ()) -> tuple[Layout, list[float]]:
    """The layout for ``stages`` pipeline stages, from explicit ``starts`` or balanced by cost."""
    _, replicas = replica_of(world_size, rank, stages)
    costs = scale_costs(shapes, num_blocks, gan_from)
    if starts:
        starts = [int(s) for s in starts]
        if len(starts) != stages - 1 or starts != sorted(set(starts)) or starts[0] < 1 or starts[-1] >= len(shapes):
            raise HpgenError(f"dist.stage_starts must list the first scale of stages 1..{stages - 1}, increasing, "
                             f"within 1..{len(shapes) - 1}; got {starts}")
        full = [0, *starts]
    else:
        full = partition(costs, stages)
    return Layout(stages, replicas, rank, tuple(full), len(shapes)), costs
