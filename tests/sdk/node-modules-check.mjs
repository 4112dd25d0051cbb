// The in-engine modules as a Node SDK user reaches for them (MODULES.md §1, §3, §4, §6.3 and the
// custom-stream rule of PROTOCOL.md §6.1): state::* and the `state` trigger, `publish` and the
// `subscribe` trigger, an every-second `cron` trigger, engine::log::*, and a custom stream made
// with the SDK's createStream. The engine runs iii-state (max_value_bytes 1024), iii-pubsub,
// iii-cron and iii-stream. One JSON line per check; exit 0 when all pass.
import { createStream } from "iii-sdk/helpers";
import { checker, connect, same, sleep, startWatchdog, triggerWithStartupRetry } from "./common.mjs";

const stopWatchdog = startWatchdog("finish", 60000);
const iii = connect("sdk-test-modules");
const { check, call: callRaw, finish } = checker(iii, "node-modules-check.mjs");
/** A call whose error is reduced to its code and message (printable as JSON). */
async function call(function_id, payload) {
  const r = await callRaw(function_id, payload);
  return r.error ? { error: { code: r.error?.code, message: r.error?.message } } : r;
}

/** Events a registered function received, by name. */
const seen = {};
function recorder(name, answer = {}) {
  seen[name] = [];
  iii.registerFunction(name, async (input) => {
    if (input?.probe) return { pong: true };
    seen[name].push(input);
    return answer;
  });
}

async function waitFor(pred, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

// ---- state ---------------------------------------------------------------------------------
recorder("mods::on-profile");
recorder("mods::on-any-state");
recorder("mods::on-skipped-state");
iii.registerFunction("mods::never", async () => false);
iii.registerTrigger({ type: "state", function_id: "mods::on-profile", config: { scope: "users", key: "profile" } });
iii.registerTrigger({ type: "state", function_id: "mods::on-any-state", config: {} });
iii.registerTrigger({
  type: "state",
  function_id: "mods::on-skipped-state",
  config: { scope: "users", condition_function_id: "mods::never" },
});
await triggerWithStartupRetry(iii, { function_id: "mods::on-profile", payload: { probe: true } });

const alice = { name: "Alice" };
let r = await call("state::set", { scope: "users", key: "profile", value: alice });
check("state set creates", same(r.result, { old_value: null, new_value: alice }), r);
r = await call("state::set", { scope: "users", key: "profile", value: { name: "Alicia" } });
check("state set replaces", same(r.result, { old_value: alice, new_value: { name: "Alicia" } }), r);
r = await call("state::get", { scope: "users", key: "profile" });
check("state get", same(r.result, { name: "Alicia" }), r);
r = await call("state::get", { scope: "users", key: "nobody" });
check("state get missing is undefined", !r.error && r.result === undefined, { result: r.result ?? "__undefined__" });
await call("state::set", { scope: "users", key: "bob", data: { name: "Bob" } });
r = await call("state::list", { scope: "users" });
check("state list", same(r.result, [{ name: "Alicia" }, { name: "Bob" }]), r);
await call("state::set", { scope: "carts", key: "c1", value: { items: [] } });
r = await call("state::list_groups", {});
check("state list_groups", same(r.result, { groups: ["carts", "users"] }), r);
r = await call("state::update", {
  scope: "carts",
  key: "c1",
  ops: [
    { type: "append", path: "items", value: { sku: "a" } },
    { type: "append", path: "note", value: "hello" },
    { type: "append", path: "note", value: " world" },
    { type: "increment", path: "note", by: 1 },
  ],
});
check(
  "state update",
  same(r.result?.new_value, { items: [{ sku: "a" }], note: "hello world" }) &&
    r.result?.errors?.[0]?.code === "increment.not_number" &&
    r.result?.errors?.[0]?.op_index === 3,
  r,
);
r = await call("state::delete", { scope: "users", key: "bob" });
check("state delete returns the bare value", same(r.result, { name: "Bob" }), r);
r = await call("state::delete", { scope: "users", key: "bob" });
check("state delete missing", !r.error && r.result === undefined, { result: r.result ?? "__undefined__" });
r = await call("state::delete", { scope: "carts", key: "c1" });
r = await call("state::list_groups", {});
check("an emptied scope leaves list_groups at once", same(r.result, { groups: ["users"] }), r);
r = await call("state::set", { scope: "users", key: "big", value: "x".repeat(2000) });
check("state value too large", r.error?.code === "VALUE_TOO_LARGE", r);
r = await call("state::set", { scope: "users" });
check("state set without key", r.error?.code === "deserialization_error", r);

await waitFor(() => seen["mods::on-profile"].length >= 2);
check("state trigger payloads", same(seen["mods::on-profile"], [
  { type: "state", event_type: "state:created", scope: "users", key: "profile", old_value: null, new_value: alice },
  { type: "state", event_type: "state:updated", scope: "users", key: "profile", old_value: alice, new_value: { name: "Alicia" } },
]), { events: seen["mods::on-profile"] });
await waitFor(() => seen["mods::on-any-state"].length >= 7);
await sleep(300);
const kinds = seen["mods::on-any-state"].map((e) => `${e.event_type} ${e.scope}/${e.key}`);
check("state trigger sees every real change, no ghost delete", same(kinds, [
  "state:created users/profile",
  "state:updated users/profile",
  "state:created users/bob",
  "state:created carts/c1",
  "state:updated carts/c1",
  "state:deleted users/bob",
  "state:deleted carts/c1",
]), { kinds });
check("state condition false skips", seen["mods::on-skipped-state"].length === 0, { events: seen["mods::on-skipped-state"] });

// ---- pub/sub -------------------------------------------------------------------------------
recorder("mods::sub-a1");
recorder("mods::sub-a2");
recorder("mods::sub-b");
recorder("mods::sub-conditioned");
const a1 = iii.registerTrigger({ type: "subscribe", function_id: "mods::sub-a1", config: { topic: "orders" } });
iii.registerTrigger({ type: "subscribe", function_id: "mods::sub-a2", config: { topic: "orders" } });
iii.registerTrigger({ type: "subscribe", function_id: "mods::sub-b", config: { topic: "other" } });
iii.registerTrigger({
  type: "subscribe",
  function_id: "mods::sub-conditioned",
  config: { topic: "orders", condition_function_id: "mods::never" },
});
await sleep(300);
r = await call("publish", { topic: "orders", data: { message: "Hello PubSub!" } });
check("publish result is absent", !r.error && r.result === undefined, r);
await waitFor(() => seen["mods::sub-a1"].length >= 1 && seen["mods::sub-a2"].length >= 1);
await sleep(300);
check("every subscriber gets one copy", same(seen["mods::sub-a1"], [{ message: "Hello PubSub!" }]) &&
  same(seen["mods::sub-a2"], [{ message: "Hello PubSub!" }]), { a1: seen["mods::sub-a1"], a2: seen["mods::sub-a2"] });
check("other topics get nothing", seen["mods::sub-b"].length === 0, { b: seen["mods::sub-b"] });
check("pubsub condition honoured", seen["mods::sub-conditioned"].length === 0, { c: seen["mods::sub-conditioned"] });
a1.unregister();
await sleep(300);
await call("publish", { topic: "orders", data: { n: 2 } });
await waitFor(() => seen["mods::sub-a2"].length >= 2);
await sleep(300);
check("unsubscribing one keeps the others", seen["mods::sub-a1"].length === 1 && seen["mods::sub-a2"].length === 2,
  { a1: seen["mods::sub-a1"].length, a2: seen["mods::sub-a2"].length });
r = await call("publish", { topic: "", data: {} });
check("publish without topic", r.error?.code === "topic_not_set", r);

// ---- cron ----------------------------------------------------------------------------------
recorder("mods::tick");
const cron = iii.registerTrigger({ type: "cron", function_id: "mods::tick", config: { expression: "* * * * * *" } });
const ticked = await waitFor(() => seen["mods::tick"].length >= 2, 4000);
cron.unregister();
const tick = seen["mods::tick"][0] ?? {};
const rfc3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$/;
check("cron fires every second", ticked, { ticks: seen["mods::tick"].length });
check("cron payload", tick.trigger === "cron" && typeof tick.job_id === "string" &&
  rfc3339.test(tick.scheduled_time) && rfc3339.test(tick.actual_time) && Object.keys(tick).length === 4, { tick });
await sleep(300);
const afterStop = seen["mods::tick"].length;
await sleep(1500);
check("cron stops when unregistered", seen["mods::tick"].length === afterStop, { before: afterStop, after: seen["mods::tick"].length });

// ---- engine::log ---------------------------------------------------------------------------
r = await call("engine::log::info", { message: "order placed", data: { order_id: "o-17" } });
check("engine::log::info", !r.error && r.result === undefined, r);
r = await call("engine::log::warn", { data: {} });
check("engine::log without message", r.error?.code === "deserialization_error", r);

// ---- custom stream (createStream) ---------------------------------------------------------
const items = new Map(); // "group/item" -> value
createStream(iii, "inventory", {
  get: async ({ group_id, item_id }) => items.get(`${group_id}/${item_id}`),
  set: async ({ group_id, item_id, data }) => {
    const old_value = items.get(`${group_id}/${item_id}`) ?? null;
    items.set(`${group_id}/${item_id}`, data);
    return { old_value, new_value: data };
  },
  delete: async ({ group_id, item_id }) => {
    const old_value = items.get(`${group_id}/${item_id}`) ?? null;
    items.delete(`${group_id}/${item_id}`);
    return { old_value };
  },
  list: async ({ group_id }) =>
    [...items.entries()].filter(([k]) => k.startsWith(`${group_id}/`)).map(([, v]) => v),
  listGroups: async () => [...new Set([...items.keys()].map((k) => k.split("/")[0]))],
});
recorder("mods::on-inventory");
iii.registerTrigger({ type: "stream", function_id: "mods::on-inventory", config: { stream_name: "inventory" } });
const shelf = { stream_name: "inventory", group_id: "shelf", item_id: "apple" };
r = await triggerWithStartupRetry(iii, { function_id: "stream::get(inventory)", payload: shelf }).then(
  (result) => ({ result }),
  (error) => ({ error: error?.code }),
);
await sleep(200);
r = await call("stream::set", { ...shelf, data: { count: 3 } });
check("custom stream set", same(r.result, { old_value: null, new_value: { count: 3 } }), r);
check("the worker holds the data", same(items.get("shelf/apple"), { count: 3 }), { items: [...items] });
r = await call("stream::set", { ...shelf, data: { count: 4 } });
r = await call("stream::get", shelf);
check("custom stream get", same(r.result, { count: 4 }), r);
r = await call("stream::list", { stream_name: "inventory", group_id: "shelf" });
check("custom stream list", same(r.result, [{ count: 4 }]), r);
r = await call("stream::list_groups", { stream_name: "inventory" });
check("custom stream list_groups", same(r.result, ["shelf"]), r);
r = await call("stream::delete", shelf);
check("custom stream delete", same(r.result, { old_value: { count: 4 } }), r);
r = await call("stream::delete", shelf);
await waitFor(() => seen["mods::on-inventory"].length >= 3);
await sleep(300);
const streamEvents = seen["mods::on-inventory"].map((e) => [e.streamName, e.groupId, e.id, e.event.type, e.event.data]);
check("custom stream events", same(streamEvents, [
  ["inventory", "shelf", "apple", "create", { count: 3 }],
  ["inventory", "shelf", "apple", "update", { count: 4 }],
  ["inventory", "shelf", "apple", "delete", { count: 4 }],
]), { streamEvents });
r = await call("stream::set", { stream_name: "plain", group_id: "g", item_id: "i", data: 1 });
check("other streams use the store", same(r.result, { old_value: null, new_value: 1 }) && !items.has("g/i"), r);

stopWatchdog();
await finish();
