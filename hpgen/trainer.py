"""The coarse-to-fine training loop, shared by every method.

For each scale: grow the networks, build one DeepSpeed engine per optimised network,
run the method's phases (one backward per engine per phase), report, snapshot and
checkpoint. A run directory holds everything (see docs/ARCHITECTURE.md), resumes
automatically from its newest checkpoint, and ends with ``generator.pt``.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from . import engine as eng
from .engine import pipeline as pl
from .config import Config, config_from_dict, dump_toml, to_dict
from .data import make_feed
from .errors import HpgenError
from .export import export_generator
from .inference import resolve_device
from .methods import get_method
from .methods.base import ScaleState
from .monitor import Monitor, peak_memory_gib
from .placement import make_layout, replica_of
from .pyramid import format_table
from .video import write_video

INTERRUPTED = 3  # exit status of a run stopped by SIGTERM/SIGUSR1 after checkpointing


class _StopFlag:
    """SIGTERM/SIGUSR1 (SLURM pre-emption, a user's kill) ask for a checkpoint and a clean exit."""

    def __init__(self):
        self.raised = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.raised = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def prepare_run_dir(run_dir: Path, cfg: Config, resume: bool, is_main: bool) -> Path | None:
    """Check the run directory (every rank, read-only, so all reach the same verdict before
    anything is written), then rank 0 creates it. Returns the checkpoint to resume from.
    Never overwrites a finished run, a run with another config, or a foreign directory."""
    ckpt_root = run_dir / "checkpoints"
    stored = run_dir / "config.toml"
    latest = eng.latest_checkpoint(ckpt_root)
    if (run_dir / "generator.pt").exists():
        raise HpgenError(f"{run_dir} already holds a finished run (generator.pt); choose another --out")
    if stored.exists():
        import tomllib

        new, old = _flat(to_dict(cfg)), _flat(to_dict(config_from_dict(tomllib.loads(stored.read_text()))))
        diff = [k for k in new if new[k] != old.get(k)]
        if diff:
            raise HpgenError(f"{run_dir} holds a run with another config (differs in {', '.join(diff)}); "
                             "choose another --out")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise HpgenError(f"{run_dir} exists and is not an hpgen run directory; choose another --out")
    eng.barrier()  # every rank has checked before rank 0 writes config.toml
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / ".config.toml.tmp"
        tmp.write_text(dump_toml(cfg))
        tmp.replace(stored)
    return latest if resume else None


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def train(cfg: Config, run_dir: Path, resume: bool = True, progress: bool = True, memory_check: bool = True) -> Path:
    device = resolve_device(cfg.train.device)
    info = eng.setup_distributed(device, cfg.dist.timeout_s)
    dev = eng.device_for(device, info)
    run_dir = Path(run_dir)
    P = cfg.dist.pipeline_stages
    dp_rank, dp_size = replica_of(info.world_size, info.rank, P)  # this rank's replica, and D
    method = get_method(cfg.train.method)(cfg)
    if info.world_size > 1 and not getattr(method, "data_parallel", False):
        raise HpgenError(f"train.method={cfg.train.method} does not support data or pipeline parallelism yet "
                         "(its noise and clip choice are per rank); run it on one rank")
    if memory_check:
        _check_memory(cfg, dev, info, dp_size)  # before any clip is decoded or anything is written
    feed = make_feed(cfg, dp_rank, dp_size, replicated=getattr(method, "replicated_clips", False))
    if hasattr(method, "check_parallel"):
        method.check_parallel(feed.num_clips, dp_size, P)
    layout, costs = _layout(cfg, feed.shapes, info.world_size, info.rank)
    pipe = pl.Pipeline(layout, dev, cfg.dist.micro_batches)
    ckpt = prepare_run_dir(run_dir, cfg, resume, info.is_main)
    eng.barrier()
    shapes, num_scales = feed.shapes, cfg.pyramid.num_scales
    mon = Monitor(run_dir, enabled=info.is_main)
    say = print if info.is_main else (lambda *a, **k: None)
    for note in feed.notes:
        say(f"note: {note}")
    if P > 1:
        say(f"hpgen: {P} pipeline stages x {dp_size} replicas; {layout.describe(costs)}")
    if feed.streaming:
        mode = f"streaming {cfg.data.clips_per_step} per rank per step"
    elif getattr(method, "replicated_clips", False):
        mode = f"{method.clips_per_replica} per replica per step, drawn from all"
    else:
        mode = "all every step"
    say(f"hpgen: training {cfg.train.method} on {feed.source.path} ({feed.num_clips} clip(s), {mode}), "
        f"{num_scales} scales on {device} x{info.world_size}; run directory {run_dir}")
    if info.is_main:
        for n, real in enumerate(feed.preview()):
            write_video(run_dir / "reals" / f"scale_{n:02d}.mp4", real, fps=feed.source.fps / shapes[n].rate)

    # Every rank uses the same seed: noise is drawn for the global batch and sliced
    # (ScaleState.randn), which keeps the ranks' RNG streams identical.
    eng.seed_everything(cfg.train.seed)
    model = method.build_model().to(dev)
    precision = cfg.dist.precision
    critic = None
    start_scale, start_step, start_done = 0, 0, False
    if ckpt is not None:
        meta = eng.read_meta(ckpt)
        start_scale, start_step, start_done = meta["scale"], meta["step"], meta["scale_done"]
        say(f"hpgen: resuming from {ckpt} (scale {start_scale}, step {start_step})")

    stop = _StopFlag()
    with stop:
        for n in range(start_scale, num_scales):
            critic = method.grow(model, critic, n)
            nets = [model] + ([critic.to(dev)] if critic is not None else [])
            for net in nets:
                if dp_size > 1:
                    eng.sync_batchnorm(net, pipe.dp_group)
                thr = cfg.dist.checkpoint_min_voxels
                eng.set_activation_checkpointing(net, bool(thr) and shapes[n].voxels >= thr)
                eng.set_channels_last(net, cfg.dist.channels_last)
                eng.set_cpu_conv3d_layout(net, dev.type == "cpu")
            groups = method.param_groups(model, critic, n)
            engines = {name: eng.build_engine(critic if name == "d" else model, g, precision=precision,
                                              zero_stage=cfg.dist.zero_stage, betas=cfg.train.betas,
                                              grad_clip=cfg.train.clip_for(name))
                       for name, g in groups.items()}
            if pipe.pipelined:
                for e in engines.values():
                    pl.defer_allreduce(e)
            step0, done, iters = 0, False, cfg.train.iters(n)
            if ckpt is not None and n == start_scale:
                eng.load_checkpoint(ckpt, engines)
                step0, done = start_step, start_done
            if done:
                continue
            dtype = eng.param_dtype(model)
            cast = lambda reals: [None if r is None else r.to(dtype) for r in reals]  # noqa: E731
            batches = feed.batches(n, step0, iters, dev)
            st = ScaleState(n, shapes, cast(next(batches)), dp_rank=dp_rank, dp_size=dp_size, stages=P,
                            all_mean=lambda t: pl.world_sum(t) / dp_size, pipe=pipe)
            method.begin_scale(model, st)
            bar = tqdm(range(step0, iters), initial=step0, total=iters, desc=f"scale {n}/{num_scales - 1}",
                       disable=not (progress and info.is_main), dynamic_ncols=True, file=sys.stdout)
            t0, last = time.time(), {}
            for step in bar:
                if step > step0 and feed.streaming:
                    st.reals = cast(next(batches))
                    st.cache.clear()  # per-batch tensors (the reconstruction input) are stale
                st.step = step
                lr_factor = cfg.train.lr_factor(n, step)
                if cfg.train.lr_decay_at:  # without a schedule the optimisers keep their rate untouched
                    for e in engines.values():
                        eng.set_lr_factor(e, lr_factor)
                stats = run_iteration(method, model, critic, st, engines, pipe.pipelined)
                done_steps = step + 1
                if done_steps % cfg.train.log_every == 0 or done_steps == iters:
                    local = {k: float(v) for k, v in stats.items()}
                    local[f"peak_gib/rank{info.rank}"] = peak_memory_gib(dev)
                    if cfg.train.lr_decay_at:
                        local["lr_factor"] = lr_factor
                    last = pl.gather_stats(local)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in last.items()}, refresh=False)
                    vox = st.reals[n].numel() / 3 * cfg.train.log_every
                    mon.scalars(cfg.train.steps_before(n) + done_steps, {**last, "voxels_per_s": vox / max(1e-9, time.time() - t0)},
                                scale=n)
                    t0 = time.time()
                stopping = eng.any_rank(stop.raised is not None)
                if stopping or (cfg.train.checkpoint_every and done_steps % cfg.train.checkpoint_every == 0
                                and done_steps < iters):
                    _sync_owned_buffers(method, model, critic, n, layout)
                    path = _checkpoint(run_dir, engines, n, done_steps, False, cfg)
                    if stopping:
                        bar.close()
                        say(f"hpgen: {stop.raised or 'stop request from another rank'} received; checkpoint saved at {path}. "
                            f"Run the same command again to resume.")
                        mon.close()
                        return path
            bar.close()
            _sync_owned_buffers(method, model, critic, n, layout)
            _snapshot(method, model, mon, run_dir, st, n, cfg, feed.source.fps, info.is_main)
            _checkpoint(run_dir, engines, n, iters, True, cfg)

    if info.is_main:
        export_generator(run_dir / "generator.pt", method=method.name, model=model, model_args=method.model_args(),
                         shapes=shapes, config=to_dict(cfg), fps=feed.source.fps)
        say(f"hpgen: done. Outputs in {run_dir}:\n"
            f"  generator   {run_dir / 'generator.pt'}   (hpgen sample {run_dir} --num 4 --out OUT)\n"
            f"  samples     {run_dir / 'samples'}  (one per scale)\n"
            f"  reals       {run_dir / 'reals'}\n"
            f"  tensorboard tensorboard --logdir {run_dir / 'tb'}\n"
            f"  stats       {run_dir / 'stats.jsonl'}")
    mon.close()
    eng.barrier()
    return run_dir / "generator.pt"


def _check_memory(cfg: Config, dev, info, dp_size: int) -> None:
    """Refuse in one line, on every rank alike, when the estimated peak of the scales this
    rank trains exceeds its device's free memory (hpgen/memory.py)."""
    from .data import plan
    from .memory import check_training_fits

    _, shapes, starts = plan(cfg)  # opens the input; decodes no clip
    clips = cfg.data.clips_per_step or max(1, len(starts) // dp_size)
    layout, _ = _layout(cfg, shapes, info.world_size, info.rank)
    mine = [k for k in range(len(shapes)) if layout.owner(k) == layout.stage]
    fits, message = check_training_fits(cfg, shapes, clips, dev, mine,
                                        ranks_on_host=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if eng.any_rank(not fits):
        raise HpgenError(message or "another rank's device lacks the memory this run needs (see its error); "
                                    "shrink the run or pass --no-memory-check")


def run_iteration(method, model, critic, st: ScaleState, engines: dict, pipelined: bool = False) -> dict:
    """One training iteration: the method's phases, each one scalar, one backward and one
    optimiser step on its engine. Returns the phases' statistics (tensors).

    Pipelined, every rank runs every phase: a stage without a part in it back-propagates
    zeros, so all ranks meet in the same gradient all-reduce, which runs after the
    phase's gradients have travelled down the pipeline."""
    method.begin_iteration(model, st)
    stats = {}
    for name, phase in method.phases(model, critic, st):
        loss, s, *after = phase()
        engine = engines[name]
        if pipelined:
            loss = pl.cover_trainable(loss, engine)
        engine.backward(loss)
        for f in after:
            f()
        if pipelined:
            pl.reduce_gradients(engine)
        engine.step()
        stats.update(s)
    return stats


def _gan_from(cfg: Config) -> int:
    """First adversarial scale (the SinGAN family is adversarial from scale 0)."""
    return cfg.train.vae_scales if cfg.train.method == "hpvaegan" else 0


def _layout(cfg: Config, shapes, world_size: int, rank: int):
    return make_layout(world_size, rank, cfg.dist.pipeline_stages, shapes, cfg.model.num_blocks, _gan_from(cfg),
                       cfg.dist.stage_starts)


def _sync_owned_buffers(method, model, critic, n: int, layout) -> None:
    """Pipelined runs: BatchNorm statistics and spectral-norm vectors move only where a
    network runs; copy them from its stage (first replica) to every rank before a
    checkpoint, a snapshot or the export. Parameters are equal everywhere already."""
    if layout.stages == 1:
        return
    for module, k in method.owners(model, critic, n):
        pl.sync_buffers(module, layout.rank_of(layout.owner(k), 0))


def _checkpoint(run_dir: Path, engines: dict, n: int, step: int, scale_done: bool, cfg: Config) -> Path:
    meta = {"scale": n, "step": step, "scale_done": scale_done, "method": cfg.train.method}
    tag = f"scale{n:02d}-step{step:07d}"
    return eng.save_checkpoint(run_dir / "checkpoints", tag, engines, meta, cfg.train.keep_checkpoints, to_dict(cfg))


@torch.no_grad()
def _snapshot(method, model, mon: Monitor, run_dir: Path, st: ScaleState, n: int, cfg: Config, fps: float,
              is_main: bool) -> None:
    """A fixed-seed sample at the end of each scale (its own generator, so the training RNG
    stream, and with it resume equivalence, is untouched)."""
    if not is_main:
        return
    count = max(1, cfg.train.eval_samples)
    scoring = f", then scoring {', '.join(cfg.train.eval_metrics)}" if cfg.train.eval_metrics else ""
    print(f"hpgen: scale {n} done; end-of-scale snapshot: {count} fixed-seed sample(s){scoring} "
          f"(train.eval_samples, train.eval_metrics)", flush=True)
    t0 = time.time()
    was_training = {m: m.training for m in model.modules()}
    model.eval()
    g = torch.Generator(device=st.reals[0].device).manual_seed(cfg.train.seed + 12345)
    fakes = [method.sample(model, st.shapes, batch=1, generator=g, stop=n, tile=cfg.train.sample_tile)[0].float()
             for _ in range(count)]
    fake = fakes[0]
    for m, t in was_training.items():
        m.train(t)
    values = _scale_metrics(run_dir, mon, st, n, cfg, fakes) if cfg.train.eval_metrics else {}
    rate_fps = fps / st.shapes[n].rate
    write_video(run_dir / "samples" / f"scale_{n:02d}.mp4", fake, fps=rate_fps)
    write_video(run_dir / "samples" / f"scale_{n:02d}.png", fake, max_strip_frames=13)
    mon.video(f"fake/scale_{n:02d}", fake, n)
    mon.video(f"real/scale_{n:02d}", st.reals[n][0].float(), n)
    shown = "".join(f", {k} {v:.3g}" for k, v in values.items())
    print(f"hpgen: scale {n} snapshot {run_dir / 'samples' / f'scale_{n:02d}.mp4'}{shown} "
          f"({time.time() - t0:.1f} s)", flush=True)


def _scale_metrics(run_dir: Path, mon: Monitor, st: ScaleState, n: int, cfg: Config, fakes) -> dict:
    """The papers' metrics on the fixed samples; a missing weights package costs a warning,
    never the run."""
    from .metrics.hook import evaluate_samples, log_metrics

    try:
        values = evaluate_samples(st.reals[n][0].float(), fakes, cfg.train.eval_metrics, st.reals[n].device)
    except HpgenError as e:
        print(f"hpgen: warning: scale {n} metrics skipped: {e}")
        return {}
    log_metrics(run_dir, mon.writer, scale=n, step=cfg.train.steps_before(n + 1), values=values)
    return values


def dry_run(cfg: Config) -> str:
    from .data import plan

    source, shapes, starts = plan(cfg)
    gan_from = _gan_from(cfg)
    cols = {"type": ["gan" if n >= gan_from else "vae" for n in range(len(shapes))]}
    P = cfg.dist.pipeline_stages
    layout, costs = _layout(cfg, shapes, P, 0)  # one replica's view
    if P > 1:
        cols["stage"] = [layout.owner(n) for n in range(len(shapes))]
        cols["cost"] = [f"{c / sum(costs):.1%}" for c in costs]
    return (f"# resolved config\n{dump_toml(cfg)}\n"
            f"# input: {source.path}: {source.num_frames} frames {source.info.height}x{source.info.width} "
            f"at {source.fps:.3g} fps; {len(starts)} clip(s) of {cfg.pyramid.clip_frames()} frames "
            f"starting at {starts}\n# pyramid\n{format_table(shapes, cols)}")
