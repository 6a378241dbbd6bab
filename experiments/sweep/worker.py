"""A sweep's trials, in the Ray worker processes that train them.

Every trial is one `experiments.runner.run(cfg)`, its configuration composed as the
command line would, reporting each epoch to Tune (experiments.sweep.reports). A
packed trial (hydra.sweeper.pack) trains its members' runs together
(experiments.sweep.pack). Workers are kept for the next trial: imports are paid once
per worker, and what the next trial shares with the last is kept too: its composed
configuration (experiments.sweep.compose) and its compiled steps (experiments.sweep.
steps; other workers of the machine share JAX's persistent compilation cache).

What the driver hands the workers is one TrialContext, which Ray serialises into
its object store (tune.with_parameters); what a worker process keeps between its
trials lives in one WorkerProcess, owned by the process's trainable (TrialTrainable).
Nothing else crosses between the driver and a worker.
"""

import contextlib
import fcntl
import functools
import logging
import math
import os
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.types import HydraContext
from omegaconf import DictConfig, open_dict
from ray import tune
from ray.tune.trainable import wrap_function

from experiments import lineage
from experiments.lifecycle import Paused
from experiments.sweep import steps
from experiments.sweep.compose import Composer
from experiments.sweep.exploit import PackExploit
from experiments.sweep.pack import Pack
from experiments.sweep.plan import NUMBER
from experiments.sweep.reports import MemberStart, PackReport, TuneReport, Verdict, placement
from experiments.sweep.settings import Pbt
from experiments.sweep.space import SearchSpace
from experiments.sweep.trial_names import trial_number
from experiments.tracking import connect, default_tracking_uri
from zkynet import checkpoint

TRIAL_THREAD_TIMEOUT_SECONDS = "120"  # how long a stopped trial may take to end its MLflow run (its worker waits)
CHECKPOINT_FILE = Path(lineage.CHECKPOINT).name  # what a trial's Tune checkpoint folder holds
PROFILE_ENV = "ZKYNET_SWEEP_PROFILE"  # a folder: profile every trial there (experiments.bench.trial_cost)


@dataclass
class TrialContext:
    """What every trial's worker needs to build and run its configuration: made by the
    driver, serialised once by Ray."""

    hydra_context: HydraContext
    master_config: DictConfig
    singleton_state: dict[Any, Any]  # Hydra's singletons (its config store) as in the driver
    space: SearchSpace
    sweep_dir: str
    sweep_run_id: str | None  # None when tracking is off
    cpus: float
    environment: dict[str, str]  # set before JAX starts in the worker
    decisions: Any  # the sweep's scheduler decisions (experiments.sweep.decisions): why a stopped trial stopped
    pbt_interval: int = 0  # population-based training: checkpoint to Tune every this many epochs
    # packed trials: each pack's members by pack number, {pack: [(member number, {key: value}), ...]}
    packs: dict[int, list[tuple[int, dict[str, Any]]]] | None = None
    rungs: tuple[float, ...] = ()  # ...and the epochs at which ASHA's rung rule compares a pack's members
    reduction_factor: float = 3
    pbt: Pbt | None = None  # ...and population-based training among a pack's members
    source: dict[str, str] | None = None  # the code's git commit, found once by the driver (lineage.source_tags)
    deferred: bool = True  # curves, samples and model: for the best trial only, when the sweep ends


class WorkerProcess:
    """What one worker process keeps across the trials it trains (one at a time): whether
    its trial waits in tune.report, where Tune stops or pauses it; whether its trial
    function has returned (its run is closed); the core slot it holds for its lifetime."""

    def __init__(self) -> None:
        self.reporting = threading.Event()
        self.returned = threading.Event()
        self.returned.set()
        self.core_slot: int | None = None  # the file descriptor holding its lock
        self.trials = 0  # trials it started
        self.jax_started = False
        self.programs = steps.Programs()  # compiled steps, kept for the next trial of the same program
        self.composer = Composer()  # composed configurations, kept for the next trial of the same groups

    def set_up(self, context: TrialContext) -> None:
        """Before a trial: JAX's environment (read when this worker's JAX starts, at its
        first trial), Hydra's config store as in the driver, this worker's cores."""
        if not self.jax_started:
            _start_jax(context.environment)
            Singleton.set_state(context.singleton_state)  # Hydra's config store, as in the driver
            self.jax_started = True
        logging.getLogger("ray.tune").setLevel(logging.WARNING)
        self.pin_to_cores(context.cpus)

    @contextlib.contextmanager
    def trial_running(self) -> Iterator[None]:
        """Around a trial function: set once it has returned (its run is closed)."""
        self.returned.clear()
        try:
            yield
        finally:
            self.returned.set()

    def report(self, result: dict[str, Any], checkpoint: tune.Checkpoint | None = None) -> None:
        """tune.report(result), marked as the place where Tune may stop this trial."""
        self.reporting.set()
        try:
            tune.report(result, checkpoint=checkpoint)
        finally:
            self.reporting.clear()

    def stop_after_closing(self, cleanup: Callable[[], None]) -> None:
        """Tune's cleanup of this worker's trainable, then (if it released the trial from
        tune.report, told to stop) the wait for the trial to close its run."""
        stopped_in_report = self.reporting.is_set()
        cleanup()
        if stopped_in_report and not self.returned.wait(float(TRIAL_THREAD_TIMEOUT_SECONDS)):
            print(f"a stopped trial did not close its run within {TRIAL_THREAD_TIMEOUT_SECONDS} s", file=sys.stderr)

    def pin_to_cores(self, cpus: float) -> None:
        """Keep this worker (and so JAX's thread pool, which it sizes by the cores it may
        use) on `cpus` cores of its own: a slot claimed with a file lock, held while the
        worker lives. Left alone, every worker spreads over all cores and they thrash."""
        available = sorted(os.sched_getaffinity(0))
        count = max(1, math.ceil(cpus))
        if self.core_slot is not None or count >= len(available):
            return
        for slot in range(len(available) // count):
            lock = os.open(
                Path(tempfile.gettempdir()) / f"zkynet-core-slot-{slot}.lock", os.O_WRONLY | os.O_CREAT, 0o666
            )
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock)
                continue
            self.core_slot = lock  # open, hence locked, while this process lives
            os.sched_setaffinity(0, available[slot * count : (slot + 1) * count])
            return


def _start_jax(environment: dict[str, str]) -> None:
    """JAX's environment for this worker, before its first computation: XLA's memory settings
    (read from the environment when the device is first used), and JAX's own flags, which
    it read from the environment when it was imported (by the trial's unpickling, before
    any of this could be set): updated through its config."""
    os.environ.update(environment)
    import jax

    flags = {
        "jax_platforms": ("JAX_PLATFORMS", str),
        "jax_compilation_cache_dir": ("JAX_COMPILATION_CACHE_DIR", str),
        "jax_persistent_cache_min_compile_time_secs": ("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", float),
        "jax_persistent_cache_min_entry_size_bytes": ("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", int),
    }
    for flag, (name, kind) in flags.items():
        if name in environment:
            jax.config.update(flag, kind(environment[name]))


@dataclass
class TrialCall:
    """What the trial function receives: its hyperparameters (Tune's config) and its worker."""

    hyperparameters: dict[str, Any]
    worker: WorkerProcess


def trainable(context: TrialContext) -> type:
    """train_trial as Tune's trainable, whose stop lets a trial that Tune stopped or paused
    in tune.report close its MLflow run (last metrics, pictures, model) before the worker
    may end: Tune's own stop returns at once, and a sweep's last trial, stopped early,
    lost its pictures and at times its last epoch's metrics. A trial stopped while it
    trains (an interrupted sweep) is not waited for: its run ends KILLED, resumable."""
    function_trainable: Any = wrap_function(tune.with_parameters(train_trial, context=context))

    class TrialTrainable(function_trainable):
        def setup(self, config: dict[str, Any]) -> None:
            super().setup(config)
            self.worker = WorkerProcess()  # this actor is this worker process, for its lifetime

        def _trainable_func(self, config: dict[str, Any]) -> Any:
            return super()._trainable_func(TrialCall(config, self.worker))

        def cleanup(self) -> None:
            self.worker.stop_after_closing(super().cleanup)

    return TrialTrainable


def train_trial(call: TrialCall, context: TrialContext) -> None:
    """One trial, in a Ray worker: its configuration composed as the command line
    would, then trained by the runner, epoch by epoch reported to Tune. Its output
    goes to trial.log in its folder (the driver prints its epochs). An error ends
    the trial's MLflow run FAILED and is not retried: only a worker that dies is."""
    with call.worker.trial_running(), _profiled(call.worker):
        _train_trial(call.hyperparameters, context, call.worker)


@contextlib.contextmanager
def _profiled(worker: "WorkerProcess") -> Iterator[None]:
    """With ZKYNET_SWEEP_PROFILE=<folder> (experiments.bench.trial_cost): the trial's thread
    profiled, and its wall time, in files of that folder (`<pid>-<n>`; a worker's first
    trial `-first`)."""
    folder = os.environ.get(PROFILE_ENV)
    worker.trials += 1
    if not folder:
        yield
        return
    import cProfile
    import json

    name = f"{os.getpid()}-{worker.trials}" + ("-first" if worker.trials == 1 else "")
    profiler, started = cProfile.Profile(), time.perf_counter()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        profiler.dump_stats(Path(folder) / f"{name}.prof")
        (Path(folder) / f"{name}.json").write_text(json.dumps({"seconds": time.perf_counter() - started}))


def _train_trial(hyperparameters: dict[str, Any], context: TrialContext, worker: WorkerProcess) -> None:
    started = time.perf_counter()
    from experiments.runner import run  # the worker's first trial pays this import, later ones do not

    worker.set_up(context)  # before this worker's JAX starts (its first trial)
    name = tune.get_context().get_trial_name()
    number = trial_number(name)
    if context.packs is not None:
        _train_pack(run, context.packs[number], number, name, context, started, worker)
        return
    hyperparameters = {k: v for k, v in hyperparameters.items() if k != NUMBER}
    folder = Path(context.sweep_dir) / str(number)
    folder.mkdir(parents=True, exist_ok=True)
    overrides = context.space.overrides(hyperparameters)
    with open(folder / "trial.log", "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        cfg = _trial_config(context, worker.composer, number, overrides, folder)
        if cfg is None:
            return
        report = TuneReport(
            started, hyperparameters, worker.report, context.pbt_interval, Verdict(context.decisions, name)
        )
        try:
            state = _tune_state(cfg.seed)
            if state is not None and int(state["meta"]["epoch"]) >= cfg.trainer.epochs:
                return  # handed a finished trial's state (population-based training): nothing left to train
            run(cfg, callbacks=[report], state=state, make_trainer=steps.trainer_maker(worker.programs, cfg))
        except Paused:
            raise SystemExit(0) from None  # population-based training goes on with it later
        except KeyboardInterrupt:
            raise SystemExit(0) from None  # the sweep is ending: the run ended KILLED, resumable
        except Exception:
            traceback.print_exc()  # in trial.log; the run (if it got one) ended FAILED with the error
            return
    if report.stopped:
        raise SystemExit(0)  # how a trial Tune stopped must end (its worker waits for it before the next trial)
    if report.last is not None:  # the last epoch, reported once its run is complete: Tune may end us at once
        worker.report(report.last)  # (with SystemExit, which must leave this function: its worker waits for that)


def _trial_config(
    context: TrialContext, composer: Composer, number: int, overrides: list[str], folder: Path
) -> DictConfig | None:
    """The trial's configuration, composed as the command line would; None (and a FAILED
    run saying why) when it cannot be composed (`trainer.epochs=abc`)."""
    try:
        cfg = composer(context.hydra_context, context.master_config, overrides, context.space.keys)
    except Exception as e:  # this trial has no config, hence no run of its own yet
        traceback.print_exc()
        _record_unbuilt_trial(context, number, overrides, e)
        return None
    with open_dict(cfg):
        choices = cfg.hydra.runtime.choices
        cfg.run_name = cfg.run_name or f"{choices.get('model')}-{choices.get('dataset')} #{number}"
        del cfg["hydra"]
        cfg.output_dir = str(folder)
        cfg.launch.overrides = overrides
        cfg.launch.sweep_run_id = context.sweep_run_id
        cfg.launch.trial = number
        cfg.launch.source = context.source
        cfg.launch.deferred = context.deferred
        cfg.launch.tags = placement()
        cfg.launch.shared = str(Path(context.sweep_dir) / "shared")  # what trials draw once (graph pictures)
        cfg.trainer.progress = False  # many trials share one terminal: plain lines
    return cfg


def _train_pack(
    run: Callable[..., float],
    members: list[tuple[int, dict[str, Any]]],
    number: int,
    name: str,
    context: TrialContext,
    started: float,
    worker: WorkerProcess,
) -> None:
    """A pack's trial: its members' runs (experiments.sweep.pack), trained together; its
    output (every member's) goes to pack_<number>.log in the sweep folder."""
    log_path = Path(context.sweep_dir) / f"pack_{number}.log"
    with open(log_path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        cfgs = []
        for member, values in members:
            folder = Path(context.sweep_dir) / str(member)
            folder.mkdir(parents=True, exist_ok=True)
            cfg = _trial_config(context, worker.composer, member, context.space.overrides(values), folder)
            if cfg is not None:
                cfgs.append(cfg)
        pack = Pack(len(cfgs))
        report = PackReport(
            cfgs[0].task.objective if cfgs else None,
            cfgs[0].task.mode if cfgs else "min",
            context.rungs,
            context.reduction_factor,
            [cfg.launch.trial for cfg in cfgs],
            worker.report,
            Verdict(context.decisions, name),
            PackExploit.of(context, cfgs),
        )
        threads = [
            pack.start_member(
                k, functools.partial(run, cfg, callbacks=[MemberStart(started)], make_trainer=pack.seat(k))
            )
            for k, cfg in enumerate(cfgs)
        ]
        traced = report.exploit.traced if isinstance(report.exploit, PackExploit) else ()
        try:
            pack.train(on_epoch_end=report.on_epoch_end, traced=traced)
        except Exception:
            traceback.print_exc()  # every member's run ended FAILED with it
        for thread in threads:
            thread.join()
    if report.stopped or report.interrupted:
        raise SystemExit(0)
    if report.last is not None:
        worker.report(report.last)


def _record_unbuilt_trial(context: TrialContext, number: int, overrides: list[str], error: Exception) -> None:
    """A FAILED child run for a trial whose config could not be composed: no trial is lost."""
    if context.sweep_run_id is None:
        return
    config = context.master_config
    client = connect(config.tracking.uri or default_tracking_uri())
    run = client.create_run(
        client.get_run(context.sweep_run_id).info.experiment_id,
        run_name=f"trial #{number}",
        tags={
            lineage.PARENT: context.sweep_run_id,
            lineage.SWEEP_JOB: str(number),
            lineage.OVERRIDES: " ".join(overrides),
            lineage.ERROR: _first_lines(error),
        },
    )
    client.set_terminated(run.info.run_id, "FAILED")


def _first_lines(error: BaseException) -> str:
    """`Type: message` of an error and of its cause (Hydra's say which override, their cause why)."""
    parts = [error] + ([error.__cause__] if error.__cause__ is not None else [])
    return "; ".join(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}" for e in parts)[
        :5000
    ]


def _tune_state(seed: int) -> dict | None:
    """The training state Tune hands this trial (population-based training: the
    checkpoint of the trial it exploits), or None. It goes on with this trial's own
    data order (seed)."""
    given = tune.get_checkpoint()
    if given is None:
        return None
    with given.as_directory() as folder:
        state = checkpoint.load(Path(folder) / CHECKPOINT_FILE)
    state["meta"]["seed"] = seed
    return state
