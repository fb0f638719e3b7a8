"""Waiting for what a local stack does in the background (a stream consumer, a queue's consumer): poll a
check until it gives something truthy or the time is up, in a bounded loop that stops by itself."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for[T](check: Callable[[], T], seconds: float = 30.0, interval: float = 0.2) -> T:
    """The check's first truthy answer within `seconds`, else its last answer (for the assertion)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    return check()
