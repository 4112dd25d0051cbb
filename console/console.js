// console.js — the iii console: a worker page that shows what the engine is doing, live.
//
// Connects to the engine it is served by (`ws://<same host>/`, a trusted listener) with our
// browser client and polls the engine's own functions every second: workers, functions, trigger
// types and bindings, call counters (`engine::metrics::list`), recent traces and logs, stream
// groups and state scopes. A function the engine does not register (an older engine, no
// iii-state, …) is never called: its panel says "not available" instead.
//
// The console's own polling is left out of the call rate, so an idle engine reads 0 calls/s.

import { $, fmtClock, h } from '/console/dom.js';
import { F, OWN_TRACE_FILTER, call, callIfThere, iii, own, registered, setRegistered, wsUrl } from '/console/engine.js';
import { closeTrace, refreshTree, renderLogs, renderTraces } from '/console/traces.js';
import {
  drawChart,
  drawFunctions,
  renderFunctions,
  renderMetrics,
  renderStreams,
  renderTriggers,
  renderWorkers,
  view,
} from '/console/views.js';

const POLL_MS = 1000;

let polling = false;

async function poll() {
  if (polling || view.paused || iii.state !== 'connected' || document.hidden) return;
  polling = true;
  try {
    const functions = await call(F.functions, { include_internal: true });
    if (functions.ok) setRegistered((functions.value?.functions ?? []).map((f) => f.function_id));
    renderFunctions(functions);
    const [workers, types, bindings, traces, logs, streams, state, health] = await Promise.all([
      call(F.workers, {}),
      call(F.triggerTypes, { include_internal: true }),
      call(F.bindings, {}),
      callIfThere(F.traces, { limit: 50, exclude_attributes: OWN_TRACE_FILTER }),
      callIfThere(F.logs, { limit: 100 }),
      callIfThere(F.streams, {}),
      callIfThere(F.state, {}),
      callIfThere(F.health, {}),
    ]);
    // Read the counters last, once this poll's other calls are counted, and note how many
    // calls this page had made by then (the metrics call included).
    const ownAtRead = new Map(own);
    ownAtRead.set(F.metrics, (ownAtRead.get(F.metrics) ?? 0) + (registered.has(F.metrics) ? 1 : 0));
    const metrics = await callIfThere(F.metrics, {});
    renderWorkers(workers);
    renderTriggers(types, bindings);
    renderTraces(traces);
    renderLogs(logs);
    renderStreams(streams, state);
    renderMetrics(metrics, ownAtRead);
    renderHealth(health);
    if (view.openTrace) await refreshTree();
    view.lastPollAt = Date.now();
    document.body.dataset.polls = String(Number(document.body.dataset.polls ?? 0) + 1);
  } finally {
    polling = false;
    showUpdated();
  }
}

function renderHealth(result) {
  const info = $('engine-info');
  const url = h('code', { 'data-testid': 'engine-url' }, wsUrl);
  if (!result.ok) {
    info.replaceChildren(url);
    return;
  }
  const v = result.value ?? {};
  const healthy = v.status === 'healthy';
  info.replaceChildren(
    url,
    v.version ? ` · engine ${v.version}` : '',
    ' · ',
    h('span', { class: `badge ${healthy ? 'badge-ok' : 'badge-warn'}`, 'data-testid': 'health' }, v.status ?? 'unknown'),
  );
}

function showUpdated() {
  const el = $('updated');
  if (view.paused) el.textContent = 'Paused';
  else if (view.lastPollAt) el.textContent = `Updated ${fmtClock(view.lastPollAt)}`;
}

// ───────────────────────────── start-up ─────────────────────────────

const STATE_TEXT = {
  connected: 'Connected',
  connecting: 'Connecting…',
  reconnecting: 'Reconnecting',
  disconnected: 'Disconnected',
  failed: 'Connection failed',
};

iii.addConnectionStateListener((state) => {
  const status = $('connection-status');
  status.dataset.state = state;
  $('connection-status-text').textContent = STATE_TEXT[state] ?? state;
  if (state === 'connected') void poll();
});

$('engine-url').textContent = wsUrl;
$('pause-button').addEventListener('click', (e) => {
  view.paused = !view.paused;
  e.currentTarget.setAttribute('aria-pressed', String(view.paused));
  e.currentTarget.textContent = view.paused ? 'Resume' : 'Pause';
  showUpdated();
  if (!view.paused) void poll();
});
$('show-internal').addEventListener('change', (e) => {
  view.showInternal = e.currentTarget.checked;
  drawFunctions();
  void poll();
});
$('functions-filter').addEventListener('input', (e) => {
  view.filter = e.currentTarget.value;
  drawFunctions();
});
$('logs-level').addEventListener('change', (e) => {
  view.logLevel = Number(e.currentTarget.value);
  void poll();
});
$('trace-close').addEventListener('click', closeTrace);
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && view.openTrace) closeTrace();
});
document.addEventListener('visibilitychange', () => void poll());
window.addEventListener('resize', drawChart);
setInterval(() => void poll(), POLL_MS);
drawChart();
