"""A Python worker that serves HTTP routes through the engine's iii-http module, as a Python SDK
user writes them: `http` triggers bound with register_trigger, handlers returning
{status_code, headers, body}, and one that streams server-sent events through its response
channel. Prints {"ready": true} once a route answers over real HTTP
(env HTTP_URL), then serves until SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.request
import warnings
from typing import Any

from common import Watchdog, connect, emit, fail, shutdown_and_exit, stay_up_until_signalled

warnings.simplefilter("ignore")  # register_trigger is deprecated for worker-provided types only


def item(req: dict[str, Any]) -> dict[str, Any]:
    return {
        "status_code": 200,
        "headers": {"X-Lang": "python"},
        "body": {"id": req["path_params"]["id"], "q": req["query_params"].get("q"), "path": req["path"]},
    }


def echo(req: dict[str, Any]) -> dict[str, Any]:
    return {"status_code": 201, "body": {"got": req["body"], "method": req["method"]}}


async def events(req: dict[str, Any]) -> None:
    """A streamed response: status and headers as messages, then server-sent events."""
    res = req["response"]
    await res.send_message_async(json.dumps({"type": "set_status", "status_code": 200}))
    await res.send_message_async(json.dumps({"type": "set_headers", "headers": {"content-type": "text/event-stream"}}))
    for i in range(3):
        await res.write(f"data: py {i}\n\n".encode())
        await asyncio.sleep(0.05)
    await res.close_async()


def refuse(_req: dict[str, Any]) -> dict[str, Any]:
    return {"status_code": 418, "headers": ["Content-Type: text/plain"], "body": "short and stout"}


def main() -> None:
    watchdog = Watchdog("become ready")
    iii = connect("sdk-test-py-http")
    for fid, handler, method, path in [
        ("py::item", item, "GET", "/py/items/:id"),
        ("py::echo", echo, "POST", "/py/echo"),
        ("py::teapot", refuse, "GET", "/py/teapot"),
        ("py::events", events, "GET", "/py/events"),
    ]:
        iii.register_function(fid, handler)
        iii.register_trigger({"type": "http", "function_id": fid,
                              "config": {"api_path": path, "http_method": method}})
    base = os.environ["HTTP_URL"]
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(f"{base}/py/items/probe") as r:
                if r.status == 200:
                    break
        except Exception:  # noqa: BLE001 - not routed yet
            pass
        if time.monotonic() > deadline:
            fail("the route never answered")
            shutdown_and_exit(iii, 1)
        time.sleep(0.05)
    watchdog.stop()
    emit({"ready": True})
    stay_up_until_signalled(iii)


if __name__ == "__main__":
    sys.exit(main())
