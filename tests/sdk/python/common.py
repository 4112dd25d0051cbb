"""Shared plumbing for the Python SDK scripts.

Conventions every script follows:
  * the engine URL comes from env III_URL;
  * stdout carries only JSON lines (one observation each); logs go to stderr;
  * a watchdog (env SDK_TEST_TIMEOUT_MS, default 20000) fails the script loudly instead of hanging;
  * exit 0 on success, non-zero with a message on stderr on failure.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

from iii import IIIClient, InitOptions, InvocationError, register_worker

III_URL = os.environ.get("III_URL", "ws://127.0.0.1:49134")
TIMEOUT_MS = int(os.environ.get("SDK_TEST_TIMEOUT_MS", "20000"))
# How long a first call may keep getting function_not_found while the callee is still registering.
STARTUP_RETRY_MS = int(os.environ.get("SDK_STARTUP_RETRY_MS", "8000"))

SCRIPT = os.path.basename(sys.argv[0])


def emit(obj: dict[str, Any]) -> None:
    """Print one observation as a JSON line on stdout."""
    try:
        print(json.dumps(obj), flush=True)
    except (BrokenPipeError, ValueError):
        pass  # nobody is reading any more


def fail(message: str) -> None:
    print(f"{SCRIPT}: FAIL: {message}", file=sys.stderr, flush=True)


class Watchdog:
    """Kills the process (exit 2) if it has not been stopped within `ms` milliseconds.

    os._exit is used on purpose: the SDK runs a non-daemon event-loop thread that would keep
    a normal exit waiting.
    """

    def __init__(self, what: str = "finish", ms: int = TIMEOUT_MS) -> None:
        def expire() -> None:
            fail(f"did not {what} within {ms}ms (SDK_TEST_TIMEOUT_MS)")
            os._exit(2)

        self._timer = threading.Timer(ms / 1000.0, expire)
        self._timer.daemon = True
        self._timer.start()

    def stop(self) -> None:
        self._timer.cancel()


def connect(worker_name: str) -> IIIClient:
    """Connect a worker to the engine at III_URL (blocks until connected or the SDK gives up waiting)."""
    return register_worker(III_URL, InitOptions(worker_name=worker_name))


def describe_error(err: BaseException) -> dict[str, Any]:
    return {
        "type": type(err).__name__,
        "code": getattr(err, "code", None),
        "message": getattr(err, "message", str(err)),
    }


def call(iii: IIIClient, function_id: str, payload: Any) -> dict[str, Any]:
    """Call a function (5 s deadline): `{"result": …}`, or `{"error": {code, message}}` — never raises."""
    try:
        return {"result": iii.trigger({"function_id": function_id, "payload": payload, "timeout_ms": 5000})}
    except InvocationError as err:
        return {"error": {"code": err.code, "message": err.message}}


def wait_for(pred: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Polls `pred` every 20 ms until it holds or `seconds` pass; returns whether it held."""
    deadline = time.monotonic() + seconds
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def trigger_with_startup_retry(iii: IIIClient, request: dict[str, Any], retry_ms: int = STARTUP_RETRY_MS) -> Any:
    """Call a function, retrying while it is not registered yet (function_not_found) or the call
    timed out because the connection is still coming up. Any other outcome is final."""
    deadline = time.monotonic() + retry_ms / 1000.0
    attempt = 0
    while True:
        attempt += 1
        try:
            return iii.trigger({"timeout_ms": 3000, **request})
        except InvocationError as err:
            if err.code not in ("function_not_found", "TIMEOUT") or time.monotonic() >= deadline:
                raise
            print(f"{SCRIPT}: {request['function_id']} not available yet ({err.code}), retry {attempt}",
                  file=sys.stderr, flush=True)
            time.sleep(0.2)


def shutdown_and_exit(iii: IIIClient, code: int) -> None:
    """Shut the SDK down and exit. A watchdog makes sure a stuck shutdown cannot hang the script."""
    guard = Watchdog("shut down", 8000)
    try:
        iii.shutdown()
    except Exception as err:  # noqa: BLE001 - report and carry on exiting
        print(f"{SCRIPT}: shutdown failed: {err!r}", file=sys.stderr, flush=True)
    guard.stop()
    sys.exit(code)


def stay_up_until_signalled(iii: IIIClient) -> None:
    """Worker scripts: serve until SIGTERM/SIGINT, then shut down and exit 0. Also leave when the
    parent process goes away, so a crashed test harness does not leave workers behind."""
    reason: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        reason.append(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    parent = os.getppid()
    while not reason:
        if os.getppid() != parent:
            reason.append("parent exited")
            break
        time.sleep(0.2)
    emit({"stopping": reason[0]})
    shutdown_and_exit(iii, 0)


def run_checks(checks: list[tuple[str, Callable[[], tuple[bool, dict[str, Any]]]]]) -> list[str]:
    """Run named checks in order; each returns (ok, details). Emits one JSON line per check."""
    failures = []
    for name, body in checks:
        try:
            ok, details = body()
        except Exception as err:  # noqa: BLE001 - a crash is a failed check
            ok, details = False, {"error": describe_error(err)}
        emit({"check": name, "ok": ok, **details})
        if not ok:
            failures.append(f"{name}: {json.dumps(details, default=str)}")
    return failures
