// The todos::* functions. Every todo lives in the engine's stream store under
// stream "todo", group "todos", item id = todo id; all access goes through the engine's
// stream::* functions, so any change is also pushed to `stream` trigger subscribers.

import { randomUUID } from "node:crypto";

export const STREAM = { stream_name: "todo", group_id: "todos" };
export const MAX_TITLE_LENGTH = 200;

/** Throws an Error naming the field unless `input[field]` is a non-blank string; returns it. */
function requireString(input, field) {
  const value = input?.[field];
  if (value === undefined || value === null) throw new Error(`${field} is required`);
  if (typeof value !== "string") throw new Error(`${field} must be a string, got ${typeof value}`);
  if (value.trim() === "") throw new Error(`${field} must not be empty`);
  return value;
}

export function validateTitle(input) {
  const title = requireString(input, "title").trim();
  const length = [...title].length;
  if (length > MAX_TITLE_LENGTH) {
    throw new Error(`title must be at most ${MAX_TITLE_LENGTH} characters, got ${length}`);
  }
  return title;
}

export function validateId(input) {
  return requireString(input, "id");
}

/** Sort by created_at (oldest first); items without it keep their store order, ahead of the rest. */
export function sortByCreatedAt(items) {
  const at = (item) => (typeof item?.created_at === "number" ? item.created_at : -Infinity);
  return items
    .map((item, index) => ({ item, index }))
    .sort((a, b) => at(a.item) - at(b.item) || a.index - b.index)
    .map(({ item }) => item);
}

/**
 * The todos::* handlers. `call(function_id, payload)` invokes an engine function and resolves
 * with its result (undefined when the engine sent none); `log` writes one line.
 */
export function todoFunctions(call, log = console.log) {
  const stream = (op, payload) => call(`stream::${op}`, { ...STREAM, ...payload });

  return [
    {
      id: "todos::create",
      description: "Create a todo from {title}; returns the new todo",
      handler: async (input) => {
        const title = validateTitle(input);
        const todo = { id: randomUUID(), title, completed: false, created_at: Date.now() };
        const { new_value } = await stream("set", { item_id: todo.id, data: todo });
        log(`todos::create id=${todo.id}`);
        return new_value;
      },
    },
    {
      id: "todos::list",
      description: "List all todos, oldest first; returns {items}",
      handler: async () => {
        const items = await stream("list", {});
        return { items: Array.isArray(items) ? sortByCreatedAt(items) : [] };
      },
    },
    {
      id: "todos::get",
      description: "Get the todo with {id}; returns it, or null if there is none",
      handler: async (input) => {
        const id = validateId(input);
        return (await stream("get", { item_id: id })) ?? null;
      },
    },
    {
      id: "todos::toggle",
      description: "Flip `completed` of the todo with {id}; returns the updated todo, or null if there is none",
      handler: async (input) => {
        const id = validateId(input);
        const current = await stream("get", { item_id: id });
        if (current === undefined || current === null) {
          log(`todos::toggle id=${id} not found`);
          return null;
        }
        const completed = !current.completed;
        const result = await stream("update", {
          item_id: id,
          ops: [{ type: "set", path: "completed", value: completed }],
        });
        if (result?.errors?.length) log(`todos::toggle id=${id} update errors: ${JSON.stringify(result.errors)}`);
        log(`todos::toggle id=${id} completed=${completed}`);
        return result?.new_value ?? null;
      },
    },
    {
      id: "todos::delete",
      description: "Delete the todo with {id}; returns {id, deleted}",
      handler: async (input) => {
        const id = validateId(input);
        const result = await stream("delete", { item_id: id });
        const deleted = result?.old_value !== null && result?.old_value !== undefined;
        log(`todos::delete id=${id} deleted=${deleted}`);
        return { id, deleted };
      },
    },
  ];
}
