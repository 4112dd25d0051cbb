// Calls py::echo (served by python/py_worker.py) from Node through the engine.
import {
  connect,
  describeError,
  emit,
  shutdownAndExit,
  startWatchdog,
  triggerWithStartupRetry,
} from "./common.mjs";

const stopWatchdog = startWatchdog();
const iii = connect("sdk-test-node-call-python");

let ok = false;
try {
  const result = await triggerWithStartupRetry(iii, {
    function_id: "py::echo",
    payload: { hello: "from node" },
  });
  // The engine adds _caller_worker_id to object payloads; any other extra key is a failure.
  const echo = result?.echo ?? {};
  const extraKeys = Object.keys(echo).filter((k) => k !== "hello" && k !== "_caller_worker_id");
  ok = result?.lang === "python" && echo.hello === "from node" && extraKeys.length === 0;
  emit({ check: "py::echo", ok, result });
  if (!ok) console.error(`node-call-python.mjs: FAIL: unexpected py::echo result ${JSON.stringify(result)}`);
} catch (err) {
  emit({ check: "py::echo", ok: false, error: describeError(err) });
  console.error(`node-call-python.mjs: FAIL: py::echo rejected: ${err?.message ?? err}`);
}

stopWatchdog();
await shutdownAndExit(iii, ok ? 0 : 1);
