"""Sweeps on Ray Tune: `python -m experiments.run -m key=a,b other=interval(x,y) ...`.

Hydra hands the -m command line to zkynet's Tune sweeper (conf/hydra/sweeper/
tune.yaml, experiments/plugins/); this module is its driver, in the process Hydra
started:
  * the overrides become a search space (experiments.sweep.space), checked with the
    sweeper's settings (experiments.sweep.settings) before Ray starts; a resume is
    checked against what the sweep was run with (experiments.sweep.record);
  * the trials to run now and their numbers (experiments.sweep.plan) go to one Tune
    experiment (experiments.sweep.tuner); every trial is one `experiments.runner.run(cfg)`
    in a Ray worker (experiments.sweep.worker), reporting each epoch to Tune, so a trial
    starts as soon as resources free up and a scheduler can stop a bad one early (its
    decisions recorded: experiments.sweep.decisions);
  * a trial whose worker dies runs again and continues its own MLflow run from its
    last checkpoint; so does an interrupted trial when the sweep is resumed;
  * the sweep is one MLflow run with a child run per trial; whatever happens (a refused
    config, a dead worker, Ctrl-C or SIGTERM at any moment) no run is left RUNNING and
    the Ray processes the sweep started end (the driver's books, experiments.sweep.book).
"""

import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
from hydra.core.singleton import Singleton
from hydra.types import HydraContext
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from omegaconf import DictConfig
from ray import tune

from experiments import lineage
from experiments.interrupts import raise_interrupt
from experiments.sweep import cluster, record, tuner
from experiments.sweep import decisions as scheduler_decisions
from experiments.sweep import plan as sweep_plan
from experiments.sweep import settings as sweeper_settings
from experiments.sweep import space as search_space
from experiments.sweep.book import TrialBook
from experiments.sweep.cluster import ResourcesError, SweepStartError
from experiments.sweep.ranking import rank
from experiments.sweep.settings import Results, Scheduler, SweeperSettings
from experiments.sweep.worker import TRIAL_THREAD_TIMEOUT_SECONDS, TrialContext, trainable
from experiments.tracking import PROJECT_ROOT, connect, default_tracking_uri, experiment_id


class TuneSweep:
    """One sweep, driven from this process: its settings (hydra.sweeper.*), Hydra's context
    and the sweep's primary configuration, as the sweeper plugin was handed them."""

    def __init__(self, settings: SweeperSettings, hydra_context: HydraContext, config: DictConfig):
        self.settings, self.hydra_context, self.config = settings, hydra_context, config
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        self.tracked = bool(config.tracking.enabled)
        self.uri = config.tracking.uri or default_tracking_uri()

    def run(self, arguments: list[str]) -> None:
        """Run the sweep; exits 0 when every trial finished, 1 when one failed or the sweep
        could not start, 130 when interrupted (after printing how to resume), 2 when the
        command line is refused (nothing changed)."""
        _set_up_process()
        with Interrupts() as interrupts:
            self._run(arguments, interrupts)

    def _run(self, arguments: list[str], interrupts: "Interrupts") -> None:
        s = self.settings
        try:
            space = search_space.parse(arguments)
            sweeper_settings.check(s, space.keys, self.sweep_dir)
            now = record.of(arguments, s, [])
            if s.resume:
                recorded = record.read(self.sweep_dir)
                record.check_resume(recorded, now)
                now["experiments"] = recorded["experiments"]
        except (search_space.SearchSpaceError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        client = connect(self.uri) if self.tracked else None
        book, parent = TrialBook(client, None), None
        status, error = "FAILED", None
        try:
            with interrupts.held():  # a signal now waits for the sweep's run and Ray to be up, then stops them
                parent = self._sweep_run(client, arguments) if client is not None else None
                book.sweep_run_id = parent.info.run_id if parent is not None else None
                record.write(self.sweep_dir, now)
                cluster.start(s, {"TUNE_FUNCTION_THREAD_TIMEOUT_S": TRIAL_THREAD_TIMEOUT_SECONDS})
                interrupts.install()  # again: Ray's core worker put its C++ failure handler (abort) in place
                decisions = book.decisions = scheduler_decisions.start()
            gpus = cluster.gpus_per_trial(s)
            cluster.check_resources(s, gpus)
            children = lineage.trials(client, parent) if client is not None and s.resume else []
            plan = sweep_plan.make(space, s, children, now["experiments"], self.sweep_dir)
            now["experiments"].append(plan.experiment)
            record.write(self.sweep_dir, now)
            tuner.say(tuner.describe(s, space, plan, gpus))
            if plan.total:
                book.expected = self._fit(space, plan, parent, book, gpus, decisions, interrupts)
            status = "KILLED" if book.interrupted else "FAILED" if book.errors else "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
        except Exception as e:
            error = e
        finally:
            with interrupts.held(everything=True):  # ending the sweep is not interrupted
                if client is not None and parent is not None:
                    status = self._end(client, parent, book, status, error)
                if ray.is_initialized():
                    ray.shutdown()
        if isinstance(error, SweepStartError):
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2 if isinstance(error, ResourcesError) else 1)
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
                params = [Param(k, v) for k, v in self.settings.loggable().items() if k not in found.data.params]
                if params:
                    client.log_batch(found.info.run_id, params=params)
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

    def _fit(
        self,
        space: search_space.SearchSpace,
        plan: sweep_plan.Plan,
        parent: Any,
        book: TrialBook,
        gpus: float,
        decisions: Any,
        interrupts: "Interrupts",
    ) -> int:
        """This invocation's Tune experiment, run; returns how many Tune trials it had."""
        s, task = self.settings, self.config.task
        packed = None
        if s.packed:
            size = s.pack if s.pack != "auto" else search_space.auto_pack_size(len(plan.trials), cluster.slots(s, gpus))
            packed = book.packs = tuner.packs(plan, int(size))
            tuner.say(f"sweep: {len(plan.trials)} trials in {len(packed)} pack(s) of up to {size}")
        context = TrialContext(
            self.hydra_context,
            self.config,
            Singleton.get_state(),
            space,
            str(self.sweep_dir),
            parent.info.run_id if parent is not None else None,
            s.resources.cpu,
            cluster.jax_environment(gpus, s.compilation_cache, s.jax_platforms),
            decisions,
            pbt_interval=s.pbt.interval if s.scheduler is Scheduler.pbt else 0,
            packs=packed,
            source=lineage.source_tags(PROJECT_ROOT),
            deferred=s.results is Results.best,
        )
        if packed is not None:
            context.rungs, context.reduction_factor = tuner.rungs(s, self.config.trainer.epochs)
            context.pbt = s.pbt if s.scheduler is Scheduler.pbt else None
        search, param_space, total = tuner.search(s, space, plan, task.objective, task.mode, packed)
        run_config = tune.RunConfig(
            name=plan.experiment,
            storage_path=str(self.sweep_dir),
            verbose=0,
            callbacks=[book],
            stop=tuner.trained_out,
            failure_config=tune.FailureConfig(max_failures=0 if packed is not None else s.max_failures),
        )
        tune_config = tune.TuneConfig(
            metric=task.objective,
            mode=task.mode,
            num_samples=total,
            reuse_actors=True,
            scheduler=tuner.scheduler(s, space, self.config, packed is not None, decisions),
            trial_name_creator=tuner.trial_name,
            search_alg=search,
        )
        fitted = tune.Tuner(
            tune.with_resources(trainable(context), {"cpu": s.resources.cpu, "gpu": gpus}),
            param_space=param_space,
            tune_config=tune_config,
            run_config=run_config,
        )
        with interrupts.tune_running(book):
            fitted.fit()
        return total

    # ------------------------------------------------------------------ ending

    def _end(self, client: MlflowClient, parent: Any, book: TrialBook, status: str, error: Exception | None) -> str:
        """Reconcile Tune's trials with their MLflow runs (none left RUNNING), rank them,
        end the sweep's run; returns the sweep's status."""
        run_id = parent.info.run_id
        book.reconcile(client, run_id, self.config)
        children = lineage.trials(client, client.get_run(run_id))
        metric, mode = self.config.task.objective, self.config.task.mode
        table, best = rank(children, metric, mode)
        client.log_text(run_id, table + "\n", lineage.SWEEP_TABLE)
        if best is not None:
            client.log_batch(run_id, metrics=[Metric(f"best_{metric}", best.data.metrics[metric], 0, 0)])
            client.set_tag(run_id, lineage.BEST_RUN, best.info.run_id)
            if best.data.tags.get(lineage.RESULTS) == "deferred":
                self._complete(client, run_id, best)
        failed = [r for r in children if r.info.status == "FAILED"]
        unfinished = [r for r in children if r.info.status not in ("FINISHED", "FAILED")]
        if status == "FINISHED" and (failed or not children):
            status = "FAILED"
        if status == "FINISHED" and unfinished:
            status = "KILLED"
        if error is not None:
            client.set_tag(run_id, lineage.ERROR, f"{type(error).__name__}: {error}"[:5000])
        client.set_terminated(run_id, status)
        ranked = f"{len(children)} trials ranked by {metric} ({mode})\n{table}\n" if children else "no trial ran\n"
        print(f"\nsweep {status}: {ranked}  MLflow run {run_id}; files: {self.sweep_dir}", file=sys.stderr)
        if failed:
            print(f"sweep: {len(failed)} of {len(children)} trials failed", file=sys.stderr)
        return status

    def _complete(self, client: MlflowClient, run_id: str, best: Any) -> None:
        """The best trial's curves, samples and model (its trials left them: results=best)."""
        from experiments.runner import complete_results

        try:
            complete_results(best.info.run_id, self.uri)
            print(f"sweep: the best trial's curves and model are in its run {best.info.run_id}", file=sys.stderr)
        except Exception as e:  # the sweep's outcome stands: say what is missing
            print(f"warning: could not log the best trial's results: {type(e).__name__}: {e}", file=sys.stderr)
            client.set_tag(run_id, lineage.ARTIFACT_ERROR, f"best trial's results: {type(e).__name__}: {e}"[:5000])

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


class Interrupts:
    """SIGINT (Ctrl-C) and SIGTERM (`kill`) end the sweep at any moment: they raise
    KeyboardInterrupt, except inside `held()` (starting Ray, creating the sweep's run:
    raised when the block ends) and `held(everything=True)` (ending the sweep: never),
    and while Tune runs (`tune_running`), where both stop Tune as Ctrl-C does: it ends
    its trials, and the sweep ends them KILLED, resumable."""

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}
        self.holding, self.everything = 0, 0
        self.pending: int | None = None
        self.book: TrialBook | None = None

    def __enter__(self) -> "Interrupts":
        self.install()
        return self

    def install(self) -> None:
        for number in (signal.SIGINT, signal.SIGTERM):
            previous = signal.signal(number, self._handle)
            self.previous.setdefault(number, previous)

    def __exit__(self, *exception: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame: Any) -> None:
        if self.book is not None:  # Tune runs: stop it as Ctrl-C does (its handler, or ours after its first)
            self.book.interrupted_by_signal = True
            if number == signal.SIGTERM:
                os.kill(os.getpid(), signal.SIGINT)
                return
        if self.holding or self.everything:
            self.pending = self.pending or number
            return
        raise_interrupt(number, frame)

    @contextmanager
    def held(self, everything: bool = False) -> Iterator[None]:
        self.holding += 1
        self.everything += everything
        try:
            yield
        finally:
            self.holding -= 1
            self.everything -= everything
        if not self.holding and self.pending is not None and not self.everything:
            number, self.pending = self.pending, None
            raise KeyboardInterrupt(signal.Signals(number).name)

    @contextmanager
    def tune_running(self, book: TrialBook) -> Iterator[None]:
        self.book = book
        try:
            yield
        finally:
            self.book = None


def _set_up_process() -> None:
    """What only a sweep's driver needs: Tune's quiet reporter and logger (the sweep
    prints its own lines)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # read when the Tuner starts
    os.environ["TUNE_FUNCTION_THREAD_TIMEOUT_S"] = TRIAL_THREAD_TIMEOUT_SECONDS
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # every result is in MLflow already
    # a trial that fails before its first epoch returns no result (its run says why); not Tune's error
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    logging.getLogger("ray.tune").setLevel(logging.ERROR)  # its advice (Tuner.restore, ...) is not for a sweep's user


def _quoted(argument: str) -> str:
    return argument if all(c.isalnum() or c in "=.,_-+/:~[]" for c in argument) else f"'{argument}'"
