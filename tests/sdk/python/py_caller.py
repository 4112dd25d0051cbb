"""Calls node::echo and math::fail (served by ../node-math-worker.mjs) and a missing function
from Python through the engine, and checks results and error codes."""

from __future__ import annotations

import sys
from typing import Any

from iii import InvocationError

from common import Watchdog, connect, emit, fail, run_checks, shutdown_and_exit, trigger_with_startup_retry


def main() -> None:
    watchdog = Watchdog()
    iii = connect("sdk-test-py-caller")

    def rejection(function_id: str) -> InvocationError | Any:
        """The InvocationError a call raises, or what it returned if it did not raise."""
        try:
            return iii.trigger({"function_id": function_id, "payload": {}, "timeout_ms": 5000})
        except InvocationError as err:
            return err

    def node_echo() -> tuple[bool, dict[str, Any]]:
        # The Node worker may still be registering, so this first call may retry.
        result = trigger_with_startup_retry(iii, {"function_id": "node::echo", "payload": {"hello": "from python"}})
        ok = isinstance(result, dict) and result.get("lang") == "node" and \
            (result.get("echo") or {}).get("hello") == "from python"
        return ok, {"result": result}

    def error_check(function_id: str, code: str) -> tuple[bool, dict[str, Any]]:
        outcome = rejection(function_id)
        if not isinstance(outcome, InvocationError):
            return False, {"unexpectedResult": outcome}
        return outcome.code == code, {"error": {"code": outcome.code, "message": outcome.message}}

    failures = run_checks([
        ("node::echo", node_echo),
        ("math::fail", lambda: error_check("math::fail", "invocation_failed")),
        ("missing function", lambda: error_check("math::does_not_exist", "function_not_found")),
    ])

    watchdog.stop()
    if failures:
        fail(f"{len(failures)} check(s) failed:\n  " + "\n  ".join(failures))
    emit({"done": True, "ok": not failures})
    shutdown_and_exit(iii, 0 if not failures else 1)


if __name__ == "__main__":
    main()
