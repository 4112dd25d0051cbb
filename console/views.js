// views.js — the console's panels for workers, functions, triggers, streams and state, and the
// call counters with their chart. `view` is the page state the panels share.

import { $, clip, dec, fmtAge, fmtMs, h, int, setState, syncRows, unavailableText } from '/console/dom.js';
import { F, isInternal } from '/console/engine.js';

/** Samples kept for the chart (one per poll). */
const HISTORY = 120;

export const view = {
  paused: false,
  showInternal: false,
  filter: '',
  logLevel: 0,
  functions: [],
  /** by_function counts and per-second rates from the last two metrics samples. */
  calls: new Map(),
  rates: new Map(),
  /** {rate, errors} per poll, oldest first. */
  history: [],
  last: null,
  openTrace: null,
  treeSig: null,
  lastPollAt: 0,
};

export function renderWorkers(result) {
  if (!setState($('panel-workers'), result, F.workers)) return;
  const workers = result.value?.workers ?? [];
  const processes = workers.filter((w) => w.runtime !== 'engine');
  $('count-workers').textContent = int.format(processes.length);
  $('count-workers').dataset.value = processes.length;
  $('count-workers-note').textContent = `+ ${workers.length - processes.length} in-engine`;
  const now = Date.now();
  const sorted = [...processes, ...workers.filter((w) => w.runtime === 'engine')];
  syncRows(
    $('workers-body'),
    sorted.map((w) => ({ ...w, age: w.connected_at_ms ? fmtAge(now - w.connected_at_ms) : null })),
    (w) => w.id,
    (w) => {
      const status = w.status === 'busy' ? 'badge-warn' : w.status === 'disconnected' ? 'badge-err' : 'badge-ok';
      return h(
        'tr',
        { 'data-testid': 'worker-row', 'data-name': w.name ?? '', 'data-runtime': w.runtime },
        h('td', {}, w.name ?? h('span', { class: 'dim' }, 'unnamed'), h('span', { class: 'sub mono nowrap' }, w.runtime === 'engine' ? 'in-process' : `pid ${w.pid ?? '?'} · ${w.ip_address ?? ''}`)),
        h('td', {}, w.runtime, w.version ? h('span', { class: 'sub' }, w.version) : null),
        h('td', {}, h('span', { class: `badge ${status}` }, w.status)),
        h('td', { class: 'num' }, int.format(w.function_count ?? 0)),
        h('td', { class: 'num' }, int.format(w.active_invocations ?? 0)),
        h('td', { class: 'dim' }, w.age ? `${w.age} ago` : '—'),
      );
    },
    'No workers',
    6,
  );
}

export function renderFunctions(result) {
  if (!setState($('panel-functions'), result, F.functions)) return;
  view.functions = result.value?.functions ?? [];
  const visible = view.functions.filter((f) => !isInternal(f));
  $('count-functions').textContent = int.format(visible.length);
  $('count-functions').dataset.value = visible.length;
  drawFunctions();
}

export function drawFunctions() {
  const q = view.filter.trim().toLowerCase();
  const items = view.functions
    .filter((f) => view.showInternal || !isInternal(f))
    .filter((f) => !q || `${f.function_id} ${f.worker_name ?? ''} ${f.description ?? ''}`.toLowerCase().includes(q))
    .map((f) => ({
      id: f.function_id,
      worker: f.worker_name,
      description: f.description,
      calls: view.last ? view.calls.get(f.function_id) ?? 0 : null,
      rate: view.rates.get(f.function_id) ?? null,
    }));
  syncRows(
    $('functions-body'),
    items,
    (f) => f.id,
    (f) =>
      h(
        'tr',
        { 'data-testid': 'function-row', 'data-id': f.id, 'data-calls': f.calls ?? '' },
        h('td', {}, h('span', { class: 'mono' }, f.id), f.description ? h('span', { class: 'sub' }, clip(f.description, 90)) : null),
        h('td', { class: 'dim' }, f.worker ?? '—'),
        h('td', { class: 'num', 'data-testid': 'function-calls' }, f.calls == null ? '—' : int.format(f.calls)),
        h('td', { class: 'num dim' }, f.rate ? dec.format(f.rate) : f.calls == null ? '—' : '0'),
      ),
    q ? 'No function matches the filter' : 'No functions',
    4,
  );
}

export function renderTriggers(types, bindings) {
  const failed = !bindings.ok ? [bindings, F.bindings] : !types.ok ? [types, F.triggerTypes] : null;
  if (!setState($('panel-triggers'), failed ? failed[0] : bindings, failed?.[1])) return;
  const list = bindings.value?.registered_triggers ?? [];
  const shown = view.showInternal ? list : list.filter((t) => !String(t.trigger_type).startsWith('engine::'));
  $('count-functions-note').textContent = `${list.length} trigger binding${list.length === 1 ? '' : 's'}`;
  syncRows(
    $('triggers-body'),
    shown,
    (t) => t.id,
    (t) =>
      h(
        'tr',
        { 'data-testid': 'trigger-row', 'data-type': t.trigger_type, 'data-function': t.function_id },
        h('td', {}, h('span', { class: 'badge badge-accent' }, t.trigger_type), t.active === false ? h('span', { class: 'sub' }, 'waiting for its type') : null),
        h('td', { class: 'mono' }, t.function_id),
        h('td', { class: 'mono dim' }, t.config_summary ?? JSON.stringify(t.config ?? null)),
      ),
    'No trigger bindings',
    3,
  );
  syncRows(
    $('trigger-types'),
    types.value?.triggers ?? [],
    (t) => t.id,
    (t) => h('li', { 'data-testid': 'trigger-type', 'data-id': t.id, title: t.description ?? '' }, t.id, ' ', h('span', { class: 'dim' }, t.worker_name ?? '')),
  );
}

export function renderStreams(streams, state) {
  const part = (el, result, functionId) => {
    const note = el.querySelector('.unavailable');
    note.hidden = result.ok;
    el.dataset.state = result.ok ? 'ready' : result.missing ? 'unavailable' : 'error';
    if (!result.ok) {
      note.replaceChildren(
        result.missing ? h('span', {}, ...unavailableText(result, functionId)) : `${result.error.code}: ${result.error.message}`,
      );
    }
    return result.ok;
  };
  const panel = $('panel-streams');
  panel.dataset.state = streams.ok || state.ok ? 'ready' : streams.missing && state.missing ? 'unavailable' : 'error';
  if (part($('streams-part'), streams, F.streams)) {
    syncRows(
      $('streams-body'),
      streams.value?.stream ?? [],
      (s) => s.id,
      (s) =>
        h(
          'li',
          { 'data-testid': 'stream-row', 'data-stream': s.id },
          h('span', { class: 'mono' }, s.id),
          h('span', { class: 'dim' }, ` · ${s.groups.length} group${s.groups.length === 1 ? '' : 's'}`),
          h('ul', { class: 'chips' }, s.groups.slice(0, 40).map((g) => h('li', { 'data-testid': 'stream-group' }, g))),
        ),
      'No streams yet',
    );
  }
  if (part($('state-part'), state, F.state)) {
    syncRows(
      $('state-body'),
      state.value?.groups ?? [],
      (g) => g,
      (g) => h('li', { 'data-testid': 'state-group', 'data-scope': g }, g),
      'No state scopes yet',
    );
  }
}

/** Call counters: totals as the engine reports them, rates without this page's own calls. */
export function renderMetrics(result, ownAtRead) {
  const panel = $('panel-calls');
  const cards = [$('card-rate'), $('card-errors')];
  if (!setState(panel, result, F.metrics)) {
    for (const id of ['calls-rate', 'calls-errors', 'latency-p95']) $(id).textContent = '—';
    $('calls-total').textContent = result.missing ? 'not available' : 'error';
    $('calls-errors-note').textContent = '';
    $('latency-note').textContent = '';
    for (const c of cards) c.dataset.state = result.missing ? 'unavailable' : 'error';
    return;
  }
  for (const c of cards) c.dataset.state = 'ready';
  const m = result.value?.engine_metrics ?? {};
  const inv = m.invocations ?? {};
  const byFn = new Map(Object.entries(inv.by_function ?? {}).map(([k, v]) => [k, Number(v) || 0]));
  const sample = { at: performance.now(), total: Number(inv.total) || 0, error: Number(inv.error) || 0, byFn, own: ownAtRead };
  const prev = view.last;
  view.last = sample;
  view.calls = byFn;
  view.rates = new Map();
  let rate = 0;
  let errRate = 0;
  if (prev) {
    const secs = Math.max((sample.at - prev.at) / 1000, 0.001);
    const ids = new Set([...byFn.keys(), ...prev.byFn.keys()]);
    for (const id of ids) {
      const mine = (sample.own.get(id) ?? 0) - (prev.own.get(id) ?? 0);
      const delta = Math.max(0, (byFn.get(id) ?? 0) - (prev.byFn.get(id) ?? 0) - mine);
      if (delta) view.rates.set(id, delta / secs);
      rate += delta / secs;
    }
    if (!byFn.size && !prev.byFn.size) {
      let mine = 0;
      for (const [id, n] of sample.own) mine += n - (prev.own.get(id) ?? 0);
      rate = Math.max(0, sample.total - prev.total - mine) / secs;
    }
    const errors = Math.max(0, sample.error - prev.error);
    errRate = errors / secs;
    view.history.push({ rate, errRate, errors });
    if (view.history.length > HISTORY) view.history.shift();
  }
  $('calls-rate').textContent = prev ? dec.format(rate) : '…';
  $('calls-rate').dataset.value = rate;
  $('calls-total').textContent = `${int.format(sample.total)} calls in total`;
  $('calls-total').dataset.value = sample.total;
  $('calls-errors').textContent = int.format(sample.error);
  $('calls-errors').dataset.value = sample.error;
  const recentErrors = view.history.slice(-60).reduce((n, s) => n + s.errors, 0);
  $('card-errors').dataset.alert = String(recentErrors > 0);
  $('calls-errors-note').textContent = recentErrors ? `${int.format(recentErrors)} in the last minute` : 'none in the last minute';
  const perf = m.performance ?? {};
  $('latency-p95').textContent = perf.p95_duration_ms == null ? '—' : fmtMs(perf.p95_duration_ms);
  $('latency-note').textContent = perf.p50_duration_ms == null ? '' : `p50 ${fmtMs(perf.p50_duration_ms)} · p99 ${fmtMs(perf.p99_duration_ms)}`;
  drawChart();
  drawFunctions();
}

export function drawChart() {
  const svg = $('calls-chart');
  const width = Math.max(200, Math.round(svg.clientWidth || 600));
  const height = 120;
  const top = 8;
  const bottom = height - 16;
  const left = 36;
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  const data = view.history;
  const max = Math.max(1, ...data.map((d) => Math.max(d.rate, d.errRate)));
  const nice = niceCeil(max);
  const x = (i) => left + ((width - left) * (HISTORY - data.length + i)) / (HISTORY - 1);
  const y = (v) => bottom - ((bottom - top) * v) / nice;
  const ns = 'http://www.w3.org/2000/svg';
  const el = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text != null) e.textContent = text;
    return e;
  };
  const parts = [];
  for (const v of [0, nice / 2, nice]) {
    parts.push(el('line', { class: 'grid-line', x1: left, x2: width, y1: y(v), y2: y(v) }));
    parts.push(el('text', { class: 'axis-label', x: 0, y: y(v) + 3 }, `${dec.format(v)}/s`));
  }
  parts.push(el('text', { class: 'axis-label', x: left, y: height - 2 }, `−${HISTORY} s`));
  parts.push(el('text', { class: 'axis-label', x: width - 22, y: height - 2 }, 'now'));
  if (data.length > 1) {
    const line = (key) => data.map((d, i) => `${i ? 'L' : 'M'}${x(i).toFixed(1)},${y(d[key]).toFixed(1)}`).join('');
    const calls = line('rate');
    parts.push(el('path', { class: 'area-calls', d: `${calls}L${x(data.length - 1).toFixed(1)},${bottom}L${x(0).toFixed(1)},${bottom}Z` }));
    parts.push(el('path', { class: 'line-calls', d: calls, 'data-testid': 'chart-calls' }));
    if (data.some((d) => d.errRate > 0)) parts.push(el('path', { class: 'line-errors', d: line('errRate') }));
  }
  svg.replaceChildren(...parts);
}

function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((n) => n >= v);
}
