"""Suite-wide settings."""

import os
import shutil
import sys
import tempfile

import pytest

# Programs that take longer than this to compile go into the run's shared JAX cache (below).
CACHE_MIN_COMPILE_SECONDS = "0"


def pytest_configure(config):
    """One JAX persistent compilation cache for the whole test run, shared by every process
    it starts (pytest-xdist workers, the command lines and notebook kernels the tests run):
    a program compiles once per run, not once per process or per TrainStep built. It starts
    empty and is removed at the end, so no run depends on an earlier one. (Sweep trials use
    the sweeper's own compilation_cache setting, as for users.) A JAX_COMPILATION_CACHE_DIR
    already set (the user's, or the one xdist workers inherit from the main process) is kept."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    folder = tempfile.mkdtemp(prefix="zkynet-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", CACHE_MIN_COMPILE_SECONDS)
    config._zkynet_jax_cache = folder
    if "jax" in sys.modules:  # imported before this hook (by a plugin): tell it too
        jax = sys.modules["jax"]
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update(
            "jax_persistent_cache_min_compile_time_secs",
            float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
        )


def pytest_unconfigure(config):
    folder = getattr(config, "_zkynet_jax_cache", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """The slow end-to-end tests first: with one worker per core (pytest-xdist), the
    long ones then run side by side instead of being the last thing left."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def no_autodiff():
    """JAX's autodiff entry points, public and internal, made to raise while the test runs
    (tests/autodiff_guard.py); the names patched. Imported here, not at the top: the
    suite's JAX settings (pytest_configure) come before JAX is imported."""
    from tests.autodiff_guard import refuse_jax_autodiff

    with refuse_jax_autodiff() as patched:
        yield patched
