"""zkynet keeps freed memory in the process on glibc (see zkynet.framework.memory)."""

import os
import platform
import subprocess
import sys

import pytest

from zkynet.framework import memory

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's settings are glibc's")

# A compiled step whose temporaries are one 50 MB block (above glibc's largest mmap
# threshold, as the benchmark transformer's 61 MB are), run 42 times: the page faults of the
# last 32 (the first calls run on threads of XLA's pool that have not allocated it yet).
FAULTS = """
import resource
import jax
import jax.numpy as jnp
import zkynet
zkynet.keep_freed_memory()  # what a TrainStep does as training starts
step = jax.jit(lambda x: jnp.cumsum(x * 2)[::4096].sum())
x = jnp.ones(6 * 2**20, jnp.float32)
for i in range(42):
    if i == 10:
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step(x).block_until_ready()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


def _faults(script=FAULTS, **env):
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env={**os.environ, **env}
    )
    return int(result.stdout.split()[-1])


@glibc
def test_glibc_keeps_freed_memory_unless_told_not_to(monkeypatch):
    assert memory.keep_freed_memory()
    monkeypatch.setenv("ZKYNET_MALLOC", "default")
    assert not memory.keep_freed_memory()


@glibc
@pytest.mark.slow  # two processes, each running a 50 MB step 42 times
def test_a_compiled_steps_large_temporaries_are_reused_not_page_faulted_in_again():
    """With glibc's defaults each call maps its 50 MB of temporaries fresh: 12,288 pages
    faulted in per call; with zkynet's settings the heaps keep them (0-2 of 190 calls
    faulted the block in again, measured; without the top pad, 0-190 of 190)."""
    kept, default = _faults(), _faults(ZKYNET_MALLOC="default")
    assert default > 31 * 12_000
    assert kept < default / 4  # fewer than 8 of the 32 calls fault the block in


@glibc
def test_importing_zkynet_leaves_glibc_as_it_was():
    """Only training (or an explicit call) keeps freed memory: an import changes no
    process-wide setting, so the same step faults its temporaries in as with glibc's defaults."""
    only_imported = FAULTS.replace("zkynet.keep_freed_memory()", "import zkynet.framework.compile, zkynet.training")
    assert only_imported != FAULTS
    imported, default = _faults(only_imported), _faults(ZKYNET_MALLOC="default")
    assert default > 31 * 12_000
    assert imported > default / 2
