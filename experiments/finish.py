"""The end of a run: everything it promises, and what `run()` returns.

Once training is over (or, for a resumed run with nothing left to train, at once)
`Ending.complete()` makes the run's model the best epoch's when a monitor chose
one (early stopping, a best checkpoint; the last epoch's otherwise), evaluates it
once on the test split, and logs what the run promises: the monitors' tags, the
learning curves of every epoch (earlier attempts' too), samples, the model. A run
ends FINISHED only once all of that is in the store; a resumed run whose training
was complete logs what is missing (the model of a run interrupted after its last
epoch) and nothing twice.
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from experiments import artifacts, build, lineage
from zkynet import checkpoint, saved_model
from zkynet.data import Batches
from zkynet.framework.compile import EvalStep
from zkynet.training import BestCheckpoint, Checkpointer, EarlyStopping


@dataclass
class RunResult:
    """What `experiments.run(cfg)` returns."""

    run_id: str | None  # the MLflow run (None: tracking.enabled=false)
    status: str  # FINISHED (a run that fails raises instead)
    metrics: dict  # the last epoch's record, test_* (with a test split) and best_<monitor>
    objective: float  # the task's objective in the last epoch (NaN if none ran)
    model: Any  # the run's model: the best epoch's when a monitor chose one, else the last epoch's
    model_epoch: int | None  # which epoch `model` is
    best_epoch: int | None  # the best epoch by the monitor (None: no monitor)
    checkpoints: dict = field(default_factory=dict)  # {"last": path, "best": path}: files in output_dir
    history: list = field(default_factory=list)  # every epoch's record (earlier attempts' too)
    output_dir: str = ""
    tracking_uri: str | None = None

    def __repr__(self):
        shown = ", ".join(f"{k} {v:.4g}" for k, v in self.metrics.items() if k.startswith(("val_", "test_")))
        return f"RunResult({self.status}, run {self.run_id}, model epoch {self.model_epoch}: {shown})"


class Ending:
    def __init__(self, cfg, task, dataset, model, trainer, tracker, continued):
        """`model` the trained one (its last weights), `trainer` what trained it, `tracker`
        the run's (None: untracked), `continued` whether the run existed before this process."""
        self.cfg, self.task, self.dataset, self.trainer, self.tracker = cfg, task, dataset, trainer, tracker
        self.last_model, self.continued = model, continued

    def complete(self, trained):
        """Log what the run promises (all of it when this process trained, else what is
        missing); returns (RunResult, a line saying which epoch the model is)."""
        tracker, cfg = self.tracker, self.cfg
        history = list(self.trainer.history)
        if tracker is not None:
            tracker.flush()
            if self.continued:
                history = lineage.epoch_history(tracker.client, tracker.run_id) or history
        missing = self._missing(trained)
        best = next((c for c in self.trainer.callbacks if isinstance(c, BestCheckpoint) and c.best_epoch), None)
        model, model_epoch = self.last_model, history[-1]["epoch"] if history else None
        if best is not None and Path(best.path).exists():
            model = self._model_from(checkpoint.load(best.path))
            model_epoch = best.best_epoch
        metrics = dict(history[-1]) if history else {}
        metrics.update(self._test(model, "test" in missing))
        if tracker is not None:
            metrics.update(self._log_monitored())
            tracker.set_tags({lineage.MODEL_EPOCH: model_epoch})
            if cfg.launch.get("deferred"):  # a sweep's trial: drawn for the best one when the sweep ends
                missing -= {"curves", "model"}
            if "curves" in missing and history:
                self._log_results(history, model)
            if "model" in missing and cfg.tracking.log_model:
                self._log_model(model)
        result = RunResult(
            run_id=tracker.run_id if tracker is not None else None,
            status="FINISHED",
            metrics=metrics,
            objective=float(history[-1][self.task.objective]) if history else float("nan"),
            model=model,
            model_epoch=model_epoch,
            best_epoch=best.best_epoch if best is not None else None,
            checkpoints=self._checkpoints(),
            history=history,
            output_dir=str(cfg.output_dir),
            tracking_uri=tracker.uri if tracker is not None else None,
        )
        return result, self._model_line(result, best, history)

    def log_results(self, history, model):
        """The curves, samples and model a sweep's trial left for later (runner.complete_results)."""
        self._log_results(history, model)
        if self.cfg.tracking.log_model:
            self._log_model(model)

    def _missing(self, trained):
        """What to log: everything when this process trained, else what the store lacks."""
        everything = {"curves", "model", "test"}
        if trained or self.tracker is None:
            return everything
        client, run_id = self.tracker.client, self.tracker.run_id
        run = client.get_run(run_id)
        missing = set()
        if lineage.CURVES not in {a.path for a in client.list_artifacts(run_id)}:
            missing.add("curves")
        if not any(str(m.status) == "READY" for m in lineage.logged_models(client, run)):
            missing.add("model")
        if not any(k.startswith("test_") for k in run.data.metrics):
            missing.add("test")
        return missing

    def _model_from(self, state):
        model = build.model(self.cfg)
        model.load_state_dict(state["params"])
        return model

    def _test(self, model, log):
        """The model's metrics on the test split (none without one), logged as test_*."""
        if self.dataset.test is None:
            return {}
        step = EvalStep(
            model, self.task.loss, self.task.metrics, jit=self.cfg.trainer.jit, precision=build.step_precision(self.cfg)
        )
        totals: dict[str, float] = {}
        seen = 0
        for batch in Batches(self.dataset.test, self.cfg.trainer.eval_batch_size, shuffle=False).epoch():
            size = len(batch[0])
            for name, value in step(*batch).items():
                totals[name] = totals.get(name, 0.0) + float(value) * size
            seen += size
        metrics = {f"test_{name}": total / seen for name, total in totals.items()}
        if log and self.tracker is not None:
            self.tracker.log_metrics(metrics, self.trainer.step)
            self.tracker.flush()
        return metrics

    def _log_monitored(self):
        """What early stopping and a best checkpoint decided: tags stopped_early,
        stopped_at_epoch, best_epoch, the metric best_<monitor> (checkpoints/best.npz is
        stored as each best epoch ends: tracking.BestCheckpointLogger)."""
        tracker, trainer = self.tracker, self.trainer
        watchers = [
            c for c in trainer.callbacks if isinstance(c, (BestCheckpoint, EarlyStopping)) and c.best is not None
        ]
        for callback in watchers:
            if isinstance(callback, EarlyStopping) and callback.stopped_epoch is not None:
                tracker.set_tags({lineage.STOPPED_EARLY: "true", lineage.STOPPED_AT_EPOCH: callback.stopped_epoch})
                print(
                    f"early stopping: {callback.monitor} did not improve for {callback.patience} epochs; stopped "
                    f"after epoch {callback.stopped_epoch} (best: epoch {callback.best_epoch})",
                    file=sys.stderr,
                )
        if not watchers:
            return {}
        best = next((c for c in watchers if isinstance(c, BestCheckpoint)), watchers[0])
        tracker.set_tags({lineage.BEST_EPOCH: best.best_epoch})
        metrics = {f"best_{best.monitor}": best.best}
        tracker.log_metrics(metrics, trainer.step)
        return metrics

    def _log_results(self, history, model):
        """Learning curves, the tokenizer, and the looks at the model the task asks for
        (samples: a picture that cannot be drawn is a warning; the curves are promised)."""
        cfg, tracker, folder = self.cfg, self.tracker, Path(self.cfg.output_dir)
        tracker.log_artifact(artifacts.curves_image(history, folder / lineage.CURVES, cfg.run_name))
        tokenizer = self.dataset.info.get("tokenizer")
        if tokenizer is not None:  # saved with the model: ids mean nothing without it
            (folder / "tokenizer.json").write_text(tokenizer.to_json())
            tracker.log_artifact(folder / "tokenizer.json")
        try:
            drawn = artifacts.samples(
                self.task.artifacts,
                model,
                self.dataset,
                folder,
                cfg.run_name,
                cfg.seed,
                cfg.dataset.get("image_shape"),
            )
        except Exception as e:
            print(f"warning: could not draw the samples: {type(e).__name__}: {e}", file=sys.stderr)
            tracker.set_tags({lineage.ARTIFACT_ERROR: f"{type(e).__name__}: {e}"})
            return
        for path in drawn:
            tracker.log_artifact(path)

    def _log_model(self, model):
        """The model as the run's MLflow model, saved first as a zkynet folder and loaded
        back from it for the signature's outputs (what serving will answer); earlier
        models of the run (a resumed run's) are deleted once it is logged."""
        cfg, tracker = self.cfg, self.tracker
        example = self.dataset.validation.inputs[:2]
        earlier = lineage.logged_models(tracker.client, tracker.client.get_run(tracker.run_id))
        folder = saved_model.save(
            model,
            Path(cfg.output_dir) / lineage.MODEL_ARTIFACT,
            build.model_spec(cfg),
            example,
            OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
            self.dataset.info.get("tokenizer"),
        )
        trusted = saved_model.targets(build.model_spec(cfg))  # the classes this run itself built
        output = saved_model.Predictor(folder, trusted).predict(example)
        with tracker.writing("model"):
            tracker.log_model(folder, example, output, cfg.tracking.registered_model)
            for old in earlier:
                tracker.client.delete_logged_model(old.model_id)

    def _checkpoints(self):
        last = next((c.path for c in self.trainer.callbacks if isinstance(c, Checkpointer)), None)
        best = next((c.path for c in self.trainer.callbacks if isinstance(c, BestCheckpoint)), None)
        return {
            "last": str(last) if last is not None and Path(last).exists() else None,
            "best": str(best) if best is not None and Path(best).exists() else None,
        }

    def _model_line(self, result, best, history):
        if result.model_epoch is None:
            return None
        last = history[-1]["epoch"] if history else None
        if best is None or result.model_epoch == last:
            return f"model: epoch {result.model_epoch}" + (" (the last; also the best)" if best else " (the last)")
        load = f"zkynet.load('{result.run_id}', which='last')" if result.run_id else "checkpoints/last.npz"
        return (
            f"model: epoch {result.model_epoch}, the best by {best.monitor} ({best.best:.4g}); the last epoch "
            f"({last}) is {load}"
        )
