// Calls every stream::* function through the engine with the published Node SDK and checks the
// exact result shapes of PROTOCOL.md §6.1 (as the todo app relies on them). Writes go to stream
// `todo`, groups `todos` and `other`. One JSON line per check; exit 0 when all pass.
import { checker, connect, describeError, same, startWatchdog } from "./common.mjs";

const stopWatchdog = startWatchdog();
const iii = connect("sdk-test-stream-check");
const { check, call, finish } = checker(iii, "node-stream-check.mjs");

const key = { stream_name: "todo", group_id: "todos", item_id: "t1" };
const first = { id: "t1", title: "first", completed: false };

let r = await call("stream::set", { ...key, data: first });
check("set creates", same(r.result, { old_value: null, new_value: first }), r);
r = await call("stream::set", { ...key, data: { ...first, title: "first!" } });
check("set replaces", same(r.result?.old_value, first) && r.result?.new_value?.title === "first!", r);
r = await call("stream::get", key);
check("get", r.result?.title === "first!", r);
r = await call("stream::get", { ...key, item_id: "missing" });
check("get missing is undefined", !r.error && r.result === undefined, { result: r.result ?? "__undefined__" });
r = await call("stream::list", { stream_name: "todo", group_id: "todos" });
check("list", Array.isArray(r.result) && r.result.length === 1 && r.result[0].title === "first!", r);
r = await call("stream::update", {
  ...key,
  ops: [
    { type: "set", path: "completed", value: true },
    { type: "increment", path: "n", by: 2 },
    { type: "merge", path: "meta", value: { a: 1 } },
  ],
});
check(
  "update",
  r.result?.old_value?.completed === false &&
    same(r.result?.new_value, { id: "t1", title: "first!", completed: true, n: 2, meta: { a: 1 } }) &&
    r.result?.errors === undefined,
  r,
);
r = await call("stream::update", { ...key, ops: [{ type: "increment", path: "title", by: 1 }] });
check("update op error", r.result?.errors?.[0]?.code === "increment.not_number", r);
r = await call("stream::set", { stream_name: "todo", group_id: "other", item_id: "o1", data: { v: 1 } });
check("set other group", same(r.result, { old_value: null, new_value: { v: 1 } }), r);
r = await call("stream::list_groups", { stream_name: "todo" });
check("list_groups", same([...(r.result ?? [])].sort(), ["other", "todos"]), r);
r = await call("stream::delete", { stream_name: "todo", group_id: "other", item_id: "o1" });
check("delete other group", same(r.result, { old_value: { v: 1 } }), r);
r = await call("stream::delete", key);
check("delete", r.result?.old_value?.id === "t1", r);
r = await call("stream::delete", key);
check("delete missing has explicit null", same(r.result, { old_value: null }), r);
r = await call("stream::set", { stream_name: "todo" });
check(
  "bad input",
  r.error?.code === "deserialization_error" && String(r.error?.message).includes("missing field `group_id`"),
  { error: describeError(r.error) },
);
r = await call("stream::listGroups", { stream_name: "todo" });
check("no listGroups alias", r.error?.code === "function_not_found", { error: describeError(r.error) });

stopWatchdog();
await finish();
