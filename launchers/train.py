"""Training entry point for every launcher:

    python launchers/train.py --config configs/hpvaegan/demo.toml
    deepspeed --num_gpus 2 launchers/train.py --config ... dist.pipeline_stages=2
    torchrun --nproc_per_node 2 launchers/train.py --config ...
    srun python launchers/train.py ...            (see slurm/train.sbatch)

It is the same code path as ``hpgen train``: arguments are identical.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hpgen.commands import train as train_command  # noqa: E402
from hpgen.errors import HpgenError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="launchers/train.py")
    train_command.add_arguments(parser)
    # The deepspeed launcher appends --local_rank=N; LOCAL_RANK in the environment says the same.
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        return train_command.run(args)
    except HpgenError as e:
        print(f"hpgen: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
