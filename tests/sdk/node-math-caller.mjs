// Calls the functions of node-math-worker.mjs through the engine and checks results and errors.
import {
  connect,
  describeError,
  emit,
  shutdownAndExit,
  startWatchdog,
  triggerWithStartupRetry,
} from "./common.mjs";

const stopWatchdog = startWatchdog();
const iii = connect("sdk-test-node-math-caller");
const failures = [];

function check(name, ok, details) {
  emit({ check: name, ok, ...details });
  if (!ok) failures.push(`${name}: ${JSON.stringify(details)}`);
}

// Expects the call to reject; returns the error (or null if it resolved).
async function rejection(request) {
  try {
    const result = await iii.trigger({ timeoutMs: 5000, ...request });
    return { resolved: result };
  } catch (err) {
    return { error: err };
  }
}

// 1. math::add — the worker may still be registering, so this first call may retry.
try {
  const result = await triggerWithStartupRetry(iii, { function_id: "math::add", payload: { a: 2, b: 3 } });
  check("math::add", result?.sum === 5 && Object.keys(result).length === 1, { result });
} catch (err) {
  check("math::add", false, { error: describeError(err) });
}

// 2. math::fail — the handler's exception comes back as invocation_failed.
{
  const { error, resolved } = await rejection({ function_id: "math::fail", payload: {} });
  check(
    "math::fail",
    error?.code === "invocation_failed" && String(error?.message).includes("boom from node"),
    error ? { error: describeError(error) } : { unexpectedResult: resolved ?? null },
  );
}

// 3. A function nobody registered — the engine answers function_not_found.
{
  const { error, resolved } = await rejection({ function_id: "math::does_not_exist", payload: {} });
  check(
    "missing function",
    error?.code === "function_not_found",
    error ? { error: describeError(error) } : { unexpectedResult: resolved ?? null },
  );
}

stopWatchdog();
if (failures.length > 0) {
  console.error(`node-math-caller.mjs: FAIL: ${failures.length} check(s) failed:\n  ${failures.join("\n  ")}`);
}
emit({ done: true, ok: failures.length === 0 });
await shutdownAndExit(iii, failures.length === 0 ? 0 : 1);
