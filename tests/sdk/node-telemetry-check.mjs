// What the Node SDK sends on /otel as its users get it (OTel on by default): the span of each
// handler it runs, nested under the engine's span of the call, and the logs of the SDK's
// observability Logger, all queryable through engine::traces::* and engine::logs::list
// (MODULES.md §6.2–6.3). One JSON line per check; exit 0 when all pass.
import { Logger } from "@iii-dev/helpers/observability";
import { checker, connect, sleep, startWatchdog, triggerWithStartupRetry } from "./common.mjs";

const stopWatchdog = startWatchdog("finish", 60000);
const iii = connect("sdk-test-telemetry");
const { check, call, finish } = checker(iii, "node-telemetry-check.mjs");
const logger = new Logger(undefined, "node-telemetry");

iii.registerFunction("tel::greet", async (input) => {
  logger.warn("greeting someone", { who: input?.name ?? "nobody" });
  return { hello: input?.name };
});
await triggerWithStartupRetry(iii, { function_id: "tel::greet", payload: { name: "probe" } });
await call("tel::greet", { name: "Ada" });

// The SDK exports in batches: poll until its span and log are in.
async function poll(fn, pred, ms = 20000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (pred(last)) return last;
    await sleep(250);
  }
  return last;
}
const spans = await poll(
  async () => (await call("engine::traces::list", { name: "tel::greet", search_all_spans: true, limit: 50 })).result,
  (r) => (r?.spans ?? []).some((s) => s.service_name !== "iii"),
);
const sdkSpan = (spans?.spans ?? []).find((s) => s.service_name !== "iii");
check("the SDK's handler span arrives", Boolean(sdkSpan) && sdkSpan.name.includes("tel::greet"), { sdkSpan });
const tree = sdkSpan ? (await call("engine::traces::tree", { trace_id: sdkSpan.trace_id })).result : null;
const root = tree?.roots?.[0];
check("it nests under the engine's span of the call",
  root?.service_name === "iii" && root?.name === "tel::greet" && (root.children ?? []).some((c) => c.span_id === sdkSpan?.span_id),
  { tree });
const logs = await poll(
  async () => (await call("engine::logs::list", { severity_text: "warn" })).result,
  (r) => (r?.logs ?? []).some((l) => l.body === "greeting someone" && l.attributes?.["log.data"]?.who === "Ada"),
);
const log = (logs?.logs ?? []).find((l) => l.body === "greeting someone" && l.attributes?.["log.data"]?.who === "Ada");
check("the Logger's lines arrive with their attributes", log?.severity_text === "WARN" && log?.attributes?.["log.data"]?.who === "Ada", { log });

stopWatchdog();
await finish();
