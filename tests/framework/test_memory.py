"""zkynet keeps freed memory in the process on glibc (see zkynet.framework.memory)."""
import platform

import pytest

from zkynet.framework import memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's thresholds are glibc's")
def test_glibc_keeps_freed_memory_unless_told_not_to(monkeypatch):
    assert memory.keep_freed_memory()
    monkeypatch.setenv("ZKYNET_MALLOC", "default")
    assert not memory.keep_freed_memory()
