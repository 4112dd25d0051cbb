"""A Python worker for cross-SDK tests. Registers py::echo and py::fail, prints {"ready": true}
once a call to its own py::echo has gone through the engine, then serves until SIGTERM/SIGINT."""

from __future__ import annotations

import sys
from typing import Any

from common import Watchdog, connect, emit, fail, shutdown_and_exit, stay_up_until_signalled, trigger_with_startup_retry


def echo(data: Any) -> dict[str, Any]:
    return {"echo": data, "lang": "python"}


def boom(_data: Any) -> None:
    raise RuntimeError("boom from python")


def main() -> None:
    watchdog = Watchdog("become ready")
    iii = connect("sdk-test-py-worker")
    iii.register_function("py::echo", echo, description="Echo the input back")
    iii.register_function("py::fail", boom, description="Always raises")

    try:
        # dispatch "remote": go through the engine even if the SDK could call its own function in-process.
        probe = trigger_with_startup_retry(
            iii, {"function_id": "py::echo", "payload": {"probe": True}, "dispatch": "remote"}
        )
        if not (isinstance(probe, dict) and probe.get("lang") == "python"):
            raise RuntimeError(f"self-check py::echo returned {probe!r}")
    except Exception as err:  # noqa: BLE001
        fail(f"engine did not route our own function: {err}")
        watchdog.stop()
        shutdown_and_exit(iii, 1)

    watchdog.stop()
    emit({"ready": True})
    stay_up_until_signalled(iii)


if __name__ == "__main__":
    sys.exit(main())
