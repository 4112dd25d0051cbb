// Shared plumbing of the console's browser test (console.test.mjs): the engine process, its
// configuration, Chromium's launch flags, and page helpers. Not a test file itself (node --test
// runs only `*.test.mjs` here).

import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const SDK = path.join(REPO, 'worker', 'node_modules', 'iii-sdk', 'dist', 'index.mjs');
const DEMO_WORKER = fileURLToPath(new URL('console-demo-worker.mjs', import.meta.url));
export const ARTIFACTS = path.join(REPO, 'test-artifacts', 'browser');

// Launch flags for Chromium running as root in a container; Playwright itself adds --headless,
// --no-sandbox and a throwaway --user-data-dir.
export { CHROMIUM, CHROMIUM_ARGS, SETUP_HINT } from './todo-harness.mjs';
export const VIEWPORT = { width: 1280, height: 900 };

export { eventually } from './todo-harness.mjs';

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

/** The engine process (shared with the todo tests). */
export { Engine } from './todo-harness.mjs';

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
