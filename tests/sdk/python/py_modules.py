"""The in-engine modules as a Python SDK user reaches for them (MODULES.md §1, §3, §4, §6.3 and
the custom-stream rule of PROTOCOL.md §6.1): state::* and the `state` trigger, `publish` and the
`subscribe` trigger, an every-second `cron` trigger, engine::log::*, and a custom stream made
with the SDK's create_stream. The engine runs iii-state, iii-pubsub, iii-cron and iii-stream.
One JSON line per check; exit 0 when all pass."""

from __future__ import annotations

import re
import sys
import threading
import time
import warnings
from typing import Any, Callable

from iii.helpers import create_stream
from iii.stream import IStream
from iii_helpers.stream import StreamDeleteResult, StreamSetResult

import common
from common import Watchdog, connect, emit, fail, run_checks, shutdown_and_exit, trigger_with_startup_retry

# register_trigger and create_stream are deprecated in 0.25 for other workers' triggers; the
# engine's own trigger types (state, cron, pubsub, stream) still use them.
warnings.simplefilter("ignore")


def main() -> None:
    watchdog = Watchdog("finish", 60000)
    iii = connect("sdk-test-py-modules")
    seen: dict[str, list[Any]] = {}
    lock = threading.Lock()

    def recorder(name: str) -> None:
        seen[name] = []

        def handler(data: Any) -> dict[str, Any]:
            if isinstance(data, dict) and data.get("probe"):
                return {"pong": True}
            with lock:
                seen[name].append(data)
            return {}

        iii.register_function(name, handler)

    def call(function_id: str, payload: Any) -> dict[str, Any]:
        return common.call(iii, function_id, payload)

    wait_for = common.wait_for

    recorder("py::on-state")
    recorder("py::on-topic")
    recorder("py::tick")
    recorder("py::on-catalog")
    iii.register_trigger({"type": "state", "function_id": "py::on-state", "config": {"scope": "py-users"}})
    iii.register_trigger({"type": "subscribe", "function_id": "py::on-topic", "config": {"topic": "py-topic"}})
    trigger_with_startup_retry(iii, {"function_id": "py::on-state", "payload": {"probe": True}})

    def state_shapes() -> tuple[bool, dict[str, Any]]:
        results = [
            call("state::set", {"scope": "py-users", "key": "k", "value": {"n": 1}}),
            call("state::set", {"scope": "py-users", "key": "k", "value": {"n": 2}}),
            call("state::get", {"scope": "py-users", "key": "k"}),
            call("state::list", {"scope": "py-users"}),
            call("state::list_groups", {}),
            call("state::delete", {"scope": "py-users", "key": "k"}),
            call("state::get", {"scope": "py-users", "key": "k"}),
            call("state::list_groups", {}),
        ]
        want = [
            {"result": {"old_value": None, "new_value": {"n": 1}}},
            {"result": {"old_value": {"n": 1}, "new_value": {"n": 2}}},
            {"result": {"n": 2}},
            {"result": [{"n": 2}]},
            {"result": {"groups": ["py-users"]}},
            {"result": {"n": 2}},
            {"result": None},
            {"result": {"groups": []}},
        ]
        return results == want, {"results": results}

    def state_errors() -> tuple[bool, dict[str, Any]]:
        missing = call("state::get", {"scope": "py-users"})
        wrong = call("state::list", {"scope": 7})
        ok = missing.get("error", {}).get("code") == "deserialization_error" and \
            wrong.get("error", {}).get("code") == "deserialization_error"
        return ok, {"missing": missing, "wrong": wrong}

    def state_events() -> tuple[bool, dict[str, Any]]:
        wait_for(lambda: len(seen["py::on-state"]) >= 3)
        time.sleep(0.3)
        kinds = [(e["event_type"], e["old_value"], e["new_value"]) for e in seen["py::on-state"]]
        want = [("state:created", None, {"n": 1}), ("state:updated", {"n": 1}, {"n": 2}),
                ("state:deleted", {"n": 2}, None)]
        return kinds == want, {"kinds": kinds}

    def pubsub() -> tuple[bool, dict[str, Any]]:
        time.sleep(0.3)
        r = call("publish", {"topic": "py-topic", "data": {"message": "Hello PubSub!"}})
        call("publish", {"topic": "elsewhere", "data": {"x": 1}})
        wait_for(lambda: len(seen["py::on-topic"]) >= 1)
        time.sleep(0.3)
        ok = r == {"result": None} and seen["py::on-topic"] == [{"message": "Hello PubSub!"}]
        return ok, {"publish": r, "received": seen["py::on-topic"]}

    def cron() -> tuple[bool, dict[str, Any]]:
        trigger = iii.register_trigger(
            {"type": "cron", "function_id": "py::tick", "config": {"expression": "*/1 * * * * *"}}
        )
        ticked = wait_for(lambda: len(seen["py::tick"]) >= 2, 4.0)
        trigger.unregister()
        first = seen["py::tick"][0] if seen["py::tick"] else {}
        stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")
        ok = ticked and first.get("trigger") == "cron" and \
            bool(stamp.match(first.get("scheduled_time", ""))) and bool(stamp.match(first.get("actual_time", "")))
        return ok, {"ticks": len(seen["py::tick"]), "first": first}

    def engine_log() -> tuple[bool, dict[str, Any]]:
        r = call("engine::log::warn", {"message": "py low stock", "data": {"sku": "p-1"}})
        return r == {"result": None}, {"result": r}

    class Catalog(IStream[Any]):
        def __init__(self) -> None:
            self.items: dict[tuple[str, str], Any] = {}

        async def get(self, input: Any) -> Any:
            return self.items.get((input.group_id, input.item_id))

        async def set(self, input: Any) -> Any:
            old = self.items.get((input.group_id, input.item_id))
            self.items[(input.group_id, input.item_id)] = input.data
            return StreamSetResult(old_value=old, new_value=input.data)

        async def delete(self, input: Any) -> Any:
            old = self.items.pop((input.group_id, input.item_id), None)
            return StreamDeleteResult(old_value=old)

        async def list(self, input: Any) -> list[Any]:
            return [v for (g, _), v in self.items.items() if g == input.group_id]

        async def list_groups(self, input: Any) -> list[str]:
            return sorted({g for g, _ in self.items})

        async def update(self, input: Any) -> Any:  # not registered by create_stream
            return None

    catalog = Catalog()
    create_stream(iii, "py-catalog", catalog)
    iii.register_trigger({"type": "stream", "function_id": "py::on-catalog", "config": {"stream_name": "py-catalog"}})

    def custom_stream() -> tuple[bool, dict[str, Any]]:
        key = {"stream_name": "py-catalog", "group_id": "books", "item_id": "b1"}
        trigger_with_startup_retry(iii, {"function_id": "stream::list(py-catalog)", "payload": key})
        time.sleep(0.2)
        results = [
            call("stream::set", {**key, "data": {"title": "Dune"}}),
            call("stream::get", key),
            call("stream::list", key),
            call("stream::list_groups", key),
            call("stream::delete", key),
        ]
        want = [
            {"result": {"old_value": None, "new_value": {"title": "Dune"}}},
            {"result": {"title": "Dune"}},
            {"result": [{"title": "Dune"}]},
            {"result": ["books"]},
            {"result": {"old_value": {"title": "Dune"}}},
        ]
        wait_for(lambda: len(seen["py::on-catalog"]) >= 2)
        time.sleep(0.3)
        events = [(e["event"]["type"], e["event"]["data"]) for e in seen["py::on-catalog"]]
        ok = results == want and events == [("create", {"title": "Dune"}), ("delete", {"title": "Dune"})]
        return ok, {"results": results, "events": events}

    failures = run_checks([
        ("state shapes", state_shapes),
        ("state errors", state_errors),
        ("state events", state_events),
        ("pubsub", pubsub),
        ("cron every second", cron),
        ("engine::log::warn", engine_log),
        ("custom stream", custom_stream),
    ])
    watchdog.stop()
    if failures:
        fail(f"{len(failures)} check(s) failed:\n  " + "\n  ".join(failures))
    emit({"done": True, "ok": not failures})
    shutdown_and_exit(iii, 0 if not failures else 1)


if __name__ == "__main__":
    sys.exit(main())
