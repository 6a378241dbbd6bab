"""Raising KeyboardInterrupt from a signal handler where Python cannot lose it.

A handler runs between two bytecodes of the main thread, wherever that is, also inside
a garbage collector callback (JAX registers one); an exception raised there is printed
as "Exception ignored in: <function _xla_gc_callback ...>" and dropped, and the run or
sweep goes on as if no signal had come. There, the signal is sent again a moment later.
"""

import gc
import os
import signal
import threading
from types import FrameType

REDELIVER_SECONDS = 0.05


def raise_interrupt(number: int, frame: FrameType | None) -> None:
    """KeyboardInterrupt named after signal `number`, or, if `frame` (where the handler
    interrupted the main thread) is inside a gc callback, the signal again shortly."""
    if _in_gc_callback(frame):
        threading.Timer(REDELIVER_SECONDS, os.kill, (os.getpid(), number)).start()
        return
    raise KeyboardInterrupt(signal.Signals(number).name)


def _in_gc_callback(frame: FrameType | None) -> bool:
    callbacks = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        if frame.f_code in callbacks:
            return True
        frame = frame.f_back
    return False
