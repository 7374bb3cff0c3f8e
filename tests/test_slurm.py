"""slurm/train.sbatch and slurm/sample.sbatch run against a fake SLURM.

The batch scripts are run with plain ``bash`` in a made-up SLURM job environment. On PATH
are a fake ``scontrol`` (expands ``gpu[01-02]``, records ``requeue``) and a fake ``srun``
that records its argv and environment and then starts each of its N tasks itself, with
SLURM_PROCID / SLURM_LOCALID / SLURM_NODEID / SLURM_NTASKS set as srun sets them, forwarding
SIGUSR1/SIGTERM to them and exiting with the highest task status. HPGEN_PYTHON is a fake
python that records its argv and the rank variables it sees, then exits as told (FAKE_MODE).
Nothing here imports torch or starts a real training.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "slurm" / "train.sbatch"
SAMPLE = REPO / "slurm" / "sample.sbatch"
JOB_ID = 4242
PORT = str(20000 + JOB_ID % 10000)
HEADER = f"#!{sys.executable}\n"

FAKE_SRUN = HEADER + r'''
import json, os, signal, subprocess, sys
log = os.environ["FAKE_LOG"]
argv = sys.argv[1:]
opts, i = {}, 0
while i < len(argv) and argv[i].startswith("-"):
    k, _, v = argv[i].partition("=")
    opts[k] = v
    i += 1
cmd = argv[i:]
keys = ["MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
        "OMP_NUM_THREADS"]
with open(os.path.join(log, "srun.jsonl"), "a") as f:
    f.write(json.dumps({"argv": argv, "cwd": os.getcwd(),
                        "env": {k: os.environ.get(k) for k in keys}}) + "\n")
ntasks, per_node = int(opts["--ntasks"]), int(opts["--ntasks-per-node"])
hosts = os.environ["FAKE_HOSTS"].split(",")
procs = []
for rank in range(ntasks):
    env = dict(os.environ, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank % per_node),
               SLURM_NODEID=str(rank // per_node), SLURM_NTASKS=str(ntasks),
               SLURM_STEP_NUM_TASKS=str(ntasks), SLURMD_NODENAME=hosts[rank // per_node])
    procs.append(subprocess.Popen(cmd, env=env))

def forward(signum, frame):
    with open(os.path.join(log, "srun-signals.log"), "a") as f:
        f.write(signal.Signals(signum).name + "\n")
    for p in procs:
        if p.poll() is None:
            p.send_signal(signum)

signal.signal(signal.SIGUSR1, forward)
signal.signal(signal.SIGTERM, forward)
codes = [p.wait() for p in procs]
sys.exit(max(c if c >= 0 else 128 - c for c in codes))
'''

FAKE_SCONTROL = HEADER + r'''
import os, re, sys
log = os.environ["FAKE_LOG"]
args = sys.argv[1:]
if args[:2] == ["show", "hostnames"]:
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?", args[2]):
        m = re.fullmatch(r"(.*)\[(.*)\]", part)
        if not m:
            print(part)
            continue
        for r in m.group(2).split(","):
            lo, _, hi = r.partition("-")
            for n in range(int(lo), int(hi or lo) + 1):
                print(f"{m.group(1)}{n:0{len(lo)}d}")
elif args[:1] == ["requeue"]:
    with open(os.path.join(log, "requeue.log"), "a") as f:
        f.write(" ".join(args) + "\n")
    sys.exit(int(os.environ.get("FAKE_REQUEUE_RC", "0")))
else:
    sys.exit(f"fake scontrol: unsupported {args}")
'''

FAKE_PYTHON = HEADER + r'''
import json, os, signal, sys, time
log = os.environ["FAKE_LOG"]
rank = os.environ["SLURM_PROCID"]
keys = ["SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_NTASKS", "SLURMD_NODENAME",
        "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"]
record = {"argv": sys.argv[1:], "cwd": os.getcwd(), "env": {k: os.environ.get(k) for k in keys}}

def dump():
    with open(os.path.join(log, f"task-{rank}.json"), "w") as f:
        json.dump(record, f)

mode = os.environ.get("FAKE_MODE", "ok")
if mode == "sleep":  # a trainer waiting for SIGUSR1/SIGTERM: checkpoint, exit 3
    def stop(signum, frame):
        record["signal"] = signal.Signals(signum).name
        dump()
        sys.exit(3)
    signal.signal(signal.SIGUSR1, stop)
    signal.signal(signal.SIGTERM, stop)
    open(os.path.join(log, f"ready-{rank}"), "w").close()
    time.sleep(20)
    sys.exit(99)  # the signal never came
dump()
sys.exit(int(mode.partition(":")[2] or 0))
'''


class FakeSlurm:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.bin = tmp / "bin"
        self.log = tmp / "log"
        self.bin.mkdir()
        self.log.mkdir()
        for name, text in [("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL), ("python", FAKE_PYTHON)]:
            p = self.bin / name
            p.write_text(text)
            p.chmod(0o755)
        self.python = str(self.bin / "python")

    def env(self, hosts=("gpu01", "gpu02"), nodelist="gpu[01-02]", **extra) -> dict:
        keep = {k: v for k, v in os.environ.items()
                if not k.startswith(("SLURM", "HPGEN_", "MASTER_", "OMP_"))
                and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
        env = dict(keep, PATH=f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
                   FAKE_LOG=str(self.log), FAKE_HOSTS=",".join(hosts),
                   SLURM_JOB_ID=str(JOB_ID), SLURM_JOB_NAME="hpgen-train", SLURM_JOB_NODELIST=nodelist,
                   SLURM_NNODES=str(len(hosts)), SLURM_JOB_NUM_NODES=str(len(hosts)),
                   SLURM_GPUS_ON_NODE="2", SLURM_GPUS_PER_NODE="2", SLURM_NTASKS_PER_NODE="2",
                   SLURM_NTASKS=str(2 * len(hosts)), SLURM_CPUS_PER_TASK="4",
                   SLURM_SUBMIT_DIR=str(REPO), HPGEN_PYTHON=self.python,
                   RANK="7", WORLD_SIZE="9", LOCAL_RANK="5")  # leaked from the submitting shell
        env.update({k: str(v) for k, v in extra.items()})
        return {k: v for k, v in env.items() if v != "None"}

    def srun_calls(self) -> list[dict]:
        p = self.log / "srun.jsonl"
        return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []

    def tasks(self) -> list[dict]:
        files = sorted(self.log.glob("task-*.json"), key=lambda p: int(p.stem.split("-")[1]))
        return [json.loads(p.read_text()) for p in files]

    def requeues(self) -> list[str]:
        p = self.log / "requeue.log"
        return p.read_text().splitlines() if p.exists() else []


@pytest.fixture
def slurm(tmp_path) -> FakeSlurm:
    return FakeSlurm(tmp_path)


def run(script: Path, env: dict, *args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], env=env, cwd=cwd or env.get("HPGEN_ROOT", "/"),
                          capture_output=True, text=True, timeout=30)


def train_env(slurm: FakeSlurm, **extra) -> dict:
    base = dict(HPGEN_CONFIG="configs/hpvaegan/paper.toml", HPGEN_VIDEO="data/my clip.mp4",
                HPGEN_RUN_DIR=str(slurm.tmp / "run"), HPGEN_OVERRIDES="train.iters_per_scale=10  train.seed=3")
    base.update(extra)
    return slurm.env(**base)


def train_cmd(slurm: FakeSlurm) -> list[str]:
    return ["launchers/train.py", "--config", "configs/hpvaegan/paper.toml", "--video", "data/my clip.mp4",
            "--out", str(slurm.tmp / "run"), "train.iters_per_scale=10", "train.seed=3", "--no-progress"]


# ---------------------------------------------------------------------------------------------
# train.sbatch

def test_train_two_nodes_commands_hostfile_and_ranks(slurm):
    r = run(TRAIN, train_env(slurm), "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr

    (call,) = slurm.srun_calls()
    assert call["argv"] == ["--nodes=2", "--ntasks=4", "--ntasks-per-node=2", "--cpus-per-task=4",
                            "--gpu-bind=none", "--kill-on-bad-exit=0", "--wait=60",
                            slurm.python, *train_cmd(slurm)]
    assert call["cwd"] == str(REPO)
    # Rendezvous on the first node; nothing rank-specific exported by the batch shell.
    assert call["env"] == {"MASTER_ADDR": "gpu01", "MASTER_PORT": PORT, "RANK": None, "WORLD_SIZE": None,
                           "LOCAL_RANK": None, "LOCAL_WORLD_SIZE": None, "OMP_NUM_THREADS": "4"}

    assert (slurm.tmp / "run.hostfile").read_text() == "gpu01 slots=2\ngpu02 slots=2\n"
    # The script leaves the run directory to the trainer, which refuses to start a new run in
    # a non-empty directory that is not an hpgen run.
    assert not (slurm.tmp / "run").exists()

    tasks = slurm.tasks()
    assert len(tasks) == 4
    for rank, t in enumerate(tasks):
        assert t["argv"] == train_cmd(slurm)
        assert t["cwd"] == str(REPO)
        assert t["env"] == {"SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank % 2),
                            "SLURM_NODEID": str(rank // 2), "SLURM_NTASKS": "4",
                            "SLURMD_NODENAME": f"gpu0{rank // 2 + 1}",
                            "RANK": None, "WORLD_SIZE": None, "LOCAL_RANK": None, "LOCAL_WORLD_SIZE": None,
                            "MASTER_ADDR": "gpu01", "MASTER_PORT": PORT}
    # What hpgen/engine.py::setup_distributed derives from that environment:
    derived = [(int(t["env"]["SLURM_PROCID"]), int(t["env"]["SLURM_NTASKS"]), int(t["env"]["SLURM_LOCALID"]))
               for t in tasks]
    assert derived == [(0, 4, 0), (1, 4, 1), (2, 4, 0), (3, 4, 1)]

    assert slurm.requeues() == []
    # The equivalent DeepSpeed-launcher command is printed, quoted as it would be typed.
    ds = [line.split("]   deepspeed ", 1)[1] for line in r.stdout.splitlines() if "]   deepspeed " in line]
    assert len(ds) == 1
    assert subprocess.run(["bash", "-c", 'printf "%s\\n" ' + ds[0]],
                          capture_output=True, text=True).stdout.splitlines() == \
        ["--hostfile", str(slurm.tmp / "run.hostfile"), "--master_addr", "gpu01", "--master_port", PORT,
         *train_cmd(slurm)]


def test_train_defaults(slurm):
    """Defaults: root from HPGEN_ROOT, .venv/bin/python, demo preset, runs/<job name>-<job id>,
    GPUs per node from --gpus-per-node=TYPE:N, explicit MASTER_PORT kept."""
    root = slurm.tmp / "root"
    (root / "launchers").mkdir(parents=True)
    (root / "launchers" / "train.py").write_text("")
    (root / ".venv" / "bin").mkdir(parents=True)
    venv_py = root / ".venv" / "bin" / "python"
    venv_py.write_text(FAKE_PYTHON)
    venv_py.chmod(0o755)
    env = slurm.env(hosts=("node7",), nodelist="node7", HPGEN_PYTHON=None, HPGEN_ROOT=root,
                    SLURM_GPUS_ON_NODE=None, SLURM_GPUS_PER_NODE="a100:3", SLURM_NTASKS_PER_NODE=None,
                    SLURM_CPUS_PER_TASK=None, MASTER_PORT=12345, SLURM_JOB_NAME="myjob")
    r = run(TRAIN, env)
    assert r.returncode == 0, r.stdout + r.stderr
    (call,) = slurm.srun_calls()
    assert call["argv"] == ["--nodes=1", "--ntasks=3", "--ntasks-per-node=3", "--gpu-bind=none",
                            "--kill-on-bad-exit=0", "--wait=60", ".venv/bin/python", "launchers/train.py",
                            "--config", "configs/hpvaegan/demo.toml", "--out", f"runs/myjob-{JOB_ID}"]
    assert call["env"]["MASTER_ADDR"] == "node7" and call["env"]["MASTER_PORT"] == "12345"
    assert (root / "runs" / f"myjob-{JOB_ID}.hostfile").read_text() == "node7 slots=3\n"
    assert not (root / "runs" / f"myjob-{JOB_ID}").exists()
    assert [(t["env"]["SLURM_PROCID"], t["env"]["SLURM_LOCALID"]) for t in slurm.tasks()] == \
        [("0", "0"), ("1", "1"), ("2", "2")]


def test_train_interrupted_step_requeues(slurm):
    r = run(TRAIN, train_env(slurm, FAKE_MODE="exit:3"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert slurm.requeues() == [f"requeue {JOB_ID}"]


def test_train_failed_step_propagates_without_requeue(slurm):
    r = run(TRAIN, train_env(slurm, FAKE_MODE="exit:1"))
    assert r.returncode == 1
    assert slurm.requeues() == []
    assert "failed with status 1" in r.stdout


def test_train_requeue_refused_is_reported(slurm):
    r = run(TRAIN, train_env(slurm, FAKE_MODE="exit:3", FAKE_REQUEUE_RC=1))
    assert r.returncode == 3
    assert slurm.requeues() == [f"requeue {JOB_ID}"]
    assert f"HPGEN_RUN_DIR={slurm.tmp / 'run'}" in r.stdout


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_train_forwards_signal(slurm, sig):
    """SLURM's --signal=B:USR1@120 reaches only the batch shell: it must forward it through
    srun to every task and requeue once they exit 3 after checkpointing. SIGTERM (scancel,
    pre-emption) is forwarded the same way, but the job is not requeued (that would undo a
    scancel) and the script exits 3."""
    proc = subprocess.Popen(["bash", str(TRAIN)], env=train_env(slurm, FAKE_MODE="sleep"), cwd="/",
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 10
        while len(list(slurm.log.glob("ready-*"))) < 4:
            assert proc.poll() is None and time.time() < deadline, "tasks never started"
            time.sleep(0.02)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    tasks = slurm.tasks()
    assert [t["signal"] for t in tasks] == [sig.name] * 4
    assert (slurm.log / "srun-signals.log").read_text() == sig.name + "\n"
    if sig == signal.SIGUSR1:
        assert proc.returncode == 0, out
        assert slurm.requeues() == [f"requeue {JOB_ID}"]
    else:
        assert proc.returncode == 3, out
        assert slurm.requeues() == []
        assert "not requeued" in out


def test_train_outside_slurm_refuses(slurm):
    env = slurm.env(SLURM_JOB_ID=None)
    r = run(TRAIN, env)
    assert r.returncode != 0 and "not inside a SLURM job" in r.stderr
    assert slurm.srun_calls() == []


# ---------------------------------------------------------------------------------------------
# sample.sbatch

WRAP = 'export RANK="$SLURM_PROCID" WORLD_SIZE="$SLURM_NTASKS" LOCAL_RANK="$SLURM_LOCALID"; exec "$@"'


def test_sample_commands_and_accelerate_env(slurm):
    run_dir, out = str(slurm.tmp / "run"), str(slurm.tmp / "out")
    env = slurm.env(SLURM_JOB_NAME="hpgen-sample", HPGEN_RUN_DIR=run_dir, HPGEN_SAMPLE_DIR=out,
                    HPGEN_NUM=8, HPGEN_SEED=5)
    r = run(SAMPLE, env, "--frames", "12")
    assert r.returncode == 0, r.stdout + r.stderr
    sample_cmd = ["-m", "hpgen", "sample", run_dir, "--num", "8", "--out", out, "--seed", "5",
                  "--device", "auto", "--frames", "12"]
    (call,) = slurm.srun_calls()
    assert call["argv"] == ["--nodes=2", "--ntasks=4", "--ntasks-per-node=2", "--cpus-per-task=4",
                            "--gpu-bind=none", "--kill-on-bad-exit=1",
                            "bash", "-c", WRAP, "hpgen-sample", slurm.python, *sample_cmd]
    assert call["cwd"] == str(REPO)
    assert call["env"] == {"MASTER_ADDR": "gpu01", "MASTER_PORT": PORT, "RANK": None, "WORLD_SIZE": None,
                           "LOCAL_RANK": None, "LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "4"}
    tasks = slurm.tasks()
    assert len(tasks) == 4
    for rank, t in enumerate(tasks):
        assert t["argv"] == sample_cmd
        e = t["env"]
        # What accelerate's PartialState reads for a multi-process run (accelerate/state.py).
        assert (e["RANK"], e["WORLD_SIZE"], e["LOCAL_RANK"], e["LOCAL_WORLD_SIZE"]) == \
            (str(rank), "4", str(rank % 2), "2")
        assert (e["MASTER_ADDR"], e["MASTER_PORT"]) == ("gpu01", PORT)
        assert e["SLURMD_NODENAME"] == f"gpu0{rank // 2 + 1}"


def test_sample_default_out_and_failure(slurm):
    env = slurm.env(HPGEN_RUN_DIR="runs/x", FAKE_MODE="exit:1", hosts=("gpu01",), nodelist="gpu01",
                    SLURM_GPUS_ON_NODE=1)
    r = run(SAMPLE, env)
    assert r.returncode == 1
    (call,) = slurm.srun_calls()
    assert call["argv"][-12:] == ["-m", "hpgen", "sample", "runs/x", "--num", "16", "--out",
                                  f"runs/x/sampled-{JOB_ID}", "--seed", "0", "--device", "auto"]
    assert call["argv"][:3] == ["--nodes=1", "--ntasks=1", "--ntasks-per-node=1"]


def test_sample_needs_run_dir(slurm):
    r = run(SAMPLE, slurm.env())
    assert r.returncode != 0 and "HPGEN_RUN_DIR" in r.stderr
    assert slurm.srun_calls() == []
