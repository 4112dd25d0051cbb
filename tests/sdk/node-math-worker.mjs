// A Node worker for cross-SDK tests. Registers math::add, math::fail and node::echo, prints
// {"ready":true} once a call to its own math::add has gone through the engine, then serves
// until SIGTERM/SIGINT.
import {
  connect,
  emit,
  shutdownAndExit,
  startWatchdog,
  stayUpUntilSignalled,
  triggerWithStartupRetry,
} from "./common.mjs";

const stopWatchdog = startWatchdog("become ready");
const iii = connect("sdk-test-node-math-worker");

iii.registerFunction("math::add", async ({ a, b }) => ({ sum: a + b }), {
  description: "Add two numbers",
});
iii.registerFunction(
  "math::fail",
  async () => {
    throw new Error("boom from node");
  },
  { description: "Always throws" },
);
iii.registerFunction("node::echo", async (input) => ({ echo: input, lang: "node" }), {
  description: "Echo the input back",
});

try {
  const probe = await triggerWithStartupRetry(iii, {
    function_id: "math::add",
    payload: { a: 20, b: 22 },
  });
  if (probe?.sum !== 42) throw new Error(`self-check math::add returned ${JSON.stringify(probe)}`);
} catch (err) {
  console.error(`node-math-worker.mjs: FAIL: engine did not route our own function: ${err?.message ?? err}`);
  stopWatchdog();
  await shutdownAndExit(iii, 1);
  process.exit(1);
}

stopWatchdog();
emit({ ready: true });
stayUpUntilSignalled(iii);
