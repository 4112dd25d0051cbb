"""Durable queues as a Python SDK user reaches for them (MODULES.md §2): TriggerAction.Enqueue
and its receipt, the job's payload, retries then the dead letter, FIFO order per message group
through a retry, a durable:subscriber trigger fed by iii::durable::publish, and an unknown queue.
The engine runs iii-queue with queues `jobs` (concurrency 2, max_retries 1, backoff 50 ms) and
`orders` (fifo, group field `customer`). One JSON line per check; exit 0 when all pass."""

from __future__ import annotations

import sys
import threading
import time
import warnings
from typing import Any, Callable

from iii import InvocationError, TriggerAction

import common
from common import Watchdog, connect, emit, fail, run_checks, shutdown_and_exit, trigger_with_startup_retry

warnings.simplefilter("ignore")  # register_trigger is deprecated for worker-provided types only


def main() -> None:
    watchdog = Watchdog("finish", 60000)
    iii = connect("sdk-test-py-queue")
    lock = threading.Lock()
    received: list[Any] = []
    orders: list[str] = []
    published: list[Any] = []
    broken_calls = [0]
    failed_once: set[str] = set()

    def send_email(data: Any) -> dict[str, Any]:
        if isinstance(data, dict) and data.get("probe"):
            return {"pong": True}
        with lock:
            received.append(data)
        return {"sent": True}

    def broken(data: Any) -> dict[str, Any]:
        with lock:
            broken_calls[0] += 1
        raise RuntimeError("inventory service down")

    def order(data: Any) -> dict[str, Any]:
        with lock:
            orders.append(data["n"])
            first = data["n"] == "a-1" and data["n"] not in failed_once
            failed_once.add(data["n"])
        if first:
            raise RuntimeError("try again")
        time.sleep(0.01)
        return {}

    def on_created(data: Any) -> dict[str, Any]:
        with lock:
            published.append(data)
        return {}

    iii.register_function("pyq::send-email", send_email)
    iii.register_function("pyq::broken", broken)
    iii.register_function("pyq::order", order)
    iii.register_function("pyq::on-created", on_created)
    iii.register_trigger({"type": "durable:subscriber", "function_id": "pyq::on-created", "config": {"topic": "py.created"}})
    trigger_with_startup_retry(iii, {"function_id": "pyq::send-email", "payload": {"probe": True}})

    def enqueue(queue: str, function_id: str, payload: Any) -> dict[str, Any]:
        try:
            action = TriggerAction.Enqueue(queue=queue)
            return {"result": iii.trigger({"function_id": function_id, "payload": payload, "action": action})}
        except InvocationError as err:
            return {"error": {"code": err.code, "message": err.message}}

    def call(function_id: str, payload: Any) -> dict[str, Any]:
        return common.call(iii, function_id, payload)

    def wait_for(pred: Callable[[], bool], seconds: float = 8.0) -> bool:
        return common.wait_for(pred, seconds)

    def receipt() -> tuple[bool, dict[str, Any]]:
        r = enqueue("jobs", "pyq::send-email", {"to": "grace@example.com"})
        wait_for(lambda: len(received) >= 1)
        rid = (r.get("result") or {}).get("messageReceiptId")
        ok = isinstance(rid, str) and len(rid) == 36 and received == [{"to": "grace@example.com"}]
        return ok, {"enqueue": r, "received": received}

    def dead_letter() -> tuple[bool, dict[str, Any]]:
        enqueue("jobs", "pyq::broken", {"sku": "p-9"})
        wait_for(lambda: broken_calls[0] >= 2)
        dlq: list[Any] = []
        for _ in range(100):
            dlq = call("engine::queue::dlq_messages", {"topic": "jobs"}).get("result") or []
            if dlq:
                break
            time.sleep(0.02)
        ok = broken_calls[0] == 2 and len(dlq) == 1 and dlq[0]["payload"] == {"sku": "p-9"} and \
            "inventory service down" in dlq[0]["error"]["message"]
        return ok, {"calls": broken_calls[0], "dlq": dlq}

    def fifo() -> tuple[bool, dict[str, Any]]:
        for n in ["a-0", "a-1", "b-0", "a-2", "b-1"]:
            enqueue("orders", "pyq::order", {"customer": n[0], "n": n})
        wait_for(lambda: len(orders) >= 6)
        time.sleep(0.2)
        group_a = [n for n in orders if n.startswith("a")]
        group_b = [n for n in orders if n.startswith("b")]
        return group_a == ["a-0", "a-1", "a-1", "a-2"] and group_b == ["b-0", "b-1"], {"orders": orders}

    def subscriber() -> tuple[bool, dict[str, Any]]:
        r = call("iii::durable::publish", {"topic": "py.created", "data": {"id": "u-7"}})
        wait_for(lambda: len(published) >= 1)
        return r == {"result": None} and published == [{"id": "u-7"}], {"publish": r, "published": published}

    def unknown_queue() -> tuple[bool, dict[str, Any]]:
        r = enqueue("nope", "pyq::send-email", {})
        err = r.get("error") or {}
        return err.get("code") == "enqueue_error" and err.get("message") == "Queue 'nope' not found", r

    failures = run_checks([
        ("enqueue receipt and payload", receipt),
        ("retries then dead letter", dead_letter),
        ("fifo order through a retry", fifo),
        ("durable subscriber", subscriber),
        ("unknown queue", unknown_queue),
    ])
    watchdog.stop()
    if failures:
        fail(f"{len(failures)} check(s) failed:\n  " + "\n  ".join(failures))
    emit({"done": True, "ok": not failures})
    shutdown_and_exit(iii, 0 if not failures else 1)


if __name__ == "__main__":
    sys.exit(main())
