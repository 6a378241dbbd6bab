"""Sweeps on Ray Tune: `python -m experiments.run -m key=a,b other=interval(x,y) ...`.

Hydra hands the -m command line to zkynet's Tune sweeper (conf/hydra/sweeper/
tune.yaml); this module runs it:
  * the overrides become a Tune search space (experiments.search_space);
  * every trial is one `experiments.runner.run(cfg)` in a Ray worker, reporting
    each epoch's metrics to Tune, so a trial starts as soon as resources free up
    (no batch barrier) and a scheduler (FIFO, ASHA) can stop a bad trial early;
  * workers are kept for the next trial (imports paid once per worker) and share
    JAX's persistent compilation cache (an architecture compiles once per machine);
  * a trial whose worker dies runs again and continues its own MLflow run from its
    last checkpoint (experiments.resume), metrics and all;
  * with hydra.sweeper.pack, trials that differ only in shape-free values train K at
    a time as one Tune trial (experiments.pack): each member is its own MLflow run,
    stopped (ASHA's rung rule among the pack's members) or failed alone;
  * the sweep is one MLflow run with a child run per trial; whatever happens (a
    refused config, a dead worker, Ctrl-C) no run is left RUNNING; an interrupted
    sweep prints the command that resumes it, and finished trials are not rerun.
"""

import contextlib
import fcntl
import functools
import logging
import math
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's quiet reporter: the sweep prints its own lines
for chatty in ("ray", "ray.tune"):
    logging.getLogger(chatty).setLevel(logging.WARNING)

import numpy as np  # noqa: E402
import ray  # noqa: E402
from hydra.core.singleton import Singleton  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from omegaconf import OmegaConf, open_dict  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining  # noqa: E402
from ray.tune.trainable import wrap_function  # noqa: E402

from experiments import lineage, search_space  # noqa: E402
from experiments.lifecycle import Paused  # noqa: E402
from experiments.pack import Pack  # noqa: E402
from experiments.sweep import rank  # noqa: E402
from experiments.tracking import connect, default_tracking_uri, experiment_id  # noqa: E402
from zkynet import checkpoint  # noqa: E402
from zkynet.training import Callback  # noqa: E402
from zkynet.training.callbacks import epoch_line  # noqa: E402

SCHEDULERS = ("fifo", "asha", "pbt")
# what population-based training may change mid-trial: values that change neither shapes nor code
PBT_MUTABLE = ("optimizer.", "model.dropout")
STATE = "tune"  # Tune's own records of the sweep, inside the sweep folder
TRIAL_THREAD_TIMEOUT_SECONDS = "120"  # how long a stopped trial may take to end its MLflow run (its worker waits)
CHECKPOINT_FILE = Path(lineage.CHECKPOINT).name  # what a trial's Tune checkpoint folder holds


@dataclass
class Trial:
    """What a trial's worker needs to build and run its configuration."""

    hydra_context: object
    master_config: object
    singleton_state: dict
    space: search_space.SearchSpace
    sweep_dir: str
    sweep_run_id: object  # None when tracking is off
    cpus: float
    environment: dict  # set before JAX starts in the worker
    pbt_interval: int = 0  # population-based training: checkpoint to Tune every this many epochs
    packs: list = None  # packed trials: each pack's members, [(member number, {key: value}), ...]
    rungs: tuple = ()  # ...and the epochs at which ASHA's rung rule compares a pack's members
    reduction_factor: float = 3


def jax_environment(gpus, compilation_cache):
    """How JAX must start in a trial's worker: on the GPU it was given (a missing one is
    an error, not a silent CPU run) with memory allocated as needed, or a fraction of
    it for a fractional GPU; and with the machine's persistent compilation cache."""
    env = {
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        "JAX_PLATFORMS": "cuda" if gpus else "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(Path(compilation_cache).expanduser()),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    if 0 < gpus < 1:  # fractions share a GPU: each trial takes its share of the memory
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 * gpus:.3f}"
    return env


class TuneSweep:
    def __init__(self, settings, hydra_context, config):
        self.settings, self.hydra_context, self.config = settings, hydra_context, config
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        self.tracked = bool(config.tracking.enabled)
        self.uri = config.tracking.uri or default_tracking_uri()

    def run(self, arguments):
        """Run the sweep; exits 0 when every trial finished, 1 when one failed, 130 when
        interrupted (after printing how to resume), 2 when the sweep cannot be built."""
        try:
            space = search_space.parse(arguments)
            self._check_settings(space)
        except (search_space.SearchSpaceError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        client = connect(self.uri) if self.tracked else None
        parent = self._sweep_run(client, arguments) if client is not None else None
        status, error = "FAILED", None
        trials = _TrialBook(client, parent.info.run_id if parent is not None else None)
        previous_sigterm = signal.getsignal(signal.SIGTERM)
        try:
            gpus = self._start_ray()
            signal.signal(signal.SIGTERM, _as_sigint)  # `kill` stops the sweep like Ctrl-C (after Ray's own handler)
            tuner = self._tuner(space, parent, trials, gpus)
            print(f"sweep: {space.describe()}; {self._plan(gpus)}", file=sys.stderr)
            results = tuner.fit()
            status = "KILLED" if trials.interrupted else "FAILED" if results.num_errors else "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
        except Exception as e:
            error = e
        finally:
            signal.signal(signal.SIGTERM, previous_sigterm)
            if parent is not None:
                status = self._end(client, parent, trials, status, error)
            if ray.is_initialized():
                ray.shutdown()
        if isinstance(error, SweepStartError):
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(1)
        if error is not None:
            raise error
        if status == "KILLED":
            print(f"sweep interrupted; resume it with:\n  {self._resume_command(arguments)}", file=sys.stderr)
            raise SystemExit(130)
        if status != "FINISHED":
            raise SystemExit(1)

    # ------------------------------------------------------------------ setting up

    def _check_settings(self, space):
        s = self.settings
        if s.scheduler == "pbt":
            fixed = [k for k in space.keys if not k.lstrip("+").startswith(PBT_MUTABLE)]
            if not space.keys or fixed:
                raise ValueError(
                    f"hydra.sweeper.scheduler=pbt mutates hyperparameters that change neither shapes "
                    f"nor code ({', '.join(PBT_MUTABLE)}...); sweep some of those"
                    + (f", not {', '.join(fixed)}" if fixed else "")
                )
        if s.scheduler not in SCHEDULERS:
            raise ValueError(f"hydra.sweeper.scheduler must be one of {', '.join(SCHEDULERS)}, got {s.scheduler!r}")
        if not (isinstance(s.num_samples, int) and s.num_samples >= 1):
            raise ValueError(f"hydra.sweeper.num_samples must be a positive integer, got {s.num_samples!r}")
        if s.max_concurrent is not None and not (isinstance(s.max_concurrent, int) and s.max_concurrent >= 1):
            raise ValueError(
                f"hydra.sweeper.max_concurrent must be a positive integer or null, got {s.max_concurrent!r}"
            )
        pack = s.get("pack", 1)
        if pack != "auto" and not (isinstance(pack, int) and pack >= 1):
            raise ValueError(f"hydra.sweeper.pack must be a positive integer or auto, got {pack!r}")
        if pack != 1 and s.scheduler == "pbt":
            raise ValueError(
                "hydra.sweeper.pack cannot be combined with scheduler=pbt: population-based training "
                "moves weights between trials through Tune checkpoints, one per trial; use pack=1"
            )
        if s.resume and not (self.sweep_dir / STATE).exists():
            raise ValueError(
                f"hydra.sweeper.resume=true, but {self.sweep_dir} holds no sweep to resume "
                "(pass the hydra.sweep.dir of the interrupted sweep)"
            )

    def _sweep_run(self, client, arguments):
        """The sweep's MLflow run: created, or on resume the interrupted one, running again."""
        experiment = experiment_id(client, self.uri, self.config.tracking.experiment)
        if self.settings.resume:
            found = lineage.sweep_run(client, experiment, str(self.sweep_dir))
            if found is not None:
                client.update_run(found.info.run_id, status="RUNNING")
                return found
        run = client.create_run(
            experiment,
            run_name=f"sweep {self.sweep_dir.name}",
            tags={lineage.SWEEP: str(self.sweep_dir), lineage.OVERRIDES: " ".join(arguments), **lineage.owner_tags()},
        )
        settings = OmegaConf.to_container(self.settings, resolve=True)
        client.log_batch(
            run.info.run_id, params=[_param(f"sweeper/{k}", v) for k, v in settings.items() if not isinstance(v, dict)]
        )
        print(f"sweep: MLflow run {run.info.run_id}, one child run per trial", file=sys.stderr)
        return run

    def _start_ray(self):
        """Join the cluster at ray.address, or start a local Ray; returns the GPUs each
        trial asks for (resources.gpu, with auto: one when the cluster has GPUs)."""
        address = self.settings.ray.address
        if address not in (None, "auto"):
            _check_reachable(address)
        os.environ["TUNE_FUNCTION_THREAD_TIMEOUT_S"] = TRIAL_THREAD_TIMEOUT_SECONDS  # read by the workers too
        options = dict(
            address=address,
            log_to_driver=False,  # each trial's output: <sweep dir>/<trial>/trial.log
            runtime_env={"env_vars": {"TUNE_FUNCTION_THREAD_TIMEOUT_S": TRIAL_THREAD_TIMEOUT_SECONDS}},
        )
        if address is None:
            options.update(include_dashboard=False, num_cpus=self.settings.ray.num_cpus)
        try:
            ray.init(**options)
        except (ConnectionError, ray.exceptions.AuthenticationError) as e:
            raise SweepStartError(
                f"{e}\n(a cluster started with RAY_AUTH_MODE=token admits only holders of its "
                "token: export RAY_AUTH_MODE=token with its ~/.ray/auth_token or RAY_AUTH_TOKEN, "
                "or pass address=auto on its head node)"
            ) from e
        gpus = self.settings.resources.gpu
        return (1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0) if gpus == "auto" else gpus

    def _tuner(self, space, parent, trials, gpus):
        objective, mode = self.config.task.objective, self.config.task.mode
        resources = {"cpu": self.settings.resources.cpu, "gpu": gpus}
        context = Trial(
            self.hydra_context,
            self.config,
            Singleton.get_state(),
            space,
            str(self.sweep_dir),
            parent.info.run_id if parent is not None else None,
            resources["cpu"],
            jax_environment(gpus, self.settings.compilation_cache),
            self.settings.pbt.interval if self.settings.scheduler == "pbt" else 0,
        )
        param_space, num_samples, max_failures = (
            space.tune_space(self.settings.search),
            self.settings.num_samples,
            self.settings.max_failures,
        )
        if self.settings.get("pack", 1) != 1:
            context.packs = self._packs(space, gpus)
            context.rungs, context.reduction_factor = self._rungs()
            trials.packs = context.packs
            param_space, num_samples = {"pack": tune.grid_search(list(range(len(context.packs))))}, 1
            max_failures = 0  # a pack is not retried: its members' runs end FAILED with the reason
        trainable = tune.with_resources(_trainable(context), resources)
        if self.settings.resume:
            return tune.Tuner.restore(str(self.sweep_dir / STATE), trainable, resume_errored=True)
        run_config = tune.RunConfig(
            name=STATE,
            storage_path=str(self.sweep_dir),
            verbose=0,
            callbacks=[trials],
            stop=trained_out,
            failure_config=tune.FailureConfig(max_failures=max_failures),
        )
        tune_config = tune.TuneConfig(
            metric=objective,
            mode=mode,
            num_samples=num_samples,
            reuse_actors=True,
            scheduler=self._scheduler(space),
            trial_name_creator=trial_name,
            search_alg=self._search(space, objective, mode),
        )
        return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)

    def _packs(self, space, gpus):
        """The trials drawn now and grouped into packs (pack=auto: spread evenly over
        the trial slots this cluster can run at once)."""
        s = self.settings
        variants = space.variants(s.search, s.num_samples, s.seed)
        size = s.pack
        if size == "auto":
            cluster = ray.cluster_resources()
            slots = [int(cluster.get("CPU", 1) // s.resources.cpu)] if s.resources.cpu else []
            slots += [int(cluster.get("GPU", 0) // gpus)] if gpus else []
            slots += [s.max_concurrent] if s.max_concurrent else []
            size = search_space.auto_pack_size(len(variants), min(slots or [1]))
        packs = [[(i, variants[i]) for i in pack] for pack in search_space.packs(variants, size)]
        print(f"sweep: {len(variants)} trials in {len(packs)} pack(s) of up to {size}", file=sys.stderr)
        return packs

    def _rungs(self):
        """ASHA's rung epochs (grace_period * reduction_factor ** k, below max_t), applied
        among a pack's members; none for FIFO."""
        if self.settings.scheduler != "asha":
            return (), 3
        asha, epochs = self.settings.asha, self.config.trainer.epochs
        rungs, t = [], asha.grace_period
        while t < epochs:
            rungs.append(t)
            t *= asha.reduction_factor
        return tuple(rungs), asha.reduction_factor

    def _scheduler(self, space):
        if self.settings.scheduler == "pbt":
            pbt = self.settings.pbt
            return PopulationBasedTraining(
                time_attr="epoch",
                perturbation_interval=pbt.interval,
                synch=True,
                hyperparam_mutations=space.mutations(),
                quantile_fraction=pbt.quantile_fraction,
                resample_probability=pbt.resample_probability,
            )
        if self.settings.scheduler == "asha":
            asha = self.settings.asha
            return ASHAScheduler(
                time_attr="epoch",
                max_t=self.config.trainer.epochs,
                grace_period=asha.grace_period,
                reduction_factor=asha.reduction_factor,
            )
        return FIFOScheduler()

    def _search(self, space, objective, mode):
        limit = self.settings.max_concurrent
        if self.settings.search == "optuna":
            from ray.tune.search import ConcurrencyLimiter
            from ray.tune.search.optuna import OptunaSearch

            optuna = OptunaSearch(metric=objective, mode=mode, seed=self.settings.seed)
            return ConcurrencyLimiter(optuna, limit) if limit else optuna
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(random_state=self.settings.seed, max_concurrent=limit or 0)

    def _plan(self, gpus):
        s = self.settings
        return (
            f"{s.search} search, {s.scheduler} scheduler, {s.num_samples} sample(s); every trial "
            f"{'(a pack) ' if s.get('pack', 1) != 1 else ''}asks Ray for "
            f"{s.resources.cpu} CPU and {gpus} GPU"
            + (f", at most {s.max_concurrent} at once" if s.max_concurrent else "")
        )

    # ------------------------------------------------------------------ ending

    def _end(self, client, parent, trials, status, error):
        """Reconcile Tune's trials with their MLflow runs (none left RUNNING), rank them,
        end the sweep's run; returns the sweep's status."""
        run_id = parent.info.run_id
        trials.reconcile(client, run_id, self.config)
        children = lineage.trials(client, client.get_run(run_id))
        metric, mode = self.config.task.objective, self.config.task.mode
        table, best = rank(children, metric, mode)
        client.log_text(run_id, table + "\n", lineage.SWEEP_TABLE)
        if best is not None:
            client.log_batch(run_id, metrics=[Metric(f"best_{metric}", best.data.metrics[metric], 0, 0)])
            client.set_tag(run_id, lineage.BEST_RUN, best.info.run_id)
        failed = [r for r in children if r.info.status == "FAILED"]
        if status == "FINISHED" and (failed or not children):
            status = "FAILED"
        if error is not None:
            client.set_tag(run_id, lineage.ERROR, f"{type(error).__name__}: {error}"[:5000])
        client.set_terminated(run_id, status)
        ranked = f"{len(children)} trials ranked by {metric} ({mode})\n{table}\n" if children else "no trial ran\n"
        print(f"\nsweep {status}: {ranked}  MLflow run {run_id}; files: {self.sweep_dir}", file=sys.stderr)
        if failed:
            print(f"sweep: {len(failed)} of {len(children)} trials failed", file=sys.stderr)
        return status

    def _resume_command(self, arguments):
        """The command that continues this sweep: its overrides, Hydra's own included (the
        sweeper's settings, a cluster's address), on its folder."""
        given = [*self.config.hydra.overrides.hydra, *arguments]
        kept = [a for a in given if not a.startswith(("hydra.sweep.dir=", "hydra.sweeper.resume=", "hydra.mode="))]
        return " ".join(
            [
                sys.executable,
                "-m",
                "experiments.run",
                "-m",
                *map(_quoted, kept),
                f"hydra.sweep.dir={self.sweep_dir}",
                "hydra.sweeper.resume=true",
            ]
        )


class SweepStartError(RuntimeError):
    """The sweep could not start (Ray unreachable, ...); the message says what to fix."""


def _check_reachable(address, seconds=5.0):
    """Refuse at once a Ray address nothing answers at (ray.init would wait minutes)."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=seconds).close()
    except (OSError, ValueError) as e:
        raise SweepStartError(
            f"cannot reach the Ray cluster at hydra.sweeper.ray.address={address} ({e}); "
            "start it with `ray start --head`, or fix the address (HOST:6379, or auto "
            "on its head node)"
        ) from None


def _as_sigint(number, frame):
    os.kill(os.getpid(), signal.SIGINT)


def _quoted(argument):
    return argument if all(c.isalnum() or c in "=.,_-+/:~[]" for c in argument) else f"'{argument}'"


def _param(key, value):
    return Param(key, str(value)[:6000])


class _TrialBook(tune.Callback):
    """The driver's record of every trial (Tune's status and error), so that the sweep
    can end each trial's MLflow run the way the trial ended, even when its worker
    could not: it died, or the sweep was interrupted. It also prints each trial's
    epochs, one line each, prefixed by the trial."""

    current = None  # this process's book
    packs = None  # packed trials: each pack's members (a Tune trial is a pack)

    def __init__(self, client, sweep_run_id):
        self.client, self.sweep_run_id = client, sweep_run_id
        self.trials, self.statuses = {}, {}  # statuses as of the last step (ending a sweep marks all TERMINATED)
        _TrialBook.current = self

    def __reduce__(self):
        """Tune saves its callbacks with the experiment and loads them when it resumes:
        what it loads then is the resuming process's own book."""
        return _current_book, ()

    def on_step_end(self, iteration, trials, **info):
        self.trials.update((t.trial_id, t) for t in trials)
        self.statuses = {t.trial_id: t.status for t in trials}

    @property
    def interrupted(self):
        """Whether the sweep stopped with trials still to run (Ctrl-C, SIGTERM)."""
        return any(status not in ("TERMINATED", "ERROR") for status in self.statuses.values())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epochs" not in result:  # one of Tune's own (a trial's final result), not an epoch
            return
        if "members" in result:
            print(
                f"[pack {trial_number(str(trial))}] epoch {result['epoch']}/{result['epochs']}: best {result['best']} "
                f"{result[result['best']]:.4g} (member {result['best_member']}), {result['members']} training",
                file=sys.stderr,
                flush=True,
            )
            return
        line = epoch_line({k: v for k, v in result.items() if isinstance(v, (int, float))}, result["epochs"])
        print(f"[trial {trial_number(str(trial))}] {line}", file=sys.stderr, flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.trials[trial.trial_id] = trial
        number, last = trial_number(str(trial)), trial.last_result or {}
        if self.packs is not None:
            if "epochs" in last:
                print(f"[pack {number}] trained {last['epoch']} of {last['epochs']} epochs", file=sys.stderr)
            return
        if "epochs" in last:
            early = ", stopped early by the scheduler" if last["epoch"] < last["epochs"] else ""
            print(f"[trial {number}] trained {last['epoch']} of {last['epochs']} epochs{early}", file=sys.stderr)
            return
        run = self._run_of(number)  # it ended before its first epoch: its run says why
        if run is not None:
            print(
                f"[trial {number}] {run.info.status}: {run.data.tags.get(lineage.ERROR, 'no epoch trained')}",
                file=sys.stderr,
            )

    def _run_of(self, number):
        if self.client is None:
            return None
        found = self.client.search_runs(
            [self.client.get_run(self.sweep_run_id).info.experiment_id],
            max_results=1,
            filter_string=f"tags.{lineage.PARENT} = '{self.sweep_run_id}' and tags.{lineage.SWEEP_JOB} = '{number}'",
            order_by=["attributes.start_time DESC"],
        )
        return found[0] if found else None

    def on_trial_start(self, iteration, trials, trial, **info):
        self.trials[trial.trial_id] = trial

    def on_trial_error(self, iteration, trials, trial, **info):
        self.trials[trial.trial_id] = trial

    def reconcile(self, client, sweep_run_id, config):
        by_number = {
            r.data.tags.get(lineage.SWEEP_JOB): r for r in lineage.trials(client, client.get_run(sweep_run_id))
        }
        for trial in self.trials.values():
            number, status = str(trial_number(str(trial))), self.statuses.get(trial.trial_id, trial.status)
            error = trial.get_error() if status == "ERROR" else None
            if self.packs is not None:  # a pack's trial: its members' runs
                for member, _ in self.packs[int(number)]:
                    _end_run(client, by_number.get(str(member)), status, error, None)
                continue
            run = by_number.get(number)
            if run is None and error is not None:  # it failed before it had a run: composing its config
                run = client.create_run(
                    client.get_run(sweep_run_id).info.experiment_id,
                    run_name=f"{config.run_name or 'trial'} #{number}",
                    tags={
                        lineage.PARENT: sweep_run_id,
                        lineage.SWEEP_JOB: number,
                        lineage.OVERRIDES: " ".join(_trial_overrides(trial)),
                    },
                )
            _end_run(client, run, status, error, trial.last_result)


def _end_run(client, run, status, error, last_result):
    """End a trial's run the way Tune says its trial ended, if nobody did: a worker ended
    while its trial, stopped by the scheduler, was still closing its run. Tune's last
    result says how far it got."""
    if run is None or run.info.status not in ("RUNNING", "SCHEDULED"):
        return
    epoch, epochs = (last_result or {}).get("epoch"), (last_result or {}).get("epochs")
    if error is None and status == "TERMINATED" and epoch is not None and epochs is not None and epoch < epochs:
        client.log_batch(
            run.info.run_id,
            tags=[RunTag(lineage.STOPPED_EARLY, "true"), RunTag(lineage.STOPPED_AT_EPOCH, str(int(epoch)))],
        )
    if error is not None:
        client.set_tag(run.info.run_id, lineage.ERROR, str(error).strip().splitlines()[-1][:5000])
        client.set_terminated(run.info.run_id, "FAILED")
    else:
        client.set_terminated(run.info.run_id, "FINISHED" if status == "TERMINATED" else "KILLED")


def _current_book():
    return _TrialBook.current


def _trial_overrides(trial):
    return [f"{k}={v}" for k, v in (trial.config or {}).items()]


def trained_out(trial_id, result):
    """A trial that trained all its epochs is done: no scheduler decides about it then
    (population-based training would otherwise exploit it once more)."""
    return "epochs" in result and result["epoch"] >= result["epochs"]  # Tune's own results have neither


def trial_name(trial):
    """`trial_7` for Tune's trial number 7 (the index its search gave it: from 0 for
    grid and random search, from 1 for a searcher such as Optuna's)."""
    return f"trial_{trial.experiment_tag.split('_', 1)[0]}"


def trial_number(name):
    return int(name.rsplit("_", 1)[-1])


# ---------------------------------------------------------------------- in the worker

_reporting = threading.Event()  # this worker's trial waits in tune.report, where Tune stops or pauses it
_returned = threading.Event()  # this worker's trial function has returned: its run is closed
_returned.set()


def _trainable(context):
    """train_trial as Tune's trainable, whose stop lets a trial that Tune stopped or paused
    in tune.report close its MLflow run (last metrics, pictures, model) before the worker
    may end: Tune's own stop returns at once, and a sweep's last trial, stopped early,
    lost its pictures and at times its last epoch's metrics. A trial stopped while it
    trains (an interrupted sweep) is not waited for: its run ends KILLED, resumable."""

    class Trial(wrap_function(tune.with_parameters(train_trial, context=context))):
        def cleanup(self):
            _stop_after_closing(super().cleanup)

    return Trial


def _stop_after_closing(cleanup):
    """Tune's cleanup of this worker's trainable, then (if it released the trial from
    tune.report, told to stop) the wait for the trial to close its run."""
    stopped_in_report = _reporting.is_set()
    cleanup()
    if stopped_in_report and not _returned.wait(float(TRIAL_THREAD_TIMEOUT_SECONDS)):
        print(f"a stopped trial did not close its run within {TRIAL_THREAD_TIMEOUT_SECONDS} s", file=sys.stderr)


def _report(result, checkpoint=None):
    """tune.report(result), marked as the place where Tune may stop this trial."""
    _reporting.set()
    try:
        tune.report(result, checkpoint=checkpoint)
    finally:
        _reporting.clear()


def train_trial(hyperparameters, context):
    """One trial, in a Ray worker: its configuration composed as the command line
    would, then trained by the runner, epoch by epoch reported to Tune. Its output
    goes to trial.log in its folder (the driver prints its epochs). An error ends
    the trial's MLflow run FAILED and is not retried: only a worker that dies is."""
    _returned.clear()
    try:
        return _train_trial(hyperparameters, context)
    finally:
        _returned.set()


def _train_trial(hyperparameters, context):
    started = time.perf_counter()
    from experiments.runner import run  # the worker's first trial pays this import, later ones do not

    os.environ.update(context.environment)  # before this worker's JAX starts (its first trial)
    number = trial_number(tune.get_context().get_trial_name())
    Singleton.set_state(context.singleton_state)  # Hydra's config store, as in the driver
    _pin_to_cores(context.cpus)
    if context.packs is not None:
        return _train_pack(run, context.packs[hyperparameters["pack"]], number, context, started)
    folder = Path(context.sweep_dir) / str(number)
    folder.mkdir(parents=True, exist_ok=True)
    overrides = context.space.overrides(hyperparameters)
    with open(folder / "trial.log", "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        cfg = _trial_config(context, number, overrides, folder)
        if cfg is None:
            return
        try:
            state = _tune_state(cfg.seed)
            if state is not None and int(state["meta"]["epoch"]) >= cfg.trainer.epochs:
                return  # handed a finished trial's state (population-based training): nothing left to train
            report = TuneReport(started, hyperparameters, context.pbt_interval)
            run(cfg, callbacks=[report], state=state)
        except Paused:
            raise SystemExit(0) from None  # population-based training goes on with it later
        except Exception:
            traceback.print_exc()  # in trial.log; the run (if it got one) ended FAILED with the error
            return
    if report.stopped:
        raise SystemExit(0)  # how a trial Tune stopped must end (its worker waits for it before the next trial)
    if report.last is not None:  # the last epoch, reported once its run is complete: Tune may end us at once
        _report(report.last)  # (with SystemExit, which must leave this function: its worker waits for that)


def _trial_config(context, number, overrides, folder):
    """The trial's configuration, composed as the command line would; None (and a FAILED
    run saying why) when it cannot be composed (`trainer.epochs=abc`)."""
    try:
        cfg = context.hydra_context.config_loader.load_sweep_config(context.master_config, overrides)
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
        cfg.trainer.progress = False  # many trials share one terminal: plain lines
    return cfg


def _train_pack(run, members, number, context, started):
    """A pack's trial: its members' runs (experiments.pack), trained together; its
    output (every member's) goes to pack_<number>.log in the sweep folder."""
    log_path = Path(context.sweep_dir) / f"pack_{number}.log"
    with open(log_path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        cfgs = []
        for member, values in members:
            folder = Path(context.sweep_dir) / str(member)
            folder.mkdir(parents=True, exist_ok=True)
            cfg = _trial_config(context, member, context.space.overrides(values), folder)
            if cfg is not None:
                cfgs.append(cfg)
        pack = Pack(len(cfgs))
        report = PackReport(
            cfgs[0].task.objective if cfgs else None,
            cfgs[0].task.mode if cfgs else "min",
            context.rungs,
            context.reduction_factor,
            [cfg.launch.trial for cfg in cfgs],
        )
        threads = [
            pack.start_member(
                k, functools.partial(run, cfg, callbacks=[MemberStart(started)], trainer_class=pack.seat(k))
            )
            for k, cfg in enumerate(cfgs)
        ]
        try:
            pack.train(on_epoch_end=report.on_epoch_end)
        except Exception:
            traceback.print_exc()  # every member's run ended FAILED with it
        for thread in threads:
            thread.join()
    if report.stopped:
        raise SystemExit(0)
    if report.last is not None:
        _report(report.last)


def _record_unbuilt_trial(context, number, overrides, error):
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


def _first_lines(error):
    """`Type: message` of an error and of its cause (Hydra's say which override, their cause why)."""
    parts = [error] + ([error.__cause__] if error.__cause__ is not None else [])
    return "; ".join(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}" for e in parts)[
        :5000
    ]


def _tune_state(seed):
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


class TuneReport(Callback):
    """Reports every epoch's record to Tune (the last one once the run is complete, so
    that Tune never ends a trial's worker while its run is still being written),
    and stops training when Tune's scheduler says so: ASHA stops a trial (its run ends FINISHED, tagged as
    stopped early); population-based training pauses it (its run ends SCHEDULED, continued when the
    trial resumes, maybe from another trial's checkpoint with new hyperparameters,
    logged each epoch as hp/<key> metrics). With `pbt_interval`, every that many
    epochs the report carries the checkpoint PBT exploits."""

    stopped = False
    last = None  # the last epoch's report, made by the trial once its run is complete

    def __init__(self, started, hyperparameters, pbt_interval=0):
        self.started = started  # when the trial reached its worker
        self.hyperparameters, self.pbt_interval = hyperparameters, pbt_interval

    def on_fit_start(self, trainer):
        """Also logs startup_seconds: from the trial reaching its worker to its first step
        (imports on a fresh worker, config, data, model, MLflow run, graph picture)."""
        self.tracker = next((c.tracker for c in trainer.callbacks if hasattr(c, "tracker")), None)
        self.checkpointer = next((c for c in trainer.callbacks if hasattr(c, "saved_step")), None)
        if self.tracker is not None:
            self.tracker.log_metrics({"startup_seconds": time.perf_counter() - self.started}, trainer.step)

    def on_epoch_end(self, trainer, epoch, record):
        reported = {k: v for k, v in record.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        reported["epochs"] = trainer.epochs
        if self.pbt_interval and self.tracker is not None:
            self.tracker.log_metrics(
                {f"hp/{k}": v for k, v in self.hyperparameters.items() if isinstance(v, (int, float))}, trainer.step
            )
        if epoch + 1 >= trainer.epochs:
            self.last = reported
            return
        saved = None
        if self.pbt_interval and (epoch + 1) % self.pbt_interval == 0 and self.checkpointer is not None:
            self.checkpointer.save(trainer)
            self.checkpointer.wait()
            saved = tune.Checkpoint.from_directory(str(Path(self.checkpointer.path).parent))
        try:
            _report(reported, checkpoint=saved)
        except SystemExit:  # Tune stops (or pauses) this trial here
            if self.pbt_interval:
                print(f"paused by population-based training after epoch {epoch + 1}", file=sys.stderr)
                raise Paused from None
            else:
                trainer.should_stop = self.stopped = True
                if self.tracker is not None:  # durable first: what its worker may not outlive
                    self.tracker.set_tags({lineage.STOPPED_EARLY: "true", lineage.STOPPED_AT_EPOCH: epoch + 1})
                    self.tracker.flush()
                print(f"stopped early by the scheduler after epoch {epoch + 1}", file=sys.stderr)


class MemberStart(Callback):
    """A packed member's startup_seconds: from its pack reaching the worker to its first step."""

    def __init__(self, started):
        self.started = started

    def on_fit_start(self, trainer):
        tracker = _tracker(trainer)
        if tracker is not None:
            tracker.log_metrics({"startup_seconds": time.perf_counter() - self.started}, trainer.step)


class PackReport:
    """The scheduler inside a pack, after each of its epochs: ASHA's rung rule among the
    members (at a rung epoch, a member below the rung's cutoff, the (1 - 1/reduction_factor)
    quantile of its members' objectives as Tune's ASHA computes it, stops: its run ends
    FINISHED, tagged stopped early), then one report to Tune, carrying the best running
    member's objective: Tune's scheduler may stop the whole pack when even its best member is
    in the bottom of its rung. Tune reports one result stream per trial, so a pack's members
    cannot each be one of its trials."""

    stopped = False
    last = None  # the last epoch's report, made once every member's run is complete

    def __init__(self, objective, mode, rungs, reduction_factor, numbers):
        self.objective, self.sign = objective, 1 if mode == "max" else -1
        self.rungs, self.reduction_factor, self.numbers = rungs, reduction_factor, numbers

    def on_epoch_end(self, population, epoch, records):
        scores = {
            k: self.sign * r[self.objective]
            for k, r in records.items()
            if self.objective in r and math.isfinite(r[self.objective])
        }
        if epoch + 1 in self.rungs and scores:
            cutoff = np.nanpercentile(list(scores.values()), (1 - 1 / self.reduction_factor) * 100)
            for k, score in scores.items():
                if score < cutoff:
                    _stop_early(population.members[k], epoch, "the pack's rung rule (ASHA)")
        running = {k: s for k, s in scores.items() if not population.members[k].should_stop} or scores
        if not running:
            return
        best = max(running, key=running.get)
        reported = {
            self.objective: records[best][self.objective],
            "epoch": epoch + 1,
            "epochs": population.epochs,
            "members": len(running),
            "best_member": self.numbers[best],
            "best": self.objective,
        }
        if epoch + 1 >= population.epochs:
            self.last = reported
            return
        try:
            _report(reported)
        except SystemExit:  # Tune's scheduler stops the whole pack
            self.stopped = True
            for k in records:
                _stop_early(population.members[k], epoch, "the scheduler")


def _stop_early(member, epoch, by):
    member.should_stop = True
    tracker = _tracker(member)
    if tracker is not None:
        tracker.set_tags({lineage.STOPPED_EARLY: "true", lineage.STOPPED_AT_EPOCH: epoch + 1})
    print(f"member {member.index}: stopped early by {by} after epoch {epoch + 1}", file=sys.stderr)


def _tracker(trainer):
    return next((c.tracker for c in trainer.callbacks if hasattr(c, "tracker")), None)


_held_slot = None  # this worker's core slot, held for its lifetime


def _pin_to_cores(cpus):
    """Keep this worker (and so JAX's thread pool, which it sizes by the cores it may
    use) on `cpus` cores of its own: a slot claimed with a file lock, held while the
    worker lives. Left alone, every worker spreads over all cores and they thrash."""
    global _held_slot
    available = sorted(os.sched_getaffinity(0))
    count = max(1, math.ceil(cpus))
    if _held_slot is not None or count >= len(available):
        return
    for slot in range(len(available) // count):
        handle = open(Path(tempfile.gettempdir()) / f"zkynet-core-slot-{slot}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _held_slot = handle
        os.sched_setaffinity(0, available[slot * count : (slot + 1) * count])
        return
