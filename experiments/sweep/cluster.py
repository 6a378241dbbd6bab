"""The Ray cluster a sweep runs on (in the driver): joined or started, what each trial
asks of it (refused at once when no node has that much: Ray would wait forever), and
how JAX must start in a trial's worker on what it was given."""

import logging
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray

from experiments.sweep.settings import SweeperSettings

# Ray's own notes that a user cannot act on (a local Ray the sweep starts and stops itself)
QUIET_LOGGERS = ("ray._private.authentication.authentication_token_setup", "ray._private.worker")


class SweepStartError(RuntimeError):
    """The sweep cannot start (Ray unreachable, ...); the message says what to fix."""


class ResourcesError(SweepStartError):
    """Every trial asks for more than any node of the cluster has (a command to fix)."""


@contextmanager
def _sigterm_kept() -> Iterator[None]:
    """ray.init, which would otherwise put a SIGTERM handler of its own in place as it
    begins (sys.exit at any point of Ray's start, even inside a gc callback, where the
    exit is lost): the sweep's (driver.Interrupts) holds the signal until Ray is up."""
    import ray._private.utils as ray_utils

    original = ray_utils.set_sigterm_handler
    ray_utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler = original


def start(settings: SweeperSettings, environment: Mapping[str, str]) -> None:
    """Join the cluster at ray.address, or start a local Ray (`environment`: what every
    worker process of this sweep starts with)."""
    address = settings.ray.address
    if address not in (None, "auto"):
        _check_reachable(address)
    options: dict[str, Any] = dict(
        address=address,
        log_to_driver=False,  # each trial's output: <sweep dir>/<trial>/trial.log
        runtime_env={"env_vars": dict(environment)},
    )
    if address is None:
        options.update(include_dashboard=False, num_cpus=settings.ray.num_cpus)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with _sigterm_kept():
            ray.init(**options)
    except (ConnectionError, ray.exceptions.AuthenticationError) as e:
        raise SweepStartError(
            f"{e}\n(a cluster started with RAY_AUTH_MODE=token admits only holders of its "
            "token: export RAY_AUTH_MODE=token with its ~/.ray/auth_token or RAY_AUTH_TOKEN, "
            "or pass address=auto on its head node)"
        ) from e


def gpus_per_trial(settings: SweeperSettings) -> float:
    """resources.gpu, with auto: one when the cluster has GPUs, else none."""
    gpus = settings.resources.gpu
    if gpus == "auto":
        return 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return float(gpus)


def check_resources(settings: SweeperSettings, gpus: float) -> None:
    """Refuse, before any trial, what no node of the cluster can give one trial (a pack
    is one trial), naming what the nodes have."""
    cpus = float(settings.resources.cpu)
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(node.get("CPU", 0) >= cpus and node.get("GPU", 0) >= gpus for node in nodes):
        return
    asked = [f"hydra.sweeper.resources.cpu={cpus:g}"] + ([f"hydra.sweeper.resources.gpu={gpus:g}"] if gpus else [])
    has = "; ".join(f"{node.get('CPU', 0):g} CPU, {node.get('GPU', 0):g} GPU" for node in nodes) or "no node"
    raise ResourcesError(
        f"every trial asks Ray for {' and '.join(asked)}, but no node of the cluster has that much "
        f"(its node{'s' if len(nodes) > 1 else ''}: {has}); ask for less, or run on a cluster that has it"
    )


def slots(settings: SweeperSettings, gpus: float) -> int:
    """How many trials the cluster can run at once (pack=auto spreads the trials over them)."""
    cluster = ray.cluster_resources()
    counts = [int(cluster.get("CPU", 1) // settings.resources.cpu)] if settings.resources.cpu else []
    counts += [int(cluster.get("GPU", 0) // gpus)] if gpus else []
    counts += [settings.max_concurrent] if settings.max_concurrent else []
    return max(1, min(counts or [1]))


def jax_environment(gpus: float, compilation_cache: str, platforms: str | None = None) -> dict[str, str]:
    """How JAX must start in a trial's worker: on the GPU it was given (a missing one is
    an error, not a silent CPU run; `platforms` overrides that) with memory allocated as
    needed, or a share of it for a fractional GPU; and with the machine's persistent
    compilation cache."""
    env = {
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        "JAX_PLATFORMS": platforms or ("cuda" if gpus else "cpu"),
        "JAX_COMPILATION_CACHE_DIR": str(Path(compilation_cache).expanduser()),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    if 0 < gpus < 1:  # fractions share a GPU: each trial takes its share of the memory
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 * gpus:.3f}"
    return env


def given_devices() -> dict[str, str]:
    """In a trial's worker: where it runs and on what (tags of its run)."""
    context = ray.get_runtime_context()
    gpus = context.get_accelerator_ids().get("GPU", [])
    given = {"node": context.get_node_id(), "host": socket.gethostname()}
    given["gpus"] = ",".join(map(str, gpus)) if gpus else "none"
    given["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    for name in ("XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_PREALLOCATE", "JAX_PLATFORMS"):
        if name in os.environ:
            given[name.lower()] = os.environ[name]
    return given


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
