// HTTP-invoked functions (MODULES.md §5.7) registered with the published Node SDK: the engine
// calls a URL (env HOOK_BASE, a test server) for each call. Registers POST with HMAC auth and a
// custom header, PUT, a failing endpoint and a slow one, calls each and prints the outcomes; then
// unregisters one and calls it again. One JSON line per call.
import { connect, emit, shutdownAndExit, sleep, startWatchdog, triggerWithStartupRetry } from "./common.mjs";

const stopWatchdog = startWatchdog("finish", 30000);
const iii = connect("sdk-test-http-functions");
const base = process.env.HOOK_BASE;

iii.registerFunction("ext::hook", {
  url: `${base}/webhook`,
  method: "POST",
  timeout_ms: 3000,
  headers: { "x-custom-header": "test-value" },
  auth: { type: "hmac", secret_key: "III_TEST_SECRET" },
});
const put = iii.registerFunction("ext::put", { url: `${base}/webhook`, method: "PUT" });
iii.registerFunction("ext::fail", { url: `${base}/fail` });
iii.registerFunction("ext::plain-fail", { url: `${base}/plain-fail` });
iii.registerFunction("ext::slow", { url: `${base}/slow`, timeout_ms: 300 });
iii.registerFunction("ext::empty", { url: `${base}/empty` });

async function outcome(function_id, payload) {
  try {
    return { function_id, result: await iii.trigger({ function_id, payload, timeoutMs: 10000 }) ?? null };
  } catch (err) {
    return { function_id, error: { code: err?.code, message: err?.message } };
  }
}

emit(await triggerWithStartupRetry(iii, { function_id: "ext::hook", payload: { order: 7 } }).then(
  (result) => ({ function_id: "ext::hook", result }),
  (err) => ({ function_id: "ext::hook", error: { code: err?.code, message: err?.message } }),
));
for (const id of ["ext::put", "ext::fail", "ext::plain-fail", "ext::slow", "ext::empty"]) {
  emit(await outcome(id, { n: 1 }));
}
put.unregister();
await sleep(300);
emit({ after_unregister: await outcome("ext::put", {}) });
stopWatchdog();
await shutdownAndExit(iii, 0);
