// Durable queues as a Node SDK user reaches for them (MODULES.md §2): the enqueue action
// (TriggerAction.Enqueue) and its receipt, the job's payload, the concurrency limit, retries then
// the dead letter, redrive, FIFO order per message group through a retry, the durable:subscriber
// trigger with iii::durable::publish, and the error for an unknown queue. The engine runs
// iii-queue with queues `jobs` (concurrency 2, max_retries 1, backoff 50 ms) and `orders` (fifo,
// group field `customer`). One JSON line per check; exit 0 when all pass.
import { TriggerAction } from "iii-sdk";
import { checker, connect, same, sleep, startWatchdog, triggerWithStartupRetry } from "./common.mjs";

const stopWatchdog = startWatchdog("finish", 60000);
const iii = connect("sdk-test-queue");
const { check, call, finish } = checker(iii, "node-queue-check.mjs");

async function waitFor(pred, ms = 8000) {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

const enqueue = (queue, function_id, payload) =>
  iii.trigger({ function_id, payload, action: TriggerAction.Enqueue({ queue }) }).then(
    (result) => ({ result }),
    (error) => ({ error: { code: error?.code, message: error?.message } }),
  );

// Handlers.
const received = [];
iii.registerFunction("q::send-email", async (input) => {
  if (input?.probe) return { pong: true };
  received.push(input);
  return { sent: true };
});
let running = 0;
let peak = 0;
let slowDone = 0;
iii.registerFunction("q::slow", async () => {
  running += 1;
  peak = Math.max(peak, running);
  await sleep(100);
  running -= 1;
  slowDone += 1;
  return {};
});
let healed = false;
let brokenCalls = 0;
iii.registerFunction("q::broken", async () => {
  brokenCalls += 1;
  if (!healed) throw new Error("payment gateway down");
  return {};
});
const orders = [];
const failedOnce = new Set();
iii.registerFunction("q::order", async (input) => {
  orders.push(input.n);
  if (input.n === "a-1" && !failedOnce.has(input.n)) {
    failedOnce.add(input.n);
    throw new Error("try again");
  }
  await sleep(10);
  return {};
});
const published = [];
iii.registerFunction("q::on-created", async (input) => {
  published.push(input);
  return {};
});
iii.registerTrigger({ type: "durable:subscriber", function_id: "q::on-created", config: { topic: "user.created" } });
await triggerWithStartupRetry(iii, { function_id: "q::send-email", payload: { probe: true } });

// The enqueue action answers a receipt once the job is kept; the job arrives as sent.
let r = await enqueue("jobs", "q::send-email", { to: "ada@example.com", subject: "hi" });
check("enqueue answers a messageReceiptId", typeof r.result?.messageReceiptId === "string" && r.result.messageReceiptId.length === 36, r);
await waitFor(() => received.length >= 1);
check("the job arrives with its payload", same(received, [{ to: "ada@example.com", subject: "hi" }]), { received });

// Concurrency 2: eight 100 ms jobs never run more than two at a time.
for (let i = 0; i < 8; i++) await enqueue("jobs", "q::slow", { i });
await waitFor(() => slowDone >= 8);
check("concurrency limit observed", peak === 2 && slowDone === 8, { peak, slowDone });

// max_retries 1: two attempts, then a dead letter with the error.
r = await enqueue("jobs", "q::broken", { order: 42 });
let dlq = [];
await waitFor(() => brokenCalls >= 2);
for (let i = 0; i < 100 && dlq.length === 0; i++) {
  dlq = (await call("engine::queue::dlq_messages", { topic: "jobs" })).result ?? [];
  await sleep(20);
}
check("two attempts then a dead letter", brokenCalls === 2 && dlq.length === 1 && same(dlq[0].payload, { order: 42 }) &&
  dlq[0].retries === 2 && dlq[0].error?.message?.includes("payment gateway down"), { brokenCalls, dlq });
healed = true;
r = await call("iii::queue::redrive", { queue: "jobs" });
await waitFor(() => brokenCalls >= 3);
const stats = (await call("engine::queue::topic_stats", { topic: "jobs" })).result;
check("redrive delivers it again", same(r.result, { queue: "jobs", redriven: 1 }) && brokenCalls === 3 && stats?.dlq_depth === 0, { r, brokenCalls, stats });

// FIFO: a-1 fails once and is retried before a-2; group b goes on meanwhile.
for (const n of ["a-0", "a-1", "b-0", "a-2", "b-1"]) {
  await enqueue("orders", "q::order", { customer: n[0], n });
}
await waitFor(() => orders.length >= 6);
await sleep(200);
const groupA = orders.filter((n) => n.startsWith("a"));
const groupB = orders.filter((n) => n.startsWith("b"));
check("fifo order per group through a retry", same(groupA, ["a-0", "a-1", "a-1", "a-2"]) && same(groupB, ["b-0", "b-1"]), { orders });

// durable:subscriber + iii::durable::publish.
r = await call("iii::durable::publish", { topic: "user.created", data: { id: "u-1" } });
await waitFor(() => published.length >= 1);
check("durable subscriber gets the published data", r.error === undefined && same(published, [{ id: "u-1" }]), { r, published });

// An unknown queue is an enqueue_error naming it.
r = await enqueue("nope", "q::send-email", {});
check("unknown queue refused", r.error?.code === "enqueue_error" && r.error?.message?.endsWith("Queue 'nope' not found"), r);

stopWatchdog();
await finish();
