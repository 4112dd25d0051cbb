// app.js — the todo page's logic: plain DOM, no framework.
//
// One WebSocket (iii-client.js) carries everything. Calls go to the JS worker's `todos::*` functions;
// the list itself changes only when the engine pushes a stream event to our `ui::on-todo-change`
// (so every tab, including the one that acted, sees the same thing). The list is reloaded with
// `todos::list` after every reconnect, events that arrive during a (re)load are applied on top of
// it, and failures are shown as toasts instead of being swallowed.

import { registerWorker } from './iii-client.js';

const MAX_TITLE = 200;
const TOAST_MS = 6000;
const MAX_TOASTS = 4;
/** How long to wait for a stream event after a call succeeded before reloading the list. */
const EVENT_GRACE_MS = 2000;

// ───────────────────────────── elements ─────────────────────────────

const $ = (id) => /** @type {HTMLElement} */ (document.querySelector(`[data-testid="${id}"]`));
const el = {
  app: $('app'),
  form: /** @type {HTMLFormElement} */ ($('new-todo-form')),
  input: /** @type {HTMLInputElement} */ ($('new-todo-input')),
  add: /** @type {HTMLButtonElement} */ ($('add-button')),
  list: $('todo-list'),
  loading: $('loading'),
  loadError: $('load-error'),
  retryLoad: $('retry-load'),
  empty: $('empty-state'),
  footer: $('footer'),
  remaining: $('items-remaining'),
  clear: $('clear-completed'),
  chips: $('chips'),
  pendingChip: $('pending-count'),
  doneChip: $('done-count'),
  status: $('connection-status'),
  statusText: $('connection-status-text'),
  statusCountdown: /** @type {HTMLElement} */ (document.querySelector('.status-countdown')),
  statusDetail: $('connection-status-detail'),
  reconnect: $('reconnect-button'),
  toasts: $('toasts'),
  announcer: $('announcer'),
};

// ───────────────────────────── state ─────────────────────────────

/**
 * @typedef {{id: string, title: string, completed: boolean, created_at?: number}} Todo
 */

/** Todos by id, in the order the store gave them (creates append). */
const todos = /** @type {Map<string, Todo>} */ (new Map());
/** True once a `todos::list` has succeeded. */
let loaded = false;
/** While a `todos::list` is in flight: stream events to apply on top of its result. */
let syncBuffer = /** @type {object[]|null} */ (null);
let reloadRequested = false;
/** Items with a call in flight: what we show until the engine confirms. */
const busy = /** @type {Map<string, {kind: 'toggle'|'delete', completed?: boolean, timer?: number}>} */ (new Map());
/** Adds in flight, shown as placeholder rows until their `create` event arrives. */
const pendingAdds = /** @type {Map<number, {title: string, id: string|null, timer?: number}>} */ (new Map());
let pendingAddSeq = 0;
/** Latest connection state and info from the client. */
let connection = {
  state: 'connecting',
  info: /** @type {import('./iii-client.js').ConnectionInfo} */ ({ attempt: 0, lastError: null, authRejected: false, connections: 0 }),
};

// ───────────────────────────── engine connection ─────────────────────────────

/** `?ws=` wins (tests use ephemeral ports); otherwise the page's own origin. */
function engineUrl() {
  const override = new URLSearchParams(location.search).get('ws');
  if (override) return override;
  if (location.protocol !== 'http:' && location.protocol !== 'https:') return 'ws://localhost:3111/';
  return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/`;
}

const iii = registerWorker(engineUrl());

// ───────────────────────────── loading and live events ─────────────────────────────

/** Fetch the whole list and replace ours; stream events that arrive meanwhile are applied on top. */
async function loadTodos() {
  if (syncBuffer) {
    reloadRequested = true;
    return;
  }
  syncBuffer = [];
  el.loadError.hidden = true;
  try {
    const result = await iii.trigger({ function_id: 'todos::list', payload: {} });
    const items = Array.isArray(result) ? result : Array.isArray(result?.items) ? result.items : [];
    todos.clear();
    for (const item of items) if (isTodo(item)) todos.set(item.id, normalize(item));
    for (const event of syncBuffer) applyEvent(event, false);
    settleFromList();
    loaded = true;
  } catch (err) {
    for (const event of syncBuffer) applyEvent(event, false);
    // Offline, the status line already says so and the list reloads once connected.
    if (connection.state === 'connected') {
      if (!loaded) el.loadError.hidden = false;
      toast('Could not load todos', err);
    }
  } finally {
    syncBuffer = null;
    render();
  }
  if (reloadRequested) {
    reloadRequested = false;
    loadTodos();
  }
}

/**
 * Handler of `ui::on-todo-change`: a stream change event
 * `{type:'stream', streamName, groupId, id, event:{type:'create'|'update'|'delete', data}}`.
 */
function onTodoChange(change) {
  if (syncBuffer) syncBuffer.push(change);
  else {
    applyEvent(change, true);
    render();
  }
  return {};
}

/** Apply one stream event to `todos`: create/update are upserts by id, delete removes. */
function applyEvent(change, announceIt) {
  if (!change || typeof change !== 'object' || (change.streamName && change.streamName !== 'todo')) return;
  const kind = change.event?.type;
  const data = change.event?.data;
  const id = change.id ?? data?.id;
  if (typeof id !== 'string') return;

  if (kind === 'create' || kind === 'update') {
    if (!data || typeof data !== 'object') return;
    const todo = normalize({ ...data, id });
    const before = todos.get(id);
    todos.set(id, todo);
    const mine = before ? settleOwn(id, 'toggle') : settleOwnCreate(todo);
    if (announceIt && !mine) {
      if (!before) announce('A todo was added in another tab');
      else if (before.completed !== todo.completed) {
        announce(`A todo was marked ${todo.completed ? 'done' : 'not done'} in another tab`);
      }
    }
  } else if (kind === 'delete') {
    const before = todos.get(id);
    todos.delete(id);
    const mine = settleOwn(id, 'delete');
    if (announceIt && before && !mine) announce('A todo was deleted in another tab');
  }
  // other event types (e.g. custom `stream::send` events) are ignored
}

/** A `create` event for one of our adds: drop its placeholder row. */
function settleOwnCreate(todo) {
  for (const [key, add] of pendingAdds) {
    if (add.id === todo.id || (add.id === null && add.title === todo.title)) {
      clearTimeout(add.timer);
      pendingAdds.delete(key);
      return true;
    }
  }
  return false;
}

/** The event confirming our own toggle/delete arrived: stop showing the item as busy. */
function settleOwn(id, kind) {
  const b = busy.get(id);
  if (!b || b.kind !== kind) return false;
  clearTimeout(b.timer);
  busy.delete(id);
  return true;
}

/** After a reload, our in-flight work the list already reflects is done (its event was missed). */
function settleFromList() {
  for (const [key, add] of pendingAdds) {
    if (add.id !== null && todos.has(add.id)) {
      clearTimeout(add.timer);
      pendingAdds.delete(key);
    }
  }
  for (const [id, b] of busy) {
    if (b.kind === 'delete' && !todos.has(id) && b.timer) {
      clearTimeout(b.timer);
      busy.delete(id);
    }
  }
}

const isTodo = (x) => x && typeof x === 'object' && typeof x.id === 'string';
const normalize = (t) => ({ ...t, title: String(t.title ?? ''), completed: Boolean(t.completed) });

// ───────────────────────────── actions ─────────────────────────────

async function addTodo() {
  const title = el.input.value.trim().slice(0, MAX_TITLE);
  if (!title) return;
  el.input.value = '';
  updateAddButton();
  const key = ++pendingAddSeq;
  pendingAdds.set(key, { title, id: null });
  render();
  try {
    const created = await iii.trigger({ function_id: 'todos::create', payload: { title } });
    const add = pendingAdds.get(key);
    announce('Todo added');
    if (!add) return; // its create event already arrived
    if (typeof created?.id === 'string' && !todos.has(created.id)) {
      // Saved, but the event is not here yet: keep the placeholder a moment, then resync.
      add.id = created.id;
      add.timer = window.setTimeout(() => {
        if (pendingAdds.delete(key)) loadTodos();
      }, EVENT_GRACE_MS);
    } else pendingAdds.delete(key);
  } catch (err) {
    pendingAdds.delete(key);
    if (!el.input.value.trim()) {
      el.input.value = title; // give the text back so nothing typed is lost
      updateAddButton();
    }
    toast('Could not add the todo', err);
  } finally {
    render();
  }
}

/** Flip one todo. The checkbox shows the new value at once; the item stays busy until confirmed. */
async function toggleTodo(id) {
  const todo = todos.get(id);
  if (!todo || busy.has(id)) return;
  const entry = { kind: /** @type {const} */ ('toggle'), completed: !todo.completed };
  busy.set(id, entry);
  render();
  try {
    await iii.trigger({ function_id: 'todos::toggle', payload: { id } });
    waitForEvent(id, entry);
  } catch (err) {
    busy.delete(id);
    toast('Could not update the todo', err);
  } finally {
    render();
  }
}

/**
 * Delete one todo; the row goes away when the delete event arrives.
 * @returns {Promise<unknown>} the error, if the call failed
 */
async function deleteTodo(id, { quiet = false } = {}) {
  const todo = todos.get(id);
  if (!todo || busy.has(id)) return null;
  const entry = { kind: /** @type {const} */ ('delete') };
  busy.set(id, entry);
  render();
  try {
    await iii.trigger({ function_id: 'todos::delete', payload: { id } });
    waitForEvent(id, entry);
    return null;
  } catch (err) {
    busy.delete(id);
    if (!quiet) toast('Could not delete the todo', err);
    return err;
  } finally {
    render();
  }
}

/** After a successful call, give its stream event a moment to arrive; if it does not, resync. */
function waitForEvent(id, entry) {
  if (busy.get(id) !== entry) return; // already settled by the event
  const current = todos.get(id);
  if (entry.kind === 'delete' ? !current : current?.completed === entry.completed) {
    busy.delete(id); // the list already shows the outcome
    return;
  }
  entry.timer = window.setTimeout(() => {
    if (busy.get(id) !== entry) return;
    busy.delete(id);
    render();
    loadTodos();
  }, EVENT_GRACE_MS);
}

async function clearCompleted() {
  const done = [...todos.values()].filter((t) => t.completed && !busy.has(t.id));
  const errors = (await Promise.all(done.map((t) => deleteTodo(t.id, { quiet: true })))).filter(Boolean);
  if (errors.length) {
    toast(`Could not delete ${errors.length} completed ${errors.length === 1 ? 'todo' : 'todos'}`, errors[0]);
  }
}

// ───────────────────────────── rendering ─────────────────────────────

/** @type {Map<string, {li: HTMLLIElement, checkbox: HTMLInputElement, title: HTMLLabelElement, del: HTMLButtonElement}>} */
const rows = new Map();
let rowSeq = 0;

const DELETE_ICON =
  '<svg viewBox="0 0 24 24" width="18" height="18" aria-hidden="true" focusable="false">' +
  '<path d="M6 6l12 12M18 6L6 18" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"/></svg>';

/** Todos ordered by `created_at` when they have one; otherwise in arrival order, after dated ones. */
function orderedTodos() {
  const key = (t) => (Number.isFinite(t.created_at) ? t.created_at : Infinity);
  return [...todos.values()]
    .map((t, i) => ({ t, i }))
    .sort((a, b) => key(a.t) - key(b.t) || a.i - b.i)
    .map(({ t }) => t);
}

function render() {
  const list = orderedTodos();
  renderRows(list);
  renderPendingAdds();

  const done = list.filter((t) => t.completed).length;
  const pending = list.length - done;
  const hasItems = list.length > 0;

  el.app.dataset.loaded = String(loaded);
  el.list.setAttribute('aria-busy', String(!loaded));
  el.loading.hidden = loaded || !el.loadError.hidden;
  el.empty.hidden = !loaded || hasItems || pendingAdds.size > 0;

  el.chips.hidden = !hasItems;
  setText(el.pendingChip, `${pending} pending`);
  el.doneChip.hidden = done === 0;
  setText(el.doneChip, `${done} done`);

  el.footer.hidden = !hasItems;
  setText(el.remaining, `${pending} ${pending === 1 ? 'item' : 'items'} remaining`);
  el.clear.hidden = done === 0;

  document.title = pending > 0 ? `(${pending}) Todo App` : 'Todo App';
  renderStatus();
}

/** Keyed update of the list: rows are reused so focus and checkbox state survive re-renders. */
function renderRows(list) {
  const focusedId = rowIdOf(document.activeElement);
  const oldOrder = [...el.list.children].map((li) => rowIdOf(li));

  for (const [id, row] of rows) {
    if (!todos.has(id)) {
      row.li.remove();
      rows.delete(id);
    }
  }
  let cursor = el.list.firstElementChild;
  for (const todo of list) {
    const row = rows.get(todo.id) ?? createRow(todo.id);
    updateRow(row, todo);
    if (row.li !== cursor) el.list.insertBefore(row.li, cursor);
    else cursor = cursor.nextElementSibling;
  }

  // The focused row went away: move focus to the row that took its place, or back to the input.
  if (focusedId && !rows.has(focusedId)) {
    const index = Math.min(oldOrder.indexOf(focusedId), list.length - 1);
    const next = index >= 0 ? rows.get(list[index].id) : null;
    (next ? next.checkbox : el.input).focus();
  }
}

function createRow(id) {
  const uid = `todo-${++rowSeq}`;
  const li = document.createElement('li');
  li.className = 'todo';
  li.dataset.testid = 'todo-item';
  li.dataset.id = id;

  const checkbox = document.createElement('input');
  checkbox.type = 'checkbox';
  checkbox.id = uid;
  checkbox.className = 'todo-check';
  checkbox.dataset.testid = 'todo-checkbox';

  const title = document.createElement('label');
  title.htmlFor = uid;
  title.className = 'todo-title';
  title.dataset.testid = 'todo-title';

  const del = document.createElement('button');
  del.type = 'button';
  del.className = 'icon-button todo-delete';
  del.dataset.testid = 'todo-delete';
  del.title = 'Remove';
  del.innerHTML = DELETE_ICON;

  li.append(checkbox, title, del);
  const row = { li, checkbox, title, del };
  rows.set(id, row);
  return row;
}

function updateRow(row, todo) {
  const b = busy.get(todo.id);
  const completed = b?.kind === 'toggle' ? b.completed : todo.completed;
  row.checkbox.checked = completed;
  row.li.classList.toggle('is-done', completed);
  row.li.classList.toggle('is-deleting', b?.kind === 'delete');
  row.li.dataset.completed = String(todo.completed);
  if (b) {
    row.li.setAttribute('aria-busy', 'true');
    row.checkbox.setAttribute('aria-disabled', 'true');
    row.del.setAttribute('aria-disabled', 'true');
  } else {
    row.li.removeAttribute('aria-busy');
    row.checkbox.removeAttribute('aria-disabled');
    row.del.removeAttribute('aria-disabled');
  }
  setText(row.title, todo.title);
  const label = `Delete ${todo.title}`;
  if (row.del.getAttribute('aria-label') !== label) row.del.setAttribute('aria-label', label);
}

/** @type {Map<number, {li: HTMLLIElement, note: HTMLElement}>} */
const pendingRows = new Map();

/** Placeholder rows, after the real ones, for adds in flight (or queued while offline). */
function renderPendingAdds() {
  for (const [key, row] of pendingRows) {
    if (!pendingAdds.has(key)) {
      row.li.remove();
      pendingRows.delete(key);
    }
  }
  const note = connection.state === 'connected' ? 'Saving…' : 'Waiting for connection…';
  for (const [key, add] of pendingAdds) {
    let row = pendingRows.get(key);
    if (!row) {
      const li = document.createElement('li');
      li.className = 'todo todo-pending';
      li.dataset.testid = 'todo-item-pending';
      li.setAttribute('aria-busy', 'true');
      const spinner = document.createElement('span');
      spinner.className = 'spinner';
      spinner.setAttribute('aria-hidden', 'true');
      const title = document.createElement('span');
      title.className = 'todo-title';
      title.textContent = add.title;
      row = { li, note: document.createElement('span') };
      row.note.className = 'todo-note';
      li.append(spinner, title, row.note);
      pendingRows.set(key, row);
      el.list.append(li); // renderRows inserts real rows before these, so they stay last
    }
    setText(row.note, note);
  }
}

/** Id of the todo row containing `node`, if any. */
function rowIdOf(node) {
  const li = node instanceof Element ? node.closest('li.todo') : null;
  return li instanceof HTMLElement && li.dataset.id ? li.dataset.id : null;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function updateAddButton() {
  el.add.disabled = el.input.value.trim() === '';
}

// ───────────────────────────── connection status ─────────────────────────────

let countdownTimer = 0;

/** Connection state listener: remember it, keep a countdown running while waiting to retry. */
function onConnectionChange(state, info) {
  connection = { state, info };
  if (state === 'connected' && !loaded && !syncBuffer) loadTodos(); // an earlier load failed or timed out
  clearInterval(countdownTimer);
  if (state === 'reconnecting') countdownTimer = window.setInterval(renderStatus, 500);
  renderStatus();
  renderPendingAdds();
}

/** Status line: a dot, a short label, a visual-only countdown, and a detail (error or queued changes). */
function renderStatus() {
  const { state, info } = connection;
  el.status.dataset.state = state;
  el.status.dataset.auth = info.authRejected ? 'rejected' : 'ok';

  let text;
  if (state === 'connected') text = 'Connected';
  else if (info.authRejected) text = 'Auth rejected';
  else if (state === 'failed') text = 'Connection failed';
  else if (navigator.onLine === false) text = 'Offline';
  else if (info.connections === 0 && info.attempt === 0) text = 'Connecting…';
  else text = 'Reconnecting';
  setText(el.statusText, text);

  // aria-hidden: screen readers hear "Reconnecting" once, not every second of the countdown.
  let countdown = '';
  if (state === 'reconnecting' && info.retryAt) {
    const seconds = Math.max(0, Math.ceil((info.retryAt - Date.now()) / 1000));
    countdown = text === 'Reconnecting' ? ` in ${seconds}s…` : `, retrying in ${seconds}s…`;
  } else if (text === 'Reconnecting') countdown = '…';
  setText(el.statusCountdown, countdown);

  const queued = state === 'connected' ? 0 : pendingAdds.size + busy.size;
  let detail = '';
  if (queued > 0) detail = `${queued} ${queued === 1 ? 'change' : 'changes'} will sync when reconnected`;
  else if (state !== 'connected' && info.lastError) detail = info.lastError.message;
  setText(el.statusDetail, detail);
  el.status.title = state !== 'connected' && info.lastError ? `${info.lastError.code}: ${info.lastError.message}` : '';
  el.reconnect.hidden = state !== 'failed' && state !== 'reconnecting';
}

// ───────────────────────────── toasts and announcements ─────────────────────────────

/**
 * Show an error toast (role=alert) with the engine's code and message; auto-dismisses.
 * @param {string} title what failed, in words
 * @param {any} err an IIIError (or anything with code/message)
 */
function toast(title, err) {
  const code = String(err?.code ?? 'ERROR');
  const message = String(err?.message ?? err ?? '');
  console.warn(`[todo] ${title}: ${code}: ${message}`);

  const node = document.createElement('div');
  node.className = 'toast';
  node.setAttribute('role', 'alert');
  node.dataset.testid = 'toast';
  node.dataset.code = code;
  const body = document.createElement('div');
  body.className = 'toast-body';
  const heading = document.createElement('strong');
  heading.className = 'toast-title';
  heading.textContent = title;
  const detail = document.createElement('span');
  detail.className = 'toast-detail';
  const codeEl = document.createElement('code');
  codeEl.className = 'toast-code';
  codeEl.dataset.testid = 'toast-code';
  codeEl.textContent = code;
  const messageEl = document.createElement('span');
  messageEl.dataset.testid = 'toast-message';
  messageEl.textContent = message;
  detail.append(codeEl, ' ', messageEl);
  body.append(heading, detail);
  const close = document.createElement('button');
  close.type = 'button';
  close.className = 'icon-button toast-close';
  close.dataset.testid = 'toast-close';
  close.setAttribute('aria-label', 'Dismiss notification');
  close.innerHTML = DELETE_ICON;
  node.append(body, close);

  const dismiss = () => node.remove();
  close.addEventListener('click', dismiss);
  // Auto-dismiss, paused while the pointer or focus is on the toast.
  let timer = window.setTimeout(dismiss, TOAST_MS);
  const pause = () => clearTimeout(timer);
  const resume = () => {
    clearTimeout(timer);
    timer = window.setTimeout(dismiss, TOAST_MS / 2);
  };
  node.addEventListener('mouseenter', pause);
  node.addEventListener('mouseleave', resume);
  node.addEventListener('focusin', pause);
  node.addEventListener('focusout', resume);

  el.toasts.append(node);
  while (el.toasts.children.length > MAX_TOASTS) el.toasts.firstElementChild?.remove();
}

let announceTimer = 0;
/** Polite screen-reader announcement (e.g. changes made in another tab). */
function announce(message) {
  clearTimeout(announceTimer);
  el.announcer.textContent = '';
  announceTimer = window.setTimeout(() => (el.announcer.textContent = message), 50);
}

// ───────────────────────────── input and keyboard ─────────────────────────────

el.form.addEventListener('submit', (e) => {
  e.preventDefault();
  addTodo();
});
el.input.addEventListener('input', updateAddButton);
el.input.addEventListener('keydown', (e) => {
  if (e.key === 'Escape') {
    el.input.value = '';
    updateAddButton();
  }
});

// `/` focuses the input from anywhere outside a text field.
document.addEventListener('keydown', (e) => {
  if (e.key !== '/' || e.ctrlKey || e.metaKey || e.altKey || e.defaultPrevented) return;
  const t = e.target;
  if (t instanceof HTMLElement && (t.isContentEditable || t.closest('input[type=text], textarea, select'))) return;
  e.preventDefault();
  el.input.focus();
});

el.list.addEventListener('click', (e) => {
  const target = /** @type {Element} */ (e.target);
  const id = rowIdOf(target);
  if (!id) return;
  if (target.closest('.todo-delete')) {
    deleteTodo(id);
  } else if (target instanceof HTMLInputElement && target.type === 'checkbox' && busy.has(id)) {
    e.preventDefault(); // a toggle is in flight: a second click must not flip it back
  }
});
el.list.addEventListener('change', (e) => {
  const target = e.target;
  if (target instanceof HTMLInputElement && target.type === 'checkbox') {
    const id = rowIdOf(target);
    if (id) toggleTodo(id);
  }
});
// Delete or Backspace on a focused row (its checkbox) deletes it.
el.list.addEventListener('keydown', (e) => {
  if (e.key !== 'Delete' && e.key !== 'Backspace') return;
  const target = e.target;
  if (!(target instanceof HTMLInputElement && target.type === 'checkbox')) return;
  const id = rowIdOf(target);
  if (id) {
    e.preventDefault();
    deleteTodo(id);
  }
});

el.clear.addEventListener('click', clearCompleted);
el.retryLoad.addEventListener('click', () => loadTodos());
el.reconnect.addEventListener('click', () => iii.reconnect());
addEventListener('online', renderStatus);
addEventListener('offline', renderStatus);

// ───────────────────────────── start ─────────────────────────────

// Live updates: our function plus a stream trigger bound to it. Registrations are (re)sent on every
// connection before queued calls, so the trigger is bound before the list is read.
iii.registerFunction('ui::on-todo-change', onTodoChange);
iii.registerTrigger({
  type: 'stream',
  function_id: 'ui::on-todo-change',
  config: { stream_name: 'todo', group_id: 'todos' },
});
iii.addConnectionStateListener(onConnectionChange);
// Changes made while we were offline were missed. (Before the first successful load,
// onConnectionChange takes care of loading.)
iii.addReconnectListener(() => loaded && loadTodos());
iii.addErrorListener((err) => {
  if (err.code === 'AUTH_ERROR') return; // shown in the status line; it repeats on every retry
  toast('Live updates unavailable', err);
});

updateAddButton();
render();
loadTodos();
