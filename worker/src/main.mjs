// The todo API worker. Connects to the engine's trusted port, registers the RBAC auth function
// and the todos::* functions, and runs until SIGTERM/SIGINT.

import { registerWorker } from "iii-sdk";
import { authFunction } from "./auth.mjs";
import { todoFunctions } from "./todos.mjs";

const url = process.env.III_URL ?? "ws://localhost:49134";
const log = (line) => console.log(`[todo-api-worker] ${line}`);

const iii = registerWorker(url, { workerName: "todo-api-worker" });

const call = (function_id, payload) => iii.trigger({ function_id, payload });

// Failed calls are answered to the caller by the SDK (code invocation_failed); log them here too.
const logged = (id, handler) => async (input) => {
  try {
    return await handler(input);
  } catch (err) {
    log(`${id} failed: ${err?.message ?? err}`);
    throw err;
  }
};

for (const { id, description, handler } of [authFunction(log), ...todoFunctions(call, log)]) {
  iii.registerFunction(id, logged(id, handler), { description });
}
log(`registered functions, engine at ${url}`);

let stopping = false;
async function stop(signal) {
  if (stopping) return;
  stopping = true;
  log(`${signal}: shutting down`);
  // Never hang on the way out, even if the engine is gone.
  setTimeout(() => process.exit(0), 5000).unref();
  try {
    await iii.shutdown();
  } catch (err) {
    log(`shutdown failed: ${err?.message ?? err}`);
  }
  process.exit(0);
}
process.on("SIGTERM", () => stop("SIGTERM"));
process.on("SIGINT", () => stop("SIGINT"));
