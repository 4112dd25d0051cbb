// traces.js — the console's recent traces (a click opens the span tree as a waterfall) and
// recent logs.

import { $, clip, fmtClock, fmtMs, h, nsToMs, setState, statusBadge, syncRows } from '/console/dom.js';
import { F, callIfThere, isOwnSpan } from '/console/engine.js';
import { view } from '/console/views.js';

export function renderTraces(result) {
  if (!setState($('panel-traces'), result, F.traces)) return;
  const spans = (result.value?.spans ?? []).filter((s) => !isOwnSpan(s)).sort((a, b) => nsToMs(b.start_time_unix_nano) - nsToMs(a.start_time_unix_nano));
  syncRows(
    $('traces-body'),
    spans,
    (s) => `${s.trace_id}/${s.span_id}`,
    (s) => {
      const start = nsToMs(s.start_time_unix_nano);
      const pending = s.pending || !Number(s.end_time_unix_nano);
      const row = h(
        'tr',
        {
          'data-testid': 'trace-row',
          'data-trace-id': s.trace_id,
          tabindex: 0,
          'aria-selected': String(view.openTrace === s.trace_id),
          onclick: () => openTrace(s.trace_id),
          onkeydown: (e) => (e.key === 'Enter' || e.key === ' ') && (e.preventDefault(), openTrace(s.trace_id)),
        },
        h('td', { class: 'dim' }, fmtClock(start, true)),
        h('td', {}, h('span', { class: 'mono' }, s.name), h('span', { class: 'sub mono' }, s.trace_id.slice(0, 16))),
        h('td', {}, s.service_name ?? '—'),
        h('td', { class: 'num' }, pending ? 'running' : fmtMs(nsToMs(s.end_time_unix_nano) - start)),
        h('td', {}, statusBadge(s.status)),
      );
      return row;
    },
    'No traces yet',
    5,
  );
  for (const row of $('traces-body').children) {
    if (row.dataset.traceId) row.setAttribute('aria-selected', String(view.openTrace === row.dataset.traceId));
  }
}

function openTrace(traceId) {
  view.openTrace = traceId;
  view.treeSig = null;
  $('trace-detail').hidden = false;
  $('trace-title').textContent = `Trace ${traceId}`;
  $('trace-tree').replaceChildren(h('li', { class: 'dim' }, 'Loading…'));
  for (const row of $('traces-body').children) {
    if (row.dataset.traceId) row.setAttribute('aria-selected', String(row.dataset.traceId === traceId));
  }
  void refreshTree();
}

export function closeTrace() {
  view.openTrace = null;
  $('trace-detail').hidden = true;
  for (const row of $('traces-body').children) row.setAttribute('aria-selected', 'false');
}

export async function refreshTree() {
  const traceId = view.openTrace;
  if (!traceId) return;
  const result = await callIfThere(F.tree, { trace_id: traceId });
  if (view.openTrace !== traceId) return;
  const tree = $('trace-tree');
  if (!result.ok) {
    view.treeSig = null;
    tree.replaceChildren(h('li', { class: 'dim' }, result.missing ? `${F.tree} is not available on this engine.` : `${result.error.code}: ${result.error.message}`));
    return;
  }
  const roots = result.value?.roots ?? [];
  const sig = JSON.stringify(roots);
  if (sig === view.treeSig) return;
  view.treeSig = sig;
  if (!roots.length) {
    tree.replaceChildren(h('li', { class: 'dim' }, 'No spans for this trace (yet).'));
    return;
  }
  let start = Infinity;
  let end = -Infinity;
  const walk = (n) => {
    const s = nsToMs(n.start_time_unix_nano);
    const e = Number(n.end_time_unix_nano) ? nsToMs(n.end_time_unix_nano) : Date.now();
    start = Math.min(start, s);
    end = Math.max(end, e);
    (n.children ?? []).forEach(walk);
  };
  roots.forEach(walk);
  const total = Math.max(end - start, 0.001);
  const node = (n) => {
    const s = nsToMs(n.start_time_unix_nano);
    const pending = n.pending || !Number(n.end_time_unix_nano);
    const e = pending ? end : nsToMs(n.end_time_unix_nano);
    const bar = h('span', { class: 'span-bar' });
    bar.style.left = `${((s - start) / total) * 100}%`;
    bar.style.width = `${Math.max(((e - s) / total) * 100, 0.3)}%`;
    const attrs = [...(n.attributes ?? [])];
    if (n.status_description) attrs.unshift(['status', n.status_description]);
    const details = h('dl', { class: 'span-attrs', hidden: true }, attrs.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
    const toggle = () => (details.hidden = !details.hidden);
    const children = n.children ?? [];
    return h(
      'li',
      {},
      h(
        'div',
        {
          class: 'span',
          'data-testid': 'span-node',
          'data-status': String(n.status ?? 'unset').toLowerCase(),
          'data-pending': String(Boolean(pending)),
          tabindex: 0,
          title: attrs.length ? 'Show the attributes' : '',
          onclick: toggle,
          onkeydown: (ev) => (ev.key === 'Enter' || ev.key === ' ') && (ev.preventDefault(), toggle()),
        },
        h('span', { class: 'span-name' }, h('span', { class: 'mono' }, n.name), h('span', { class: 'sub' }, n.service_name ?? '')),
        h('span', { class: 'span-track' }, bar),
        h('span', { class: 'num dim' }, pending ? 'running' : fmtMs(e - s)),
      ),
      attrs.length ? details : null,
      children.length ? h('ol', {}, children.map(node)) : null,
    );
  };
  tree.replaceChildren(...roots.map(node));
}

// ───────────────────────────── logs ─────────────────────────────

const levelClass = (n) => (n >= 17 ? 'badge-err' : n >= 13 ? 'badge-warn' : n >= 9 ? 'badge-accent' : '');

export function renderLogs(result) {
  if (!setState($('panel-logs'), result, F.logs)) return;
  const logs = (result.value?.logs ?? [])
    .filter((l) => (Number(l.severity_number) || 0) >= view.logLevel)
    .sort((a, b) => nsToMs(b.timestamp_unix_nano) - nsToMs(a.timestamp_unix_nano));
  syncRows(
    $('logs-body'),
    logs,
    (l) => `${l.timestamp_unix_nano}/${l.observed_timestamp_unix_nano}/${l.service_name}/${clip(String(l.body ?? ''), 60)}`,
    (l) => {
      const attrs = l.attributes && typeof l.attributes === 'object' ? Object.keys(l.attributes) : [];
      const body = typeof l.body === 'string' ? l.body : JSON.stringify(l.body);
      return h(
        'tr',
        { 'data-testid': 'log-row', 'data-level': String(l.severity_text ?? '').toLowerCase() },
        h('td', {}, fmtClock(nsToMs(l.timestamp_unix_nano), true)),
        h('td', {}, h('span', { class: `badge ${levelClass(Number(l.severity_number) || 0)}` }, l.severity_text || '—')),
        h('td', { class: 'dim' }, l.service_name ?? '—'),
        h(
          'td',
          { class: 'message' },
          clip(body ?? '', 400),
          attrs.length ? h('span', { class: 'attrs' }, clip(JSON.stringify(l.attributes), 200)) : null,
          l.trace_id
            ? h('button', { type: 'button', class: 'button button-quiet', onclick: () => openTrace(l.trace_id) }, `trace ${String(l.trace_id).slice(0, 8)}…`)
            : null,
        ),
      );
    },
    'No logs yet',
    4,
  );
}
