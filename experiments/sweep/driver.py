"""Sweeps on Ray Tune: `python -m experiments.run -m key=a,b other=interval(x,y) ...`.

Hydra hands the -m command line to zkynet's Tune sweeper (conf/hydra/sweeper/
tune.yaml, experiments/plugins/); this module is its driver, in the process Hydra
started:
  * the overrides become a Tune search space (experiments.sweep.space), checked with
    the sweeper's settings (experiments.sweep.settings) before Ray starts;
  * every trial is one `experiments.runner.run(cfg)` in a Ray worker
    (experiments.sweep.worker), reporting each epoch's metrics to Tune, so a trial
    starts as soon as resources free up (no batch barrier) and a scheduler (FIFO,
    ASHA) can stop a bad trial early;
  * a trial whose worker dies runs again and continues its own MLflow run from its
    last checkpoint (experiments.resume), metrics and all;
  * with hydra.sweeper.pack, trials that differ only in shape-free values train K at
    a time as one Tune trial (experiments.sweep.pack): each member is its own MLflow
    run, stopped (ASHA's rung rule among the pack's members) or failed alone;
  * the sweep is one MLflow run with a child run per trial; whatever happens (a
    refused config, a dead worker, Ctrl-C) no run is left RUNNING (the driver's
    books, experiments.sweep.book); an interrupted sweep prints the command that
    resumes it, and finished trials are not rerun.
"""

import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
from hydra.core.singleton import Singleton
from hydra.types import HydraContext
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from omegaconf import DictConfig
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining, TrialScheduler

from experiments import lineage
from experiments.sweep import settings as sweeper_settings
from experiments.sweep import space as search_space
from experiments.sweep.book import Packs, TrialBook
from experiments.sweep.ranking import rank
from experiments.sweep.settings import TUNE_FOLDER, Scheduler, Search, SweeperSettings
from experiments.sweep.trial_names import trial_name
from experiments.sweep.worker import TRIAL_THREAD_TIMEOUT_SECONDS, TrialContext, trainable
from experiments.tracking import connect, default_tracking_uri, experiment_id


def jax_environment(gpus: float, compilation_cache: str) -> dict[str, str]:
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
    """One sweep, driven from this process: its settings (hydra.sweeper.*), Hydra's context
    and the sweep's primary configuration, as the sweeper plugin was handed them."""

    def __init__(self, settings: SweeperSettings, hydra_context: HydraContext, config: DictConfig):
        self.settings, self.hydra_context, self.config = settings, hydra_context, config
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        self.tracked = bool(config.tracking.enabled)
        self.uri = config.tracking.uri or default_tracking_uri()

    def run(self, arguments: list[str]) -> None:
        """Run the sweep; exits 0 when every trial finished, 1 when one failed, 130 when
        interrupted (after printing how to resume), 2 when the sweep cannot be built."""
        _set_up_process()
        try:
            space = search_space.parse(arguments)
            sweeper_settings.check(self.settings, space.keys, self.sweep_dir)
        except (search_space.SearchSpaceError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        client = connect(self.uri) if self.tracked else None
        parent = self._sweep_run(client, arguments) if client is not None else None
        status, error = "FAILED", None
        trials = TrialBook(client, parent.info.run_id if parent is not None else None)
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
            if client is not None and parent is not None:
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

    def _sweep_run(self, client: MlflowClient, arguments: list[str]) -> Any:
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
        params = [Param(key, value[:6000]) for key, value in self.settings.loggable().items()]
        client.log_batch(run.info.run_id, params=params)
        print(f"sweep: MLflow run {run.info.run_id}, one child run per trial", file=sys.stderr)
        return run

    def _start_ray(self) -> float:
        """Join the cluster at ray.address, or start a local Ray; returns the GPUs each
        trial asks for (resources.gpu, with auto: one when the cluster has GPUs)."""
        address = self.settings.ray.address
        if address not in (None, "auto"):
            _check_reachable(address)
        os.environ["TUNE_FUNCTION_THREAD_TIMEOUT_S"] = TRIAL_THREAD_TIMEOUT_SECONDS  # read by the workers too
        options: dict[str, Any] = dict(
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

    def _tuner(self, space: search_space.SearchSpace, parent: Any, trials: TrialBook, gpus: float) -> tune.Tuner:
        objective, mode = self.config.task.objective, self.config.task.mode
        s = self.settings
        resources = {"cpu": s.resources.cpu, "gpu": gpus}
        context = TrialContext(
            self.hydra_context,
            self.config,
            Singleton.get_state(),
            space,
            str(self.sweep_dir),
            parent.info.run_id if parent is not None else None,
            resources["cpu"],
            jax_environment(gpus, s.compilation_cache),
            s.pbt.interval if s.scheduler is Scheduler.pbt else 0,
        )
        param_space, num_samples, max_failures = space.tune_space(s.search.value), s.num_samples, s.max_failures
        if s.packed:
            context.packs = trials.packs = self._packs(space, gpus)
            context.rungs, context.reduction_factor = self._rungs()
            param_space, num_samples = {"pack": tune.grid_search(list(range(len(context.packs))))}, 1
            max_failures = 0  # a pack is not retried: its members' runs end FAILED with the reason
        with_resources = tune.with_resources(trainable(context), resources)
        if s.resume:
            with trials.restoring():
                return tune.Tuner.restore(str(self.sweep_dir / TUNE_FOLDER), with_resources, resume_errored=True)
        run_config = tune.RunConfig(
            name=TUNE_FOLDER,
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
            search_alg=self._search(objective, mode),
        )
        return tune.Tuner(with_resources, param_space=param_space, tune_config=tune_config, run_config=run_config)

    def _packs(self, space: search_space.SearchSpace, gpus: float) -> Packs:
        """The trials drawn now and grouped into packs (pack=auto: spread evenly over
        the trial slots this cluster can run at once)."""
        s = self.settings
        variants = space.variants(s.search.value, s.num_samples, s.seed)
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

    def _rungs(self) -> tuple[tuple[float, ...], float]:
        """ASHA's rung epochs (grace_period * reduction_factor ** k, below max_t), applied
        among a pack's members; none for FIFO."""
        if self.settings.scheduler is not Scheduler.asha:
            return (), 3
        asha, epochs = self.settings.asha, self.config.trainer.epochs
        rungs: list[float] = []
        t: float = asha.grace_period
        while t < epochs:
            rungs.append(t)
            t *= asha.reduction_factor
        return tuple(rungs), asha.reduction_factor

    def _scheduler(self, space: search_space.SearchSpace) -> TrialScheduler:
        if self.settings.scheduler is Scheduler.pbt:
            pbt = self.settings.pbt
            return PopulationBasedTraining(
                time_attr="epoch",
                perturbation_interval=pbt.interval,
                synch=True,
                hyperparam_mutations=space.mutations(),
                quantile_fraction=pbt.quantile_fraction,
                resample_probability=pbt.resample_probability,
            )
        if self.settings.scheduler is Scheduler.asha:
            asha = self.settings.asha
            return ASHAScheduler(
                time_attr="epoch",
                max_t=self.config.trainer.epochs,
                grace_period=asha.grace_period,
                reduction_factor=asha.reduction_factor,
            )
        return FIFOScheduler()

    def _search(self, objective: str, mode: str) -> Any:
        limit = self.settings.max_concurrent
        if self.settings.search is Search.optuna:
            from ray.tune.search import ConcurrencyLimiter
            from ray.tune.search.optuna import OptunaSearch

            optuna = OptunaSearch(metric=objective, mode=mode, seed=self.settings.seed)
            return ConcurrencyLimiter(optuna, limit) if limit else optuna
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(random_state=self.settings.seed, max_concurrent=limit or 0)

    def _plan(self, gpus: float) -> str:
        s = self.settings
        return (
            f"{s.search.value} search, {s.scheduler.value} scheduler, {s.num_samples} sample(s); every trial "
            f"{'(a pack) ' if s.packed else ''}asks Ray for "
            f"{s.resources.cpu:g} CPU and {gpus} GPU"
            + (f", at most {s.max_concurrent} at once" if s.max_concurrent else "")
        )

    # ------------------------------------------------------------------ ending

    def _end(self, client: MlflowClient, parent: Any, trials: TrialBook, status: str, error: Exception | None) -> str:
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

    def _resume_command(self, arguments: list[str]) -> str:
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


def _set_up_process() -> None:
    """What only a sweep's driver needs: Tune's quiet reporter and logger (the sweep
    prints its own lines; ray's own logger keeps the INFO level `import ray` gives it)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # read when the Tuner starts
    logging.getLogger("ray.tune").setLevel(logging.WARNING)


def trained_out(trial_id: str, result: Mapping[str, Any]) -> bool:
    """A trial that trained all its epochs is done: no scheduler decides about it then
    (population-based training would otherwise exploit it once more)."""
    return "epochs" in result and result["epoch"] >= result["epochs"]  # Tune's own results have neither


def _check_reachable(address: str, seconds: float = 5.0) -> None:
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


def _as_sigint(number: int, frame: Any) -> None:
    os.kill(os.getpid(), signal.SIGINT)


def _quoted(argument: str) -> str:
    return argument if all(c.isalnum() or c in "=.,_-+/:~[]" for c in argument) else f"'{argument}'"
