// engine.js — the console's connection to the engine it is served by, and its calls.
//
// One WebSocket to `ws://<same host>/` (a trusted listener) with our browser client. `call`
// never throws: a function the engine does not register comes back as `{missing: true}`, and
// `callIfThere` does not even ask for one the last function list did not name, so the console
// adds no errors to the engine's counters. Every call is counted by id in `own`, which the
// call rate leaves out.

import { registerWorker } from '/console/iii-client.js';

const CALL_TIMEOUT_MS = 5000;

/** Functions the engine's listing treats as internal (hidden unless "engine::*" is ticked). */
export const isInternal = (f) =>
  (f.function_id.startsWith('engine::') && !f.function_id.startsWith('engine::queue::')) || f.metadata?.internal === true;

export const F = {
  functions: 'engine::functions::list',
  workers: 'engine::workers::list',
  triggerTypes: 'engine::triggers::list',
  bindings: 'engine::registered-triggers::list',
  metrics: 'engine::metrics::list',
  traces: 'engine::traces::list',
  tree: 'engine::traces::tree',
  logs: 'engine::logs::list',
  health: 'engine::health::check',
  streams: 'stream::list_all',
  state: 'state::list_groups',
};

/**
 * The console's own calls that are not `engine::*` (whose spans the engine already hides): left
 * out of the trace list, or an idle engine's recent traces would be nothing but the console
 * polling. Asked of the engine (`exclude_attributes`) and checked here again.
 */
export const OWN_TRACE_FILTER = [F.streams, F.state].map((id) => ['iii.function.id', id]);
export const isOwnSpan = (s) =>
  (s.attributes ?? []).some(([k, v]) => OWN_TRACE_FILTER.some(([fk, fv]) => k === fk && v === fv));

export const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`;
export const iii = registerWorker(wsUrl, { invocationTimeoutMs: CALL_TIMEOUT_MS });

/** Calls this page has made, by function id (left out of the call rate). */
export const own = new Map();
/** Function ids the engine registers (from the last `engine::functions::list`). */
export const registered = new Set();

/** Replaces the set of registered function ids. */
export function setRegistered(ids) {
  registered.clear();
  for (const id of ids) registered.add(id);
}

/** Calls a function; resolves to `{ok, value}`, `{ok: false, missing}` or `{ok: false, error}`. */
export async function call(functionId, payload = {}) {
  own.set(functionId, (own.get(functionId) ?? 0) + 1);
  try {
    return { ok: true, value: await iii.trigger({ function_id: functionId, payload }) };
  } catch (error) {
    if (error?.code === 'function_not_found') return { ok: false, missing: true };
    if (error?.code === 'memory_exporter_not_enabled') {
      return { ok: false, missing: true, why: 'the engine keeps no spans in memory (iii-observability exporter: memory or both)' };
    }
    return { ok: false, error };
  }
}

/** Calls a function only if the engine registers it. */
export const callIfThere = (functionId, payload) =>
  registered.has(functionId) ? call(functionId, payload) : Promise.resolve({ ok: false, missing: true });
