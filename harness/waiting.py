"""Waiting on a condition with a deadline (tests and benchmarks): never a bare sleep for a race."""
from __future__ import annotations

import time
from typing import Any, Callable


def wait_until(pred: Callable[[], Any], timeout_s: float, step: Callable[[], Any] | None = None) -> Any:
    """Poll `pred` (running `step` between polls, e.g. one bot loop turn) until true or deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if step is not None:
            step()
        else:
            time.sleep(0.005)
    raise AssertionError(f"condition not met within {timeout_s}s")
