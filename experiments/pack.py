"""Packed trials: K runs of one architecture trained together as one population.

Each member is still `experiments.runner.run(cfg)`, in a thread of its own, so it
keeps the runner's whole lifecycle: its own MLflow run (params, per-epoch
metrics, checkpoints, pictures, summary) that ends FINISHED, FAILED or KILLED
whatever happens. Only the trainer its run builds differs: a seat at the pack
(`Pack.seat`). Once every member has sat down (or left: refused before
training), the pack's own thread trains them all as one PopulationTrainer, and
each run's fit() returns when its member ends (its history) or raises its
member's error (that run ends FAILED; the others train on).

The members' runs take turns outside training (building, logging, ending: one
at a time, as MLflow's SQLite store and matplotlib prefer), and train together.
"""

import threading
import traceback

from zkynet.training.population import PopulationTrainer


class PackError(RuntimeError):
    """The pack itself failed (its members could not train together): every member fails."""


class Pack:
    def __init__(self, size):
        self.size = size
        self.seats, self.left = {}, set()
        self.changed = threading.Condition()
        self.turn = threading.Lock()  # held by the member run that is not training
        self.error = None

    def seat(self, index):
        """The trainer class of member `index`'s run (called as Trainer is)."""
        return lambda *args, **kwargs: _Seat(self, index, *args, **kwargs)

    def start_member(self, index, run):
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

    def train(self, **population_arguments):
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


class _Seat:
    """What a member's run sees as its trainer: its Trainer arguments, kept until the
    pack trains; then its member (zkynet.training.population.Member) answers."""

    def __init__(
        self,
        pack,
        index,
        model,
        loss,
        optimizer,
        dataset,
        epochs,
        batch_size,
        metrics=None,
        seed=0,
        eval_batch_size=None,
        jit=True,
        callbacks=(),
        devices=1,
        precision="float32",
    ):
        if devices != 1:
            raise PackError("a packed trial trains its members on one device each (trainer.devices=1)")
        self.pack, self.index = pack, index
        self.model, self.loss, self.optimizer, self.dataset = model, loss, optimizer, dataset
        self.epochs, self.batch_size, self.metrics, self.seed = epochs, batch_size, metrics, seed
        self.eval_batch_size, self.jit, self.callbacks = eval_batch_size, jit, list(callbacks)
        self.precision = precision  # packed trials share it (trainer.precision is not PACKABLE)
        self.state, self.member = None, None
        self.history, self.step = [], 0
        self.ended = threading.Event()

    def load_state_dict(self, state):
        self.state = state
        self.step = int(state["optimizer"]["step"])

    @property
    def epoch(self):
        return self.member.epoch if self.member is not None else 0

    def fit(self):
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
        return member.history


def _population(seats, arguments):
    first = seats[0]
    population = PopulationTrainer(
        [s.model for s in seats],
        first.loss,
        [s.optimizer for s in seats],
        first.dataset,
        first.epochs,
        first.batch_size,
        first.metrics,
        seeds=[s.seed for s in seats],
        eval_batch_size=first.eval_batch_size,
        jit=first.jit,
        precision=first.precision,
        callbacks=[s.callbacks for s in seats],
        on_member_end=lambda member: seats[member.index].ended.set(),
        **arguments,
    )
    for seat, member in zip(seats, population.members, strict=True):
        seat.member = member
        if seat.state is not None:
            member.load_state_dict(seat.state)
    return population
