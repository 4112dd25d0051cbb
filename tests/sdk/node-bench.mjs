// Load for `iii-bench node`: the published Node SDK as a callee or a caller.
//
//   node node-bench.mjs callee [direct]        registers bench::echo, prints {"ready":true},
//                                              serves until SIGTERM or the parent exits
//                                              (direct: behind `iii-bench relay`, which has no
//                                              engine to route the callee's own probe call)
//   node node-bench.mjs caller <seq> <levels> <calls> <warmup> [payload bytes]
//                                              warm-up, <seq> sequential calls, then <calls>
//                                              calls at each in-flight level of <levels>
//                                              (comma list); prints one JSON line of results
//
// Latencies are measured around `iii.trigger` in microseconds (process.hrtime), so they include
// the SDK's own work on both ends, which is what a Node user sees.
import { connect, die, emit, shutdownAndExit, stayUpUntilSignalled, triggerWithStartupRetry } from "./common.mjs";

const [role, ...args] = process.argv.slice(2);

if (role === "callee") {
  const iii = connect("bench-node-callee");
  iii.registerFunction("bench::echo", async (input) => input, { description: "returns its input" });
  if (args[0] !== "direct") {
    await triggerWithStartupRetry(iii, { function_id: "bench::echo", payload: { probe: true } });
  }
  emit({ ready: true });
  stayUpUntilSignalled(iii);
} else if (role === "caller") {
  const [seq, levels, calls, warmup, payloadBytes] = args;
  const iii = connect("bench-node-caller");
  const payload = { data: "x".repeat(Math.max(0, Number(payloadBytes ?? 100) - 11)) };
  const call = () => iii.trigger({ function_id: "bench::echo", payload, timeoutMs: 30000 });

  await triggerWithStartupRetry(iii, { function_id: "bench::echo", payload });
  for (let i = 0; i < Number(warmup); i++) await call();

  const stats = (samples, elapsedNs, inFlight) => {
    samples.sort((a, b) => a - b);
    const pick = (q) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))];
    return {
      in_flight: inFlight,
      calls: samples.length,
      calls_per_s: Math.round(samples.length / (Number(elapsedNs) / 1e9)),
      p50_us: pick(0.5),
      p90_us: pick(0.9),
      p99_us: pick(0.99),
      max_us: samples[samples.length - 1],
    };
  };
  const timed = async () => {
    const t0 = process.hrtime.bigint();
    const out = await call();
    if (out?.data?.length !== payload.data.length) die(`bench::echo returned ${JSON.stringify(out)?.slice(0, 80)}`);
    return Number(process.hrtime.bigint() - t0) / 1000;
  };

  const results = { sequential: null, levels: [] };
  {
    const samples = [];
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < Number(seq); i++) samples.push(await timed());
    results.sequential = stats(samples, process.hrtime.bigint() - t0, 1);
  }
  for (const level of levels.split(",").map(Number)) {
    const samples = [];
    let next = 0;
    const total = Number(calls);
    const t0 = process.hrtime.bigint();
    const lane = async () => {
      while (next < total) {
        next++;
        samples.push(await timed());
      }
    };
    await Promise.all(Array.from({ length: level }, lane));
    results.levels.push(stats(samples, process.hrtime.bigint() - t0, level));
  }
  emit(results);
  await shutdownAndExit(iii, 0);
} else {
  die(`usage: node-bench.mjs callee | caller <seq> <levels> <calls> <warmup> [payload]`);
}
