"""Running code that must not block on a FIFO, without the test itself hanging."""
import os
import threading

import pytest


def without_hanging(fn, path, what=None, seconds=10.0) -> dict:
    """Run ``fn`` in a thread: ``{"value": ...}`` or ``{"error": exception}``. If it is
    still running after ``seconds`` (blocked opening the FIFO ``path``), a writer is opened
    and closed to release it and the test fails with ``what`` (default: reading ``path``
    hung), instead of hanging."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:        # noqa: BLE001 (checked by the caller)
            out["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        t.join(10)
        pytest.fail(what or f"reading the FIFO {path} hung")
    return out
