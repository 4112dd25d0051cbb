// Shared plumbing for the Node SDK scripts.
//
// Conventions every script follows:
//   * the engine URL comes from env III_URL;
//   * stdout carries only JSON lines (one observation each); everything else goes to stderr;
//   * a watchdog (env SDK_TEST_TIMEOUT_MS, default 20000) fails the script loudly instead of hanging;
//   * exit 0 on success, non-zero with a message on stderr on failure.

import { isDeepStrictEqual } from "node:util";
import { InvocationError, registerWorker } from "iii-sdk";

// The SDK and its OTel helper print progress with console.log/console.debug, which would mix
// with our JSON lines on stdout: send that chatter to stderr.
for (const level of ["log", "info", "debug"]) {
  console[level] = (...args) => console.error(...args);
}

export const III_URL = process.env.III_URL ?? "ws://127.0.0.1:49134";
export const TIMEOUT_MS = Number(process.env.SDK_TEST_TIMEOUT_MS ?? 20000);
// How long a first call may keep getting function_not_found while the callee is still registering.
export const STARTUP_RETRY_MS = Number(process.env.SDK_STARTUP_RETRY_MS ?? 8000);

/** Print one observation as a JSON line on stdout. */
export function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}
// A reader that went away (closed pipe) must not crash a worker that is shutting down.
process.stdout.on("error", () => {});

/** Fail now: message on stderr, non-zero exit. */
export function die(message) {
  console.error(`${scriptName()}: FAIL: ${message}`);
  process.exit(1);
}

function scriptName() {
  return process.argv[1]?.split("/").pop() ?? "sdk-script";
}

/** Start the overall watchdog; returns a function that stops it. */
export function startWatchdog(what = "finish", ms = TIMEOUT_MS) {
  const timer = setTimeout(() => {
    console.error(`${scriptName()}: FAIL: did not ${what} within ${ms}ms (SDK_TEST_TIMEOUT_MS)`);
    process.exit(2);
  }, ms);
  return () => clearTimeout(timer);
}

/** Connect a worker to the engine at III_URL. */
export function connect(workerName) {
  return registerWorker(III_URL, { workerName });
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A plain description of a rejection, for JSON output. */
export function describeError(err) {
  return {
    name: err?.name,
    code: err?.code,
    message: err?.message,
    isInvocationError: err instanceof InvocationError,
  };
}

/**
 * Call a function, retrying while it is not registered yet (function_not_found) or the call
 * timed out because the connection is still coming up. Any other outcome is final.
 */
export async function triggerWithStartupRetry(iii, request, retryMs = STARTUP_RETRY_MS) {
  const deadline = Date.now() + retryMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await iii.trigger({ timeoutMs: 3000, ...request });
    } catch (err) {
      const retriable = err?.code === "function_not_found" || err?.code === "TIMEOUT";
      if (!retriable || Date.now() >= deadline) throw err;
      console.error(`${scriptName()}: ${request.function_id} not available yet (${err.code}), retry ${attempt}`);
      await sleep(200);
    }
  }
}

/**
 * Shut the SDK down and let the process exit by itself. Should anything keep the event loop
 * alive afterwards, a non-blocking timer forces the exit and says so.
 */
export async function shutdownAndExit(iii, code) {
  process.exitCode = code;
  let guardTimer;
  const guard = new Promise((resolve) => {
    guardTimer = setTimeout(() => {
      console.error(`${scriptName()}: shutdown() took over 5s`);
      resolve();
    }, 5000);
  });
  await Promise.race([iii.shutdown().catch((err) => console.error("shutdown failed:", err)), guard]);
  clearTimeout(guardTimer);
  setTimeout(() => {
    console.error(`${scriptName()}: process still alive 3s after shutdown, forcing exit`);
    process.exit(code);
  }, 3000).unref();
}

/**
 * Worker scripts: run until SIGTERM/SIGINT, then shut down and exit 0. Also leave when the parent
 * process goes away, so a crashed test harness does not leave workers behind.
 */
export function stayUpUntilSignalled(iii) {
  let stopping = false;
  const stop = async (why) => {
    if (stopping) return;
    stopping = true;
    clearInterval(parentWatch);
    emit({ stopping: why });
    await shutdownAndExit(iii, 0);
  };
  const parent = process.ppid;
  const parentWatch = setInterval(() => {
    if (process.ppid !== parent) stop("parent exited");
  }, 1000);
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

/** Deep equality, for checks. */
export const same = (a, b) => isDeepStrictEqual(a, b);

/**
 * The plumbing of a checking script: `check(name, ok, details)` prints one JSON line and
 * remembers failures; `call(function_id, payload)` resolves to `{result}` or `{error}`, never
 * throws; `finish()` prints the summary and exits 0 only when every check passed.
 */
export function checker(iii, script) {
  const failures = [];
  return {
    failures,
    check(name, ok, details) {
      emit({ check: name, ok, ...details });
      if (!ok) failures.push(`${name}: ${JSON.stringify(details)}`);
    },
    async call(function_id, payload) {
      try {
        return { result: await iii.trigger({ function_id, payload, timeoutMs: 5000 }) };
      } catch (error) {
        return { error };
      }
    },
    async finish() {
      if (failures.length) console.error(`${script}: FAIL:\n  ${failures.join("\n  ")}`);
      emit({ done: true, ok: failures.length === 0, failures: failures.length });
      await shutdownAndExit(iii, failures.length === 0 ? 0 : 1);
    },
  };
}
