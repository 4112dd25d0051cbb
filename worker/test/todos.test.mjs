// Unit tests for the todos::* handlers against an in-memory stand-in for the engine's stream::*.
import assert from "node:assert/strict";
import { test } from "node:test";
import { authFunction } from "../src/auth.mjs";
import { sortByCreatedAt, todoFunctions } from "../src/todos.mjs";

// Mimics the engine's stream::* result shapes (PROTOCOL.md 6.1); a missing item gives undefined.
function fakeEngine() {
  const items = new Map();
  const calls = [];
  const call = async (function_id, p) => {
    calls.push({ function_id, payload: p });
    assert.equal(p.stream_name, "todo");
    assert.equal(p.group_id, "todos");
    switch (function_id) {
      case "stream::set": {
        const old_value = items.get(p.item_id) ?? null;
        items.set(p.item_id, p.data);
        return { old_value, new_value: p.data };
      }
      case "stream::get":
        return items.get(p.item_id);
      case "stream::list":
        return [...items.values()];
      case "stream::update": {
        const old_value = items.get(p.item_id) ?? null;
        const next = { ...(old_value ?? {}) };
        for (const op of p.ops) next[op.path] = op.value;
        items.set(p.item_id, next);
        return { old_value, new_value: next };
      }
      case "stream::delete": {
        const old_value = items.get(p.item_id) ?? null;
        items.delete(p.item_id);
        return { old_value };
      }
    }
    throw new Error(`unexpected ${function_id}`);
  };
  const fns = Object.fromEntries(todoFunctions(call, () => {}).map((f) => [f.id, f.handler]));
  return { fns, calls, items };
}

test("create, list, get, toggle, delete", async () => {
  const { fns } = fakeEngine();
  const todo = await fns["todos::create"]({ title: "  Buy milk  ", _caller_worker_id: "w" });
  assert.equal(todo.title, "Buy milk");
  assert.equal(todo.completed, false);
  assert.match(todo.id, /^[0-9a-f-]{36}$/);
  assert.equal(typeof todo.created_at, "number");

  assert.deepEqual(await fns["todos::list"]({}), { items: [todo] });
  assert.deepEqual(await fns["todos::get"]({ id: todo.id }), todo);
  assert.equal(await fns["todos::get"]({ id: "nope" }), null);

  assert.equal((await fns["todos::toggle"]({ id: todo.id })).completed, true);
  assert.equal((await fns["todos::toggle"]({ id: todo.id })).completed, false);
  assert.equal(await fns["todos::toggle"]({ id: "nope" }), null);

  assert.deepEqual(await fns["todos::delete"]({ id: todo.id }), { id: todo.id, deleted: true });
  assert.deepEqual(await fns["todos::delete"]({ id: todo.id }), { id: todo.id, deleted: false });
  assert.deepEqual(await fns["todos::list"]({}), { items: [] });
});

test("toggle sends one set op on `completed`", async () => {
  const { fns, calls } = fakeEngine();
  const todo = await fns["todos::create"]({ title: "x" });
  await fns["todos::toggle"]({ id: todo.id });
  const update = calls.find((c) => c.function_id === "stream::update");
  assert.deepEqual(update.payload.ops, [{ type: "set", path: "completed", value: true }]);
});

test("validation errors name the field", async () => {
  const { fns, calls } = fakeEngine();
  await assert.rejects(fns["todos::create"]({}), /title is required/);
  await assert.rejects(fns["todos::create"]({ title: 5 }), /title must be a string/);
  await assert.rejects(fns["todos::create"]({ title: "   " }), /title must not be empty/);
  await assert.rejects(fns["todos::create"]({ title: "a".repeat(201) }), /title must be at most 200/);
  assert.equal((await fns["todos::create"]({ title: "a".repeat(200) })).title.length, 200);
  for (const name of ["todos::get", "todos::toggle", "todos::delete"]) {
    await assert.rejects(fns[name]({}), /id is required/);
    await assert.rejects(fns[name]({ id: "" }), /id must not be empty/);
    await assert.rejects(fns[name]({ id: 7 }), /id must be a string/);
  }
  assert.equal(calls.filter((c) => c.function_id !== "stream::set").length, 0);
});

test("list sorts by created_at, items without it first in store order", () => {
  const items = [{ id: "c", created_at: 3 }, { id: "x" }, { id: "a", created_at: 1 }, { id: "y" }];
  assert.deepEqual(sortByCreatedAt(items).map((i) => i.id), ["x", "y", "a", "c"]);
});

test("auth gives every connection a fresh session used as its prefix", async () => {
  const { handler } = authFunction(() => {});
  const a = await handler({ headers: {}, query_params: {}, ip_address: "127.0.0.1" });
  const b = await handler({ headers: {}, query_params: {}, ip_address: "127.0.0.1" });
  assert.notEqual(a.context.session_id, b.context.session_id);
  assert.equal(a.function_registration_prefix, a.context.session_id);
  assert.deepEqual(a.allowed_trigger_types, ["stream"]);
  assert.equal(a.allow_trigger_type_registration, false);
  assert.equal(a.allow_function_registration, true);
  assert.deepEqual(a.allowed_functions, []);
  assert.deepEqual(a.forbidden_functions, []);
});
