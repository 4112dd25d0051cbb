// The todo page in headless Chromium against the real engine.
//
// Starts the `iii` binary ($III_BIN) in a fresh temporary directory with the todo app's layout
// (trusted port, public RBAC port serving static/, the JS todo worker started by the engine,
// a file-backed stream store), all on free ports, and drives the page in two browser contexts
// ("tabs"): live updates between them, counters, persistence and resync across an engine restart,
// what a browser session may not call, and how a rejected call is shown. The engine process, the
// config and the page helpers are in todo-harness.mjs.
//
//   III_BIN=target/debug/iii node --test tests/browser/
//
// Screenshots go to test-artifacts/browser/ at the repository root. Needs Debian's Chromium at
// /usr/bin/chromium and the npm packages of tests/browser and worker (scripts/setup-test-deps).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import {
  ARTIFACTS,
  EMPTY_TEXT,
  Engine,
  VIEWPORT,
  addTodo,
  checkbox,
  engineConfig,
  eventually,
  expectTodos,
  freePort,
  launchChromium,
  readTab,
  requirements,
  screenshot,
  statusOf,
  waitConnected,
} from './todo-harness.mjs';

// ───────────────────────────── the suite ─────────────────────────────

describe('todo page in Chromium, against the real engine', { timeout: 120_000 }, () => {
  /** @type {Engine} */ let engine;
  let browser;
  let workDir;
  let ports;
  let failed = false;
  /** Console errors and page errors of every page: {tab, kind, text, engineDown}. */
  const problems = [];
  /** While the engine is down, the browser's own WebSocket failures are expected (see `unexpected`). */
  let engineDown = false;

  /** A new tab in its own browser context (so it is never a throttled background tab). */
  async function openTab(name) {
    const context = await browser.newContext({ viewport: VIEWPORT });
    const page = await context.newPage();
    page.on('console', (msg) => {
      if (msg.type() === 'error') problems.push({ tab: name, kind: 'console', text: msg.text(), engineDown });
    });
    page.on('pageerror', (err) => problems.push({ tab: name, kind: 'pageerror', text: String(err), engineDown }));
    return page;
  }

  /** The browser's own console error for a WebSocket the stopped engine refused. */
  const isRefused = (p) =>
    p.kind === 'console' &&
    p.engineDown &&
    p.text ===
      `WebSocket connection to 'ws://127.0.0.1:${ports.pub}/' failed: ` +
        'Error in connection establishment: net::ERR_CONNECTION_REFUSED';

  /** Console errors and page errors, except those refusals. */
  const unexpected = () => problems.filter((p) => !isRefused(p));

  /** Runs a test body; on failure, shows the engine's log (what the engine saw). */
  const withLog = (fn) => async (t) => {
    try {
      await fn(t);
    } catch (err) {
      failed = true;
      const log = engine?.logTail() ?? '';
      console.error(`---- engine log (${workDir}/engine.log), last lines ----\n${log}\n---- end of engine log ----`);
      throw err;
    }
  };

  before(async () => {
    const { bin, chromium } = await requirements();
    mkdirSync(ARTIFACTS, { recursive: true });

    // Fixed ports (picked free now) so the engine comes back on the same ones after a restart.
    ports = { trusted: await freePort(), pub: await freePort(), stream: await freePort() };
    workDir = mkdtempSync(path.join(tmpdir(), 'iii-browser-'));
    writeFileSync(path.join(workDir, 'iii-config.yaml'), engineConfig(ports));
    engine = new Engine(bin, workDir);
    await engine.start();

    browser = await launchChromium(chromium);
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await engine?.stop(5_000).catch(() => {});
    if (workDir && !failed) rmSync(workDir, { recursive: true, force: true });
    else if (workDir) console.error(`kept the engine's directory for inspection: ${workDir}`);
  });

  // Never leave the engine behind, even if the runner is interrupted.
  process.once('exit', () => engine?.running && engine.child.kill('SIGKILL'));

  test(
    'two tabs stay in sync, and survive an engine restart',
    withLog(async () => {
      const url = `http://127.0.0.1:${ports.pub}/`;
      const a = await openTab('A');
      const b = await openTab('B');
      // The engine's worker (and with it the auth function) may still be starting: the page
      // retries on its own until it is admitted.
      await Promise.all([a.goto(url), b.goto(url)]);
      await Promise.all([waitConnected(a), waitConnected(b)]);

      // Empty list.
      await expectTodos([a, b], []);
      assert.equal(await a.getByTestId('empty-state').textContent(), EMPTY_TEXT);
      const add = a.getByRole('button', { name: 'Add', exact: true });
      assert.ok(await add.isDisabled(), 'Add is disabled while the input is empty');

      // Add with Enter in A, with the button in A, with Enter in B: every tab sees every add.
      await addTodo(a, 'Buy milk', 'enter');
      await expectTodos([b, a], [['Buy milk', false]]);
      await addTodo(a, 'Walk the dog', 'button');
      await addTodo(b, 'Water the plants', 'enter');
      await addTodo(a, 'Call mom', 'button');
      await expectTodos(
        [a, b],
        [
          ['Buy milk', false],
          ['Walk the dog', false],
          ['Water the plants', false],
          ['Call mom', false],
        ],
      );
      await screenshot(a, '01-after-adding.png');

      // Toggle in B shows in A; toggle in A shows in B.
      await checkbox(b, 'Buy milk').click();
      await expectTodos(
        [a, b],
        [
          ['Buy milk', true],
          ['Walk the dog', false],
          ['Water the plants', false],
          ['Call mom', false],
        ],
      );
      await checkbox(a, 'Call mom').click();
      const toggled = [
        ['Buy milk', true],
        ['Walk the dog', false],
        ['Water the plants', false],
        ['Call mom', true],
      ];
      await expectTodos([b, a], toggled);
      assert.ok(await checkbox(a, 'Buy milk').isChecked(), 'the checkbox of a done todo is checked');
      await screenshot(a, '02-after-toggling.png');

      // Delete in A is gone in B.
      await a.getByRole('button', { name: 'Delete Walk the dog', exact: true }).click();
      await expectTodos(
        [b, a],
        [
          ['Buy milk', true],
          ['Water the plants', false],
          ['Call mom', true],
        ],
      );

      // Clear completed (in B) removes the done ones in both tabs.
      await b.getByRole('button', { name: 'Clear completed' }).click();
      await expectTodos([a, b], [['Water the plants', false]]);

      // One more, done, so the restart has both kinds of todo to keep.
      await addTodo(b, 'Read a book', 'enter');
      await expectTodos([a], [['Water the plants', false], ['Read a book', false]]);
      await checkbox(a, 'Read a book').click();
      const beforeRestart = [
        ['Water the plants', false],
        ['Read a book', true],
      ];
      await expectTodos([a, b], beforeRestart);

      // Restart the engine on the same directory and ports.
      engineDown = true;
      const exit = await engine.stop();
      assert.deepEqual(exit, { code: 0, signal: null }, 'the engine exits cleanly on SIGTERM');
      for (const page of [a, b]) {
        await page.locator('[data-testid="connection-status"][data-state="reconnecting"]').waitFor({ timeout: 10_000 });
        assert.equal(await page.getByTestId('connection-status-text').textContent(), 'Reconnecting');
      }
      // Both tabs retry (and are refused) while the engine is down, and keep showing their list.
      const refusedTabs = () => new Set(problems.filter(isRefused).map((p) => p.tab));
      await eventually(() => assert.deepEqual(refusedTabs(), new Set(['A', 'B'])));
      await expectTodos([a, b], beforeRestart, 1_000);
      await a.locator('[data-testid="connection-status"][data-state="reconnecting"]').waitFor({ timeout: 5_000 });
      await screenshot(a, '03-reconnecting.png');

      const ready = await engine.start();
      assert.deepEqual(
        ready.listeners.map((l) => l.port),
        [ports.trusted, ports.pub],
        'the engine is back on the same ports',
      );
      // Backoff (about 1, 2, 4, 8 s) plus the worker's start-up: allow a generous deadline.
      await Promise.all([waitConnected(a, 30_000), waitConnected(b, 30_000)]);
      engineDown = false;

      // Persistence: the list came back from the file store, reloaded by each tab.
      await expectTodos([a, b], beforeRestart);
      assert.equal(await statusOf(a).getAttribute('data-state'), 'connected');
      assert.equal(await a.getByTestId('connection-status-text').textContent(), 'Connected');

      // Live updates resumed (each tab re-registered its function and stream trigger).
      await addTodo(b, 'Pay the bills', 'button');
      await expectTodos([a, b], [...beforeRestart, ['Pay the bills', false]]);
      await checkbox(a, 'Water the plants').click();
      await expectTodos(
        [b, a],
        [
          ['Water the plants', true],
          ['Read a book', true],
          ['Pay the bills', false],
        ],
      );
      await screenshot(a, '04-after-restart.png');

      assert.deepEqual(unexpected(), [], 'no console errors or page errors');
      await Promise.all([a.context().close(), b.context().close()]);
    }),
  );

  test(
    'a browser session cannot reach the stream store or the engine, and a rejected add shows a toast',
    withLog(async () => {
      const wsUrl = `ws://127.0.0.1:${ports.pub}/`;
      const page = await openTab('C');

      // A client that bypasses the page's own title check: the title of every todos::create
      // leaving this tab is blanked on the way to the engine.
      await page.routeWebSocket(wsUrl, (ws) => {
        const server = ws.connectToServer();
        ws.onMessage((message) => {
          if (typeof message === 'string') {
            const frame = JSON.parse(message);
            if (frame.type === 'invokefunction' && frame.function_id === 'todos::create') {
              frame.data = { ...frame.data, title: '' };
              message = JSON.stringify(frame);
            }
          }
          server.send(message);
        });
      });
      await page.goto(`http://127.0.0.1:${ports.pub}/`);
      await waitConnected(page);

      // A second session, opened in the page with the page's own client module.
      const results = await page.evaluate(async (url) => {
        const { registerWorker } = await import('/iii-client.js');
        const iii = registerWorker(url);
        const attempt = async (function_id, payload) => {
          try {
            return { ok: await iii.trigger({ function_id, payload, timeoutMs: 5000 }) };
          } catch (err) {
            return { code: err.code, message: err.message };
          }
        };
        const stream = { stream_name: 'todo', group_id: 'todos' };
        const out = {
          'stream::set': await attempt('stream::set', {
            ...stream,
            item_id: 'intruder',
            data: { id: 'intruder', title: 'Injected', completed: false },
          }),
          'stream::list': await attempt('stream::list', stream),
          'engine::functions::list': await attempt('engine::functions::list', {}),
          'todos::create': await attempt('todos::create', { title: '' }),
          'todos::list': await attempt('todos::list', {}),
        };

        // A denied registration is reported on a connection that stays open: the error
        // listeners hear it, the connection is not treated as rejected.
        const errors = [];
        const states = [];
        iii.addErrorListener((err) => errors.push({ code: err.code, message: err.message }));
        iii.addConnectionStateListener((state, info) => states.push({ state, lastError: info.lastError?.code ?? null }));
        iii.registerTrigger({ type: 'cron', function_id: 'ui::on-todo-change', config: {} });
        for (let i = 0; i < 100 && errors.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
        const after = await attempt('todos::get', { id: 'none' });
        await iii.shutdown(); // a state change, so `states` shows the lastError it reports
        out.deniedRegistration = { errors, states, after };
        return out;
      }, wsUrl);

      for (const id of ['stream::set', 'stream::list', 'engine::functions::list']) {
        assert.equal(results[id].code, 'FORBIDDEN', `${id} is refused: ${JSON.stringify(results[id])}`);
        assert.match(results[id].message, new RegExp(`'${id}' not allowed`));
      }
      assert.deepEqual(results['todos::create'], { code: 'invocation_failed', message: 'title must not be empty' });
      const titles = results['todos::list'].ok?.items?.map((t) => t.title);
      assert.ok(Array.isArray(titles), `todos::list works: ${JSON.stringify(results['todos::list'])}`);
      assert.ok(!titles.includes('Injected'), 'the refused stream::set wrote nothing');
      const denied = results.deniedRegistration;
      assert.equal(denied.errors.length, 1, `one error for the denied trigger: ${JSON.stringify(denied)}`);
      assert.equal(denied.errors[0].code, 'FORBIDDEN');
      assert.match(denied.errors[0].message, /of type 'cron' denied/);
      assert.deepEqual(
        denied.states,
        [
          { state: 'connected', lastError: null },
          { state: 'disconnected', lastError: null },
        ],
        'the denial did not disconnect the client or become its lastError',
      );
      // todos::get of an unknown id answers null, which reaches callers as "no result".
      assert.ok('ok' in denied.after && denied.after.ok == null, `still answers calls: ${JSON.stringify(denied.after)}`);

      // Through the UI: the (blanked) add is rejected, shown as a toast, and the text is given back.
      const before = await readTab(page);
      const input = page.getByRole('textbox', { name: 'New todo' });
      await input.fill('Something to do');
      await input.press('Enter');
      const toast = page.getByRole('alert');
      await toast.waitFor({ timeout: 10_000 });
      assert.equal(await toast.locator('.toast-title').textContent(), 'Could not add the todo');
      assert.equal(await toast.getByTestId('toast-code').textContent(), 'invocation_failed');
      assert.equal(await toast.getByTestId('toast-message').textContent(), 'title must not be empty');
      assert.equal(await input.inputValue(), 'Something to do');
      assert.deepEqual(await readTab(page), before, 'nothing was added');
      assert.equal(await page.getByTestId('todo-item-pending').count(), 0, 'no placeholder row is left');
      await screenshot(page, '05-rejected-add.png');

      assert.deepEqual(unexpected(), [], 'no console errors or page errors');
      await page.context().close();
    }),
  );
});
