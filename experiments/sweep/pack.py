"""Packed trials: K runs of one architecture trained together as one population.

Each member is still `experiments.runner.run(cfg)`, in a thread of its own, so it
keeps the runner's whole lifecycle: its own MLflow run (params, per-epoch
metrics, checkpoints, pictures, summary) that ends FINISHED, FAILED or KILLED
whatever happens. Only the trainer its run builds differs: a seat at the pack
(`Pack.seat`, which the runner calls with Trainer's arguments). Once every member
has sat down (or left: refused before training), the pack's own thread trains them
all as one PopulationTrainer, and each run's fit() returns when its member ends (its
history) or raises its member's error (that run ends FAILED; the others train on).

The members' runs take turns outside training (building, logging, ending: one
at a time, as MLflow's SQLite store and matplotlib prefer), and train together.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from zkynet.training import Callback, PopulationTrainer
from zkynet.training.population import Member
from zkynet.training.trainer import Record


class PackError(RuntimeError):
    """The pack itself failed (its members could not train together): every member fails."""


class Pack:
    def __init__(self, size: int):
        self.size = size
        self.seats: dict[int, PackSeat] = {}
        self.left: set[int] = set()
        self.changed = threading.Condition()
        self.turn = threading.Lock()  # held by the member run that is not training
        self.error: BaseException | None = None

    def seat(self, index: int) -> Callable[..., PackSeat]:
        """What builds member `index`'s trainer in its run: called with Trainer's arguments."""
        return lambda **trainer_arguments: PackSeat(self, index, trainer_arguments)

    def start_member(self, index: int, run: Callable[[], object]) -> threading.Thread:
        """`run()` (member `index`'s whole run) in a thread of its own, taking turns."""

        def member():
            self.turn.acquire()
            try:
                run()
            except BaseException:  # the run ended FAILED (or KILLED) with it, and said why
                traceback.print_exc()
            finally:
                with self.changed:
                    if index not in self.seats:
                        self.left.add(index)
                    self.changed.notify_all()
                self.turn.release()

        thread = threading.Thread(target=member, name=f"pack member {index}", daemon=True)
        thread.start()
        return thread

    def train(self, **population_arguments: Any) -> None:
        """In the pack's thread: once every member sat down or left, train the seated
        ones together (extra PopulationTrainer arguments: `on_epoch_end`)."""
        with self.changed:
            self.changed.wait_for(lambda: len(self.seats) + len(self.left) >= self.size)
            seats = [self.seats[k] for k in sorted(self.seats)]
        if not seats:
            return
        try:
            population = _population(seats, population_arguments)
            population.fit()
        except BaseException as e:
            self.error = e
            raise
        finally:
            for seat in seats:
                seat.ended.set()


class PackSeat:
    """What a member's run sees as its trainer: the arguments it would build a Trainer
    with (`trainer_arguments`, by keyword), kept until the pack trains; then its member
    (zkynet.training.population.Member) answers."""

    def __init__(self, pack: Pack, index: int, trainer_arguments: dict[str, Any]):
        if trainer_arguments.get("devices", 1) != 1:
            raise PackError("a packed trial trains its members on one device each (trainer.devices=1)")
        self.pack, self.index = pack, index
        self.arguments = trainer_arguments
        self.callbacks: list[Callback] = list(trainer_arguments.get("callbacks", ()))
        self.state: dict | None = None
        self.member: Member | None = None
        self.history: list[Record] = []
        self.step = 0
        self.ended = threading.Event()

    def load_state_dict(self, state: dict) -> None:
        self.state = state
        self.step = int(state["optimizer"]["step"])

    @property
    def epoch(self) -> int:
        return self.member.epoch if self.member is not None else 0

    def fit(self) -> list[Record]:
        """Wait (not holding the turn) for this member's end; its history, or its error."""
        with self.pack.changed:
            self.pack.seats[self.index] = self
            self.pack.changed.notify_all()
        self.pack.turn.release()
        try:
            self.ended.wait()
        finally:
            self.pack.turn.acquire()
        member = self.member
        if member is not None:
            self.history, self.step = member.history, member.step
        if member is None or (member.running and self.pack.error is not None):
            raise PackError(
                f"the pack failed: {type(self.pack.error).__name__}: {self.pack.error}"
            ) from self.pack.error
        if member.error is not None:
            raise member.error
        if member.status == "KILLED":  # the sweep is ending: its run ends KILLED, resumable
            raise KeyboardInterrupt("the sweep is ending")
        return member.history


def _population(seats: list[PackSeat], extra: dict[str, Any]) -> PopulationTrainer:
    """The seats' members as one population: what they share (architecture, loss, data,
    epochs, batch sizes, metrics, compilation, precision: trainer.precision is not
    PACKABLE) from the first seat's arguments; models, optimizers, seeds and callbacks each
    their own."""
    first = seats[0].arguments
    population = PopulationTrainer(
        [s.arguments["model"] for s in seats],
        first["loss"],
        [s.arguments["optimizer"] for s in seats],
        first["dataset"],
        first["epochs"],
        first["batch_size"],
        first.get("metrics"),
        seeds=[s.arguments.get("seed", 0) for s in seats],
        eval_batch_size=first.get("eval_batch_size"),
        jit=first.get("jit", True),
        precision=first.get("precision", "float32"),
        callbacks=[s.callbacks for s in seats],
        on_member_end=lambda member: seats[member.index].ended.set(),
        **extra,
    )
    for seat, member in zip(seats, population.members, strict=True):
        seat.member = member
        if seat.state is not None:
            member.load_state_dict(seat.state)
    return population
