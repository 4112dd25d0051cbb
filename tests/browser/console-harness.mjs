// Shared plumbing of the console's browser test (console.test.mjs): the engine process, its
// configuration, Chromium's launch flags, and page helpers. Not a test file itself (node --test
// runs only `*.test.mjs` here).

import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const SDK = path.join(REPO, 'worker', 'node_modules', 'iii-sdk', 'dist', 'index.mjs');
const DEMO_WORKER = fileURLToPath(new URL('console-demo-worker.mjs', import.meta.url));
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
export const VIEWPORT = { width: 1280, height: 900 };

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

/** A YAML double-quoted scalar (JSON strings are valid YAML). */
const q = (s) => JSON.stringify(s);
/** A single-quoted sh word. */
const sh = (s) => `'${String(s).replaceAll("'", `'\\''`)}'`;

/** Trusted listener, public RBAC listener (serving `site`), iii-stream, iii-state and the demo worker, on free ports. */
export function engineConfig(site) {
  return `workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0}
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
      static_dir: ${q(site)}
      rbac: {expose_functions: ['match("demo::hello")']}
  - name: iii-stream
    config:
      host: 127.0.0.1
      port: 0
      adapter: {name: kv, config: {store_method: file_based, file_path: ./data/stream}}
  - name: iii-state
    config:
      adapter: {name: kv, config: {store_method: file_based, file_path: ./data/state}}
  - name: iii-exec
    config:
      exec:
        - command: ${q(`${sh(process.execPath)} ${sh(DEMO_WORKER)}`)}
          name: console-demo-worker
          env: {III_SDK_URL: ${q(pathToFileURL(SDK).href)}}
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
      if (!this.running) throw new Error(`engine exited early (${child.exitCode ?? child.signalCode}):\n${this.logTail()}`);
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

/**
 * Calls a function through the engine from `page` (any page of the trusted origin), with the
 * console's own client module on a connection of its own: `{ok: result}` or `{code, message}`.
 */
export function engineCall(page, function_id, payload = {}) {
  return page.evaluate(
    async ({ function_id, payload }) => {
      if (!window.__driver) {
        const { registerWorker } = await import('/console/iii-client.js');
        window.__driver = registerWorker(`ws://${location.host}/`);
      }
      try {
        return { ok: (await window.__driver.trigger({ function_id, payload, timeoutMs: 5000 })) ?? null };
      } catch (err) {
        return { code: err.code, message: err.message };
      }
    },
    { function_id, payload },
  );
}

export const byTestId = (page, id) => page.locator(`[data-testid="${id}"]`);
export const attr = (page, selector, name) => page.locator(selector).first().getAttribute(name);
export const callsOf = async (page, id) => Number(await attr(page, `[data-testid="function-row"][data-id="${id}"]`, 'data-calls'));

/** Waits until the console has finished `n` more polls. */
export async function polls(page, n) {
  const now = Number((await page.locator('body').getAttribute('data-polls')) ?? 0);
  await page.waitForFunction((target) => Number(document.body.dataset.polls ?? 0) >= target, now + n, { timeout: 15_000 });
}

export function screenshot(page, name) {
  return page.screenshot({ path: path.join(ARTIFACTS, name), animations: 'disabled', fullPage: true });
}
