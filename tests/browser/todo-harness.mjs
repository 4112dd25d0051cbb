// Shared plumbing of the todo page's browser tests (todo.test.mjs, todo-two-engines.test.mjs):
// the engine process, the todo app's configuration, Chromium's launch flags, and what a tab shows
// and does. Not a test file itself (node --test runs only `*.test.mjs` here).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
const STATIC_DIR = path.join(REPO, 'static');
const WORKER_MAIN = path.join(REPO, 'worker', 'src', 'main.mjs');
export const ARTIFACTS = path.join(REPO, 'test-artifacts', 'browser');
export const CHROMIUM = '/usr/bin/chromium';
export const SETUP_HINT = 'run scripts/setup-test-deps';

// Launch flags for Chromium running as root in a container; Playwright itself adds --headless,
// --no-sandbox and a throwaway --user-data-dir.
export const CHROMIUM_ARGS = [
  '--disable-gpu',
  '--disable-dev-shm-usage',
  '--disable-quic',
  '--no-first-run',
  '--no-default-browser-check',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-extensions',
  '--disable-default-apps',
  '--mute-audio',
];
export const VIEWPORT = { width: 900, height: 700 };
export const EMPTY_TEXT = 'No todos yet — add one above to get started.';

/**
 * Checks what every todo browser test needs ($III_BIN, Chromium, the worker's npm packages,
 * playwright-core) and resolves to `{bin, chromium}`: the engine binary's absolute path and
 * playwright's launcher. Fails naming the missing piece and scripts/setup-test-deps.
 */
export async function requirements() {
  const bin = process.env.III_BIN;
  assert.ok(bin, 'III_BIN is not set: point it at the engine binary, e.g. III_BIN=target/debug/iii');
  assert.ok(existsSync(bin), `III_BIN=${bin} does not exist (cargo build first)`);
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: ${SETUP_HINT}`);
  assert.ok(
    existsSync(path.join(REPO, 'worker', 'node_modules', 'iii-sdk')),
    `worker/node_modules is missing: ${SETUP_HINT}`,
  );
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (err) {
    throw new Error(`playwright-core is missing (${err.code ?? err.message}): ${SETUP_HINT}`);
  }
  return { bin: path.resolve(bin), chromium };
}

export const launchChromium = (chromium) =>
  chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, chromiumSandbox: false });

/** Retries `check` (which throws while the condition does not hold) until it passes or time runs out. */
export async function eventually(check, { timeout = 10_000, interval = 50 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** A port that is free right now (bound on 127.0.0.1:0, then released). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A YAML double-quoted scalar (JSON strings are valid YAML). */
const q = (s) => JSON.stringify(s);
/** A single-quoted sh word. */
const sh = (s) => `'${String(s).replaceAll("'", `'\\''`)}'`;

/**
 * The todo app's configuration (see iii-config.yaml) on the given ports (0: any free one), with
 * absolute paths. The stream store is a file under ./data/, or the Redis at `redisUrl`.
 */
export function engineConfig({ trusted, pub, stream }, { redisUrl } = {}) {
  const worker = `${sh(process.execPath)} ${sh(WORKER_MAIN)}`;
  const adapter = redisUrl
    ? `adapter:
        name: redis
        config: {redis_url: ${q(redisUrl)}}`
    : `adapter:
        class: modules::stream::adapters::KvStore
        config: {store_method: file_based, file_path: ./data/stream_store}`;
  return `modules:
  - class: modules::worker::WorkerModule
    config: {host: 127.0.0.1, port: ${trusted}}
  - class: modules::worker::WorkerModule
    config:
      host: 127.0.0.1
      port: ${pub}
      static_dir: ${q(STATIC_DIR)}
      max_frame_bytes: 1048576
      max_message_bytes: 1048576
      rbac:
        auth_function_id: todo-project::auth-function
        expose_functions:
          - match("todos::create")
          - match("todos::list")
          - match("todos::get")
          - match("todos::toggle")
          - match("todos::delete")
  - class: modules::shell::ExecModule
    config:
      exec:
        - command: ${q(worker)}
          name: todo-worker
  - class: modules::stream::StreamModule
    config:
      host: 127.0.0.1
      port: ${stream}
      ${adapter}
`;
}

/** The engine process: started in `dir` (config already there), its output appended to engine.log. */
export class Engine {
  constructor(bin, dir) {
    this.bin = bin;
    this.dir = dir;
    this.child = null;
    this.exited = null;
  }

  /** Starts the engine and resolves to its ready file (`{listeners: [{port, url, rbac}], …}`). */
  async start() {
    const ready = path.join(this.dir, 'ready.json');
    rmSync(ready, { force: true });
    const log = openSync(path.join(this.dir, 'engine.log'), 'a');
    const child = spawn(this.bin, ['--config', 'iii-config.yaml', '--ready-file', ready], {
      cwd: this.dir,
      env: { ...process.env, RUST_LOG: process.env.ENGINE_LOG ?? 'info' },
      stdio: ['ignore', log, log],
    });
    closeSync(log);
    this.child = child;
    let spawnError = null;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', (err) => {
        spawnError = err;
        resolve({ code: null, signal: null });
      });
    });

    const deadline = Date.now() + 20_000;
    while (!existsSync(ready)) {
      if (spawnError) throw new Error(`cannot start ${this.bin}: ${spawnError.message}`);
      if (!this.running) {
        throw new Error(`engine exited early (${child.exitCode ?? child.signalCode}):\n${this.logTail()}`);
      }
      if (Date.now() > deadline) throw new Error(`engine not ready within 20 s:\n${this.logTail()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return JSON.parse(readFileSync(ready, 'utf8'));
  }

  get running() {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** SIGTERM, then SIGKILL if it is still running after `graceMs`; resolves to {code, signal}. */
  async stop(graceMs = 15_000) {
    if (!this.child) return null;
    if (this.running) this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    const exit = await this.exited;
    clearTimeout(timer);
    return exit;
  }

  logTail(lines = 80) {
    try {
      return readFileSync(path.join(this.dir, 'engine.log'), 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no engine log)';
    }
  }
}

/** What a tab shows: its todos ([title, completed] in page order) and its counters (null = hidden). */
export function readTab(page) {
  return page.evaluate(() => {
    const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
    const shown = (id) => {
      const el = $(id);
      return el && !el.hidden && !el.closest('[hidden]') ? el.textContent : null;
    };
    return {
      todos: [...document.querySelectorAll('[data-testid="todo-item"]')].map((li) => [
        li.querySelector('[data-testid="todo-title"]').textContent,
        li.dataset.completed === 'true',
      ]),
      remaining: shown('items-remaining'),
      pending: shown('pending-count'),
      done: shown('done-count'),
      clearCompleted: shown('clear-completed') !== null,
      empty: shown('empty-state'),
    };
  });
}

/** Waits until every tab shows `todos`, with counters derived from them. */
export async function expectTodos(pages, todos, timeout) {
  const done = todos.filter(([, c]) => c).length;
  const pending = todos.length - done;
  const want = {
    todos,
    remaining: todos.length ? `${pending} ${pending === 1 ? 'item' : 'items'} remaining` : null,
    pending: todos.length ? `${pending} pending` : null,
    done: done ? `${done} done` : null,
    clearCompleted: done > 0,
    empty: todos.length ? null : EMPTY_TEXT,
  };
  for (const page of pages) await eventually(async () => assert.deepEqual(await readTab(page), want), { timeout });
}

export const statusOf = (page) => page.getByTestId('connection-status');

/** Waits until the page is connected and has loaded the list. */
export async function waitConnected(page, timeout = 20_000) {
  await page.locator('[data-testid="connection-status"][data-state="connected"]').waitFor({ timeout });
  await page.locator('[data-testid="app"][data-loaded="true"]').waitFor({ timeout });
}

export async function addTodo(page, title, how) {
  const input = page.getByRole('textbox', { name: 'New todo' });
  await input.fill(title);
  if (how === 'enter') await input.press('Enter');
  else await page.getByRole('button', { name: 'Add', exact: true }).click();
  assert.equal(await input.inputValue(), '', 'the input is cleared once the todo is sent');
}

export const checkbox = (page, title) => page.getByRole('checkbox', { name: title, exact: true });

/** Saves a screenshot of the viewport, with entrance animations (new rows, toasts) finished. */
export function screenshot(page, name) {
  return page.screenshot({ path: path.join(ARTIFACTS, name), animations: 'disabled' });
}
