"""One writer per run, and no run left RUNNING by a process that died.

A process that trains a run holds a *claim* on it for as long as it does:

* on an SQLite store, an exclusive `flock` on `<store>.claims/<run id>.lock` (beside
  the database; the file says which host and pid hold it). Taking it is atomic, and
  the kernel lets go of it when the process dies, however it dies (kill -9 too). A
  RUNNING run whose lock file nobody holds was left by a dead process:
  `end_abandoned_runs` (called as each run starts) ends it KILLED, with the reason;
  so does a RUNNING zkynet run with no lock file at all, once CLAIM_GRACE_SECONDS
  after its creation have passed (a process killed between creating its run and
  claiming it, which takes milliseconds).
* on any other store (a tracking server), a parameter `zkynet.claim.<n>` logged for
  the n-th process to train the run: MLflow refuses to log a parameter again with
  another value, so of two processes claiming the same n, one is refused.

A second claim on a run that is held is refused with RunClaimedError, naming the
holder (host, pid)."""

import fcntl
import os
import socket
import time
import uuid
from pathlib import Path

from mlflow.entities import RunTag

from experiments import lineage
from experiments.schema import ConfigError

CLAIM_PARAM = "zkynet.claim"
CLAIM_GRACE_SECONDS = 30  # a new run is claimed within milliseconds of its creation


class RunClaimedError(ConfigError):
    """Another process trains this run now; the message names it."""


def claims_folder(uri):
    """Where an SQLite store's claims live, or None for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(f"{uri[len('sqlite:///') :]}.claims")


class Claim:
    """This process's claim on a run; `release()` gives it up (the run has ended)."""

    def __init__(self, path=None):
        self.path, self._fd = path, None

    def release(self, forget=True):
        """Give the claim up; `forget=False` (the run could not be ended) keeps its file,
        so that a later process finds the run abandoned and ends it."""
        if self._fd is None:
            return
        try:
            if self.path is not None and forget:
                self.path.unlink(missing_ok=True)  # while locked: a later claimant makes a new file
        finally:
            os.close(self._fd)
            self._fd = None


def claim(client, uri, run_id, attempt=1):
    """This process's claim on run `run_id`, or RunClaimedError naming who holds it.
    `attempt`: the how-manieth process to train the run this one is (remote stores)."""
    folder = claims_folder(uri)
    if folder is None:
        return _claim_remotely(client, run_id, attempt)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_id}.lock"
    holder = f"pid {os.getpid()} on {socket.gethostname()}".encode()
    fd = _locked_new_file(folder, holder)
    try:
        os.link(f"/proc/self/fd/{fd}", path, follow_symlinks=True)  # appears locked: never seen unheld
    except OSError:  # there already (left by a process that died, or held now); or no /proc here
        os.close(fd)
        fd = _take_over(path, run_id)
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder, 0)
    held = Claim(path)
    held._fd = fd
    return held


def _locked_new_file(folder, holder):
    """A new, unnamed (O_TMPFILE) or temporary file in `folder`, locked, saying `holder`."""
    try:
        fd = os.open(folder, os.O_TMPFILE | os.O_RDWR, 0o644)
    except (AttributeError, OSError):  # no O_TMPFILE here: a named temporary file, removed at once
        name = folder / f".{os.getpid()}.{time.monotonic_ns()}.tmp"
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.pwrite(fd, holder, 0)
        os.unlink(name)
        return fd
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, holder, 0)
    return fd


def _take_over(path, run_id):
    """The lock of an existing claim file, if its holder is gone; else RunClaimedError."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunClaimedError(
                f"run {run_id} is being trained by {holder} now; one process at a time trains a run: stop "
                "that one first, or wait for it to end"
            ) from None
        if _same_file(fd, path):  # not a file a releasing holder has just removed
            return fd
        os.close(fd)


def end_abandoned_runs(client, uri):
    """End KILLED every RUNNING run of this SQLite store whose claim no process holds:
    the process training it died (kill -9, a crash, or a store it could not write when
    it ended). Returns their ids."""
    folder = claims_folder(uri)
    if folder is None or not folder.is_dir():
        return []
    ended = _end_unclaimed_runs(client, folder)
    for path in folder.glob("*.lock"):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # alive
        try:
            if not _same_file(fd, path):
                continue
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "its process"
            run_id = path.stem
            try:
                run = client.get_run(run_id)
            except Exception:
                run = None
            if run is not None and run.info.status == "RUNNING":
                _end_killed(client, run_id, holder)
                ended.append(run_id)
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return ended


def _end_unclaimed_runs(client, folder):
    """End KILLED the RUNNING zkynet runs (tagged with their overrides at creation) that
    have no lock file CLAIM_GRACE_SECONDS after their creation: their process died
    before it could claim them."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    ended = []
    oldest = (time.time() - CLAIM_GRACE_SECONDS) * 1000
    running = client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'", max_results=1000)
    for run in running:
        run_id = run.info.run_id
        unclaimed = not (folder / f"{run_id}.lock").exists()
        if lineage.OVERRIDES in run.data.tags and run.info.start_time < oldest and unclaimed:
            _end_killed(client, run_id, "the process that created it")
            ended.append(run_id)
    return ended


def _end_killed(client, run_id, holder):
    reason = (
        f"ended KILLED by a later zkynet process: {holder} stopped training it without ending it "
        f"(kill -9, a crash, or a store it could not write); resume it with trainer.resume={run_id}"
    )
    client.log_batch(run_id, tags=[RunTag(lineage.ERROR, reason)])
    client.set_terminated(run_id, "KILLED", end_time=int(time.time() * 1000))


def _same_file(fd, path):
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _claim_remotely(client, run_id, attempt):
    """A parameter only one process can log with its value: MLflow refuses to change a
    parameter's value, atomically (a unique key in the tracking server's database)."""
    # a value of its own (the token): MLflow accepts the same value logged twice, so two claims
    # made in one second by one process would otherwise both succeed
    me = f"pid {os.getpid()} on {socket.gethostname()} at {time.time():.0f} (claim {uuid.uuid4().hex[:8]})"
    key = f"{CLAIM_PARAM}.{attempt}"
    try:
        client.log_param(run_id, key, me)
    except Exception:
        holder = client.get_run(run_id).data.params.get(key, "another process")
        raise RunClaimedError(
            f"run {run_id} was claimed by {holder} first (attempt {attempt}); one process at a time trains a run"
        ) from None
    return Claim()
