// dom.js — the console's small DOM and formatting helpers: elements, keyed table rows, a
// panel's ready / "not available" / error state, and numbers, durations and clock times.

export const $ = (id) => document.querySelector(`[data-testid="${id}"]`);

/** `h('td', {class: 'num'}, '12')`: an element with attributes and children. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const rowSignatures = new WeakMap();

/**
 * Makes `tbody` show one row per item, in order: a row whose data did not change is kept as it
 * is (so a selection or a hover survives the next poll), others are rebuilt.
 */
export function syncRows(container, items, keyOf, build, emptyText, columns) {
  const old = new Map();
  for (const el of [...container.children]) {
    if (el.dataset.key !== undefined) old.set(el.dataset.key, el);
    else el.remove();
  }
  const seen = new Map();
  const rows = items.map((item) => {
    // Keys repeat only if the engine reports the same thing twice; keep both rows.
    const base = String(keyOf(item));
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    const key = n ? `${base}#${n}` : base;
    const sig = JSON.stringify(item);
    let el = old.get(key);
    old.delete(key);
    if (!el || rowSignatures.get(el) !== sig) {
      el?.remove();
      el = build(item);
      el.dataset.key = key;
      rowSignatures.set(el, sig);
    }
    return el;
  });
  for (const el of old.values()) el.remove();
  rows.forEach((el, i) => {
    if (container.children[i] !== el) container.insertBefore(el, container.children[i] ?? null);
  });
  if (!items.length && emptyText) {
    container.append(
      container.tagName === 'TBODY'
        ? h('tr', { class: 'empty' }, h('td', { colspan: columns }, emptyText))
        : h('li', { class: 'dim' }, emptyText),
    );
  }
}

/**
 * A panel's state: `ready`, `unavailable` (the function is not registered: a quiet note) or
 * `error` (the call failed: the message, the last data stays).
 */
export function setState(panel, result, functionId) {
  const note = [...panel.children].find((c) => c.classList.contains('unavailable'));
  if (result.ok) {
    panel.dataset.state = 'ready';
    note.hidden = true;
    return true;
  }
  note.replaceChildren();
  if (result.missing) {
    panel.dataset.state = 'unavailable';
    note.dataset.kind = 'missing';
    note.append(...unavailableText(result, functionId));
  } else {
    panel.dataset.state = 'error';
    note.dataset.kind = 'error';
    note.append(h('code', {}, functionId), `: ${result.error.code ?? 'error'}: ${result.error.message ?? ''}`);
  }
  note.hidden = false;
  return false;
}

/** The quiet note of a panel whose function is not there (or keeps nothing). */
export function unavailableText(result, functionId) {
  return result.why
    ? ['Not available: ', result.why, '.']
    : ['Not available on this engine (', h('code', {}, functionId), ' is not registered).'];
}

// ───────────────────────────── formatting ─────────────────────────────

export const int = new Intl.NumberFormat('en-US');
export const dec = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });

export function fmtMs(ms) {
  if (ms == null || !Number.isFinite(Number(ms))) return '—';
  ms = Number(ms);
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 100) return `${dec.format(ms)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

export function fmtAge(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d`;
}

const two = (n) => String(n).padStart(2, '0');
export function fmtClock(ms, withMs = false) {
  const d = new Date(ms);
  const t = `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  return withMs ? `${t}.${String(d.getMilliseconds()).padStart(3, '0')}` : t;
}

/** Unix nanoseconds (a number or a string) → milliseconds. */
export const nsToMs = (ns) => Number(ns ?? 0) / 1e6;

export function clip(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

export function statusBadge(status) {
  const s = String(status ?? 'unset').toLowerCase();
  const cls = s === 'error' ? 'badge-err' : s === 'ok' ? 'badge-ok' : '';
  return h('span', { class: `badge ${cls}` }, s);
}
