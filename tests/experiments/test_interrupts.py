"""A signal handler's KeyboardInterrupt is never lost inside a garbage collector callback."""

import gc
import signal
import sys
import time

import pytest

from experiments.interrupts import raise_interrupt


def test_outside_a_gc_callback_the_interrupt_is_raised_at_once():
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        raise_interrupt(signal.SIGTERM, sys._getframe())


def test_inside_a_gc_callback_the_signal_is_sent_again_instead_of_being_dropped():
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda number, frame: received.append(number))

    def callback(phase, info):  # like JAX's _xla_gc_callback: an exception raised here is dropped
        raise_interrupt(signal.SIGUSR1, sys._getframe())

    gc.callbacks.append(callback)
    try:
        gc.collect()  # the callback runs at its start and stop: no exception escapes it
    finally:
        gc.callbacks.remove(callback)
    deadline = time.monotonic() + 5
    while len(received) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    signal.signal(signal.SIGUSR1, previous)
    assert received == [signal.SIGUSR1, signal.SIGUSR1]  # delivered again, once per interrupted callback
