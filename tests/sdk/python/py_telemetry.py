"""What the Python SDK sends on /otel as its users get it: the span of each handler it runs,
nested under the engine's span of the call, and the lines of iii_helpers' observability Logger,
queryable through engine::traces::* and engine::logs::list (MODULES.md §6.2–6.3). One JSON line
per check; exit 0 when all pass."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

from iii import InvocationError
from iii_helpers.observability.logger import Logger

from common import Watchdog, connect, emit, fail, run_checks, shutdown_and_exit, trigger_with_startup_retry


def main() -> None:
    watchdog = Watchdog("finish", 60000)
    iii = connect("sdk-test-py-telemetry")
    logger = Logger(service_name="py-telemetry")

    def greet(data: Any) -> dict[str, Any]:
        logger.warn("python greeting", {"who": (data or {}).get("name", "nobody")})
        return {"hello": (data or {}).get("name")}

    iii.register_function("pytel::greet", greet)
    trigger_with_startup_retry(iii, {"function_id": "pytel::greet", "payload": {"name": "probe"}})

    def call(function_id: str, payload: Any) -> Any:
        try:
            return iii.trigger({"function_id": function_id, "payload": payload, "timeout_ms": 5000})
        except InvocationError as err:
            return {"error": {"code": err.code, "message": err.message}}

    def poll(fn: Callable[[], Any], pred: Callable[[Any], bool], seconds: float = 20.0) -> Any:
        deadline = time.monotonic() + seconds
        last = None
        while time.monotonic() < deadline:
            last = fn()
            if pred(last):
                return last
            time.sleep(0.25)
        return last

    def spans() -> tuple[bool, dict[str, Any]]:
        call("pytel::greet", {"name": "Grace"})
        r = poll(lambda: call("engine::traces::list", {"name": "pytel::greet", "search_all_spans": True, "limit": 50}),
                 lambda r: any(s.get("service_name") != "iii" for s in (r or {}).get("spans", [])))
        sdk = next((s for s in (r or {}).get("spans", []) if s.get("service_name") != "iii"), None)
        if sdk is None:
            return False, {"spans": r}
        tree = call("engine::traces::tree", {"trace_id": sdk["trace_id"]})
        roots = tree.get("roots", [])
        ok = bool(roots) and roots[0]["service_name"] == "iii" and \
            any(c["span_id"] == sdk["span_id"] for c in roots[0].get("children", []))
        return ok, {"sdk_span": sdk, "tree": tree}

    def logs() -> tuple[bool, dict[str, Any]]:
        r = poll(lambda: call("engine::logs::list", {"severity_text": "warn"}),
                 lambda r: any(l.get("body") == "python greeting" for l in (r or {}).get("logs", [])))
        log = next((l for l in (r or {}).get("logs", []) if l.get("body") == "python greeting"), None)
        return log is not None, {"log": log, "logs": r}

    failures = run_checks([("handler span nests under the engine's", spans), ("Logger lines arrive", logs)])
    watchdog.stop()
    if failures:
        fail(f"{len(failures)} check(s) failed:\n  " + "\n  ".join(failures))
    emit({"done": True, "ok": not failures})
    shutdown_and_exit(iii, 0 if not failures else 1)


if __name__ == "__main__":
    sys.exit(main())
