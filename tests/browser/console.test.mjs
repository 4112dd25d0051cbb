// The operator console (/console) in headless Chromium against the real engine.
//
// Starts the `iii` binary ($III_BIN) in a fresh temporary directory with a trusted listener, a
// public RBAC listener (with a static_dir that itself holds a console/ folder), iii-stream,
// iii-state and a small Node worker (console-demo-worker.mjs: published `iii-sdk`, started by
// iii-exec) that registers demo functions and triggers and writes to a stream and to state; the
// engine process and the config are in console-harness.mjs. Then checks what the page
// shows: workers, functions, trigger bindings and types, stream groups and state scopes, the
// call counters moving by exactly the calls made (when the engine has `engine::metrics::list`;
// otherwise the panel's "not available" note), traces and logs when the engine keeps them, and
// that the RBAC listener answers 404 for /console.
//
//   III_BIN=target/debug/iii node --test tests/browser/
//
// Screenshots go to test-artifacts/browser/ (console-overview.png, console-trace.png when the
// engine keeps traces). Needs Debian's Chromium at /usr/bin/chromium and the npm packages of
// tests/browser and worker (scripts/setup-test-deps).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import {
  ARTIFACTS,
  CHROMIUM,
  CHROMIUM_ARGS,
  Engine,
  SDK,
  SETUP_HINT,
  VIEWPORT,
  attr,
  byTestId,
  callsOf,
  engineCall,
  engineConfig,
  eventually,
  polls,
  screenshot,
} from './console-harness.mjs';

// ───────────────────────────── the suite ─────────────────────────────

describe('console page in Chromium, against the real engine', { timeout: 120_000 }, () => {
  /** @type {Engine} */ let engine;
  let browser;
  let workDir;
  let trusted;
  let pub;
  let failed = false;
  /** Console errors and page errors of every page. */
  const problems = [];

  async function openPage(name, { watch = true } = {}) {
    const context = await browser.newContext({ viewport: VIEWPORT });
    const page = await context.newPage();
    if (!watch) return page;
    page.on('console', (msg) => {
      if (msg.type() === 'error') problems.push({ page: name, kind: 'console', text: msg.text() });
    });
    page.on('pageerror', (err) => problems.push({ page: name, kind: 'pageerror', text: String(err) }));
    return page;
  }

  /** Runs a test body; on failure, shows the engine's log (what the engine saw). */
  const withLog = (fn) => async (t) => {
    try {
      await fn(t);
    } catch (err) {
      failed = true;
      console.error(`---- engine log (${workDir}/engine.log), last lines ----\n${engine?.logTail() ?? ''}\n---- end of engine log ----`);
      throw err;
    }
  };

  before(async () => {
    const bin = process.env.III_BIN;
    assert.ok(bin, 'III_BIN is not set: point it at the engine binary, e.g. III_BIN=target/debug/iii');
    assert.ok(existsSync(bin), `III_BIN=${bin} does not exist (cargo build first)`);
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: ${SETUP_HINT}`);
    assert.ok(existsSync(SDK), `worker/node_modules (iii-sdk) is missing: ${SETUP_HINT}`);
    let chromium;
    try {
      ({ chromium } = await import('playwright-core'));
    } catch (err) {
      throw new Error(`playwright-core is missing (${err.code ?? err.message}): ${SETUP_HINT}`);
    }
    mkdirSync(ARTIFACTS, { recursive: true });

    workDir = mkdtempSync(path.join(tmpdir(), 'iii-console-'));
    // The public listener's own site, with a console/ folder of its own: still never served there.
    const site = path.join(workDir, 'site');
    mkdirSync(path.join(site, 'console'), { recursive: true });
    writeFileSync(path.join(site, 'index.html'), '<!doctype html><title>site</title><p>public site</p>');
    writeFileSync(path.join(site, 'console', 'index.html'), '<p>not the console</p>');
    writeFileSync(path.join(workDir, 'iii-config.yaml'), engineConfig(site));

    engine = new Engine(path.resolve(bin), workDir);
    const ready = await engine.start();
    const http = (l) => l.url.replace(/^ws:/, 'http:');
    trusted = http(ready.listeners.find((l) => !l.rbac));
    pub = http(ready.listeners.find((l) => l.rbac));
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, chromiumSandbox: false });
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
    'the RBAC listener never serves the console; the trusted one does',
    withLog(async () => {
      for (const p of ['/console', '/console/', '/console/index.html', '/console/console.js', '/console/iii-client.js']) {
        const res = await fetch(`${pub}${p}`);
        assert.equal(res.status, 404, `${p} on the RBAC listener`);
        assert.doesNotMatch(await res.text(), /iii console|not the console/);
      }
      const site = await fetch(`${pub}/`);
      assert.equal(site.status, 200, 'the public site itself is served');
      const page = await fetch(`${trusted}/console`);
      assert.equal(page.status, 200);
      assert.equal(page.headers.get('content-type'), 'text/html; charset=utf-8');
      assert.equal(page.headers.get('cache-control'), 'no-cache');
      assert.match(await page.text(), /<title>iii console<\/title>/);
    }),
  );

  test(
    'the console shows workers, functions, triggers, streams, state, calls, traces and logs',
    withLog(async () => {
      // A tab on the trusted origin (showing the client module's source) to call from; not
      // watched for errors (its document has no favicon).
      const driver = await openPage('driver', { watch: false });
      await driver.goto(`${trusted}/console/iii-client.js`);
      // The demo worker is up and has made its first calls.
      await eventually(
        async () => {
          const streams = await engineCall(driver, 'stream::list_all');
          assert.ok(streams.ok?.stream?.some((s) => s.id === 'orders'), JSON.stringify(streams));
          const fns = await engineCall(driver, 'engine::functions::list');
          assert.ok(fns.ok?.functions?.some((f) => f.function_id === 'demo::on-stock'), JSON.stringify(fns));
        },
        { timeout: 30_000, interval: 200 },
      );
      // Which observability functions this engine has: a direct call first.
      const probe = async (id, payload) => {
        const r = await engineCall(driver, id, payload);
        if (r.code === 'function_not_found') return null;
        assert.ok('ok' in r, `${id}: ${JSON.stringify(r)}`);
        return r.ok;
      };
      const metrics = await probe('engine::metrics::list', {});
      const traces = await probe('engine::traces::list', { limit: 50 });
      const logs = await probe('engine::logs::list', { limit: 100 });

      const page = await openPage('console');
      await page.goto(`${trusted}/console`);
      await page.locator('[data-testid="connection-status"][data-state="connected"]').waitFor({ timeout: 20_000 });
      await polls(page, 2);

      // Workers: the demo worker process, and the engine's in-process modules.
      const worker = page.locator('[data-testid="worker-row"][data-name="console-demo-worker"]');
      await worker.waitFor();
      assert.match(await worker.textContent(), /node/);
      assert.ok(Number(await attr(page, '[data-testid="count-workers"]', 'data-value')) >= 1);
      for (const name of ['iii-stream', 'iii-state']) {
        await page.locator(`[data-testid="worker-row"][data-name="${name}"]`).waitFor();
      }

      // Functions: the worker's, without engine::* until asked for.
      for (const id of ['demo::hello', 'demo::fail', 'demo::place-order', 'demo::on-order', 'stream::set', 'state::get']) {
        await page.locator(`[data-testid="function-row"][data-id="${id}"]`).waitFor();
      }
      const engineRow = page.locator('[data-testid="function-row"][data-id="engine::workers::list"]');
      assert.equal(await engineRow.count(), 0, 'engine::* are hidden by default');
      await byTestId(page, 'show-internal').check();
      await engineRow.waitFor();
      await byTestId(page, 'show-internal').uncheck();
      await byTestId(page, 'functions-filter').fill('demo::on');
      await eventually(async () =>
        assert.deepEqual(
          await page.locator('[data-testid="function-row"]').evaluateAll((rows) => rows.map((r) => r.dataset.id)),
          ['demo::on-order', 'demo::on-stock'],
        ),
      );
      await byTestId(page, 'functions-filter').fill('');

      // Triggers: both bindings and the trigger types.
      await page.locator('[data-testid="trigger-row"][data-type="stream"][data-function="demo::on-order"]').waitFor();
      await page.locator('[data-testid="trigger-row"][data-type="state"][data-function="demo::on-stock"]').waitFor();
      for (const type of ['stream', 'state', 'engine::functions-available']) {
        await page.locator(`[data-testid="trigger-type"][data-id="${type}"]`).waitFor();
      }

      // Streams and state.
      const orders = page.locator('[data-testid="stream-row"][data-stream="orders"]');
      await orders.waitFor();
      await eventually(async () =>
        assert.deepEqual((await orders.locator('[data-testid="stream-group"]').allTextContents()).sort(), ['eu', 'us']),
      );
      await page.locator('[data-testid="state-group"][data-scope="inventory"]').waitFor();

      // Calls: the counters move by exactly the calls made; the console's own polling is not traffic.
      if (metrics) {
        await page.locator('[data-testid="panel-calls"][data-state="ready"]').waitFor();
        await eventually(async () => assert.ok(Number.isFinite(await callsOf(page, 'demo::hello'))));
        const hello0 = await callsOf(page, 'demo::hello');
        const fail0 = await callsOf(page, 'demo::fail');
        assert.ok(hello0 >= 1 && fail0 >= 1, `the worker's own calls are counted (${hello0}, ${fail0})`);
        const total0 = Number(await attr(page, '[data-testid="calls-total"]', 'data-value'));
        const errors0 = Number(await attr(page, '[data-testid="calls-errors"]', 'data-value'));
        const rates = [];
        const sampler = setInterval(async () => {
          const v = await attr(page, '[data-testid="calls-rate"]', 'data-value').catch(() => null);
          if (v != null) rates.push(Number(v));
        }, 100);
        try {
          for (let i = 0; i < 5; i++) assert.ok((await engineCall(driver, 'demo::hello', { name: `n${i}` })).ok);
          for (let i = 0; i < 2; i++) assert.equal((await engineCall(driver, 'demo::fail', {})).code, 'invocation_failed');
          await eventually(async () => {
            assert.equal(await callsOf(page, 'demo::hello'), hello0 + 5);
            assert.equal(await callsOf(page, 'demo::fail'), fail0 + 2);
          });
          assert.ok(Number(await attr(page, '[data-testid="calls-total"]', 'data-value')) >= total0 + 7);
          assert.ok(Number(await attr(page, '[data-testid="calls-errors"]', 'data-value')) >= errors0 + 2);
          await eventually(() => assert.ok(rates.some((r) => r > 0), `a call rate above 0 was shown: ${rates}`));
          // Quiet again: with nothing but the console polling, the rate falls back to 0.
          await eventually(async () => assert.equal(Number(await attr(page, '[data-testid="calls-rate"]', 'data-value')), 0), {
            timeout: 10_000,
          });
        } finally {
          clearInterval(sampler);
        }
        assert.equal(await page.locator('[data-testid="card-errors"]').getAttribute('data-alert'), 'true');
      } else {
        const panel = page.locator('[data-testid="panel-calls"][data-state="unavailable"]');
        await panel.waitFor();
        assert.match(await panel.textContent(), /Not available on this engine \(engine::metrics::list is not registered\)/);
        assert.equal(await byTestId(page, 'calls-total').textContent(), 'not available');
        assert.equal(await attr(page, '[data-testid="function-row"][data-id="demo::hello"]', 'data-calls'), '');
      }

      // Logs: what the engine keeps, the page shows.
      if (logs) {
        await page.locator('[data-testid="panel-logs"][data-state="ready"]').waitFor();
        if (logs.logs?.some((l) => String(l.body).includes('order o-1 placed'))) {
          await page.locator('[data-testid="log-row"]', { hasText: 'order o-1 placed' }).first().waitFor();
        }
      } else {
        await page.locator('[data-testid="panel-logs"][data-state="unavailable"]').waitFor();
      }

      // The overview, taken during a few seconds of mixed traffic so the chart has a curve.
      const traffic = (async () => {
        if (!metrics) return;
        for (let i = 0, until = Date.now() + 5_000; Date.now() < until; i++) {
          const burst = Array.from({ length: 2 + (i % 5) }, (_, j) => engineCall(driver, 'demo::hello', { name: `p${i}.${j}` }));
          if (i % 4 === 0) burst.push(engineCall(driver, 'demo::place-order', { id: `o-p${i}`, region: 'ap', sku: 'fig', qty: 1 }));
          if (i % 6 === 5) burst.push(engineCall(driver, 'demo::fail', {}));
          await Promise.all(burst);
          await new Promise((r) => setTimeout(r, 120));
        }
      })();
      await page.locator(':focus').blur().catch(() => {});
      await polls(page, metrics ? 4 : 1);
      await screenshot(page, 'console-overview.png');
      await traffic;

      // Traces: the console's own polling is not listed; a trace opens as its span tree.
      if (traces) {
        await page.locator('[data-testid="panel-traces"][data-state="ready"]').waitFor();
        const own = ['stream::list_all', 'state::list_groups'];
        const listed = await engineCall(driver, 'engine::traces::list', {
          limit: 50,
          exclude_attributes: own.map((id) => ['iii.function.id', id]),
        });
        const spans = listed.ok?.spans ?? [];
        const wanted = spans.find((s) => s.name === 'demo::place-order') ?? spans[0];
        if (wanted) {
          const row = page.locator(`[data-testid="trace-row"][data-trace-id="${wanted.trace_id}"]`);
          await row.waitFor();
          for (const id of own) {
            assert.equal(await page.locator('[data-testid="trace-row"]', { hasText: id }).count(), 0, `${id} is not listed`);
          }
          await row.click();
          await byTestId(page, 'trace-detail').waitFor();
          assert.equal(await byTestId(page, 'trace-title').textContent(), `Trace ${wanted.trace_id}`);
          assert.equal(await row.getAttribute('aria-selected'), 'true');
          const tree = await engineCall(driver, 'engine::traces::tree', { trace_id: wanted.trace_id });
          const count = (nodes) => nodes.reduce((n, node) => n + 1 + count(node.children ?? []), 0);
          const nodes = count(tree.ok?.roots ?? []);
          assert.ok(nodes >= 1, `the trace has spans: ${JSON.stringify(tree)}`);
          await eventually(async () => assert.equal(await page.locator('[data-testid="span-node"]').count(), nodes));
          // A span's attributes open on click.
          const first = page.locator('[data-testid="span-node"]').first();
          const attrs = page.locator('.span-attrs').first();
          if ((await attrs.count()) > 0) {
            assert.ok(await attrs.isHidden(), 'attributes start closed');
            await first.click();
            await attrs.waitFor();
          }
          await screenshot(page, 'console-trace.png');
          await page.keyboard.press('Escape');
          await byTestId(page, 'trace-detail').waitFor({ state: 'hidden' });
        }
      } else {
        const panel = page.locator('[data-testid="panel-traces"][data-state="unavailable"]');
        await panel.waitFor();
        assert.match(await panel.textContent(), /engine::traces::list is not registered/);
      }

      // Pause stops the polling; resume starts it again.
      await byTestId(page, 'pause-button').click();
      assert.equal(await byTestId(page, 'updated').textContent(), 'Paused');
      const paused = await page.locator('body').getAttribute('data-polls');
      await new Promise((r) => setTimeout(r, 1_500));
      assert.equal(await page.locator('body').getAttribute('data-polls'), paused, 'no poll while paused');
      await byTestId(page, 'pause-button').click();
      await polls(page, 1);

      assert.deepEqual(problems, [], 'no console errors or page errors');
      await Promise.all([page.context().close(), driver.context().close()]);
    }),
  );

  test(
    'on an engine without the observability functions or iii-state, those panels say "not available"',
    withLog(async () => {
      // The engine as an older build (or one without iii-state) would list its functions: the
      // page's socket is proxied and these ids are taken out of every function list it gets.
      const absent = ['engine::metrics::list', 'engine::traces::list', 'engine::traces::tree', 'engine::logs::list', 'engine::health::check', 'state::list_groups'];
      const page = await openPage('console-old-engine');
      const asked = [];
      await page.routeWebSocket(`${trusted.replace(/^http:/, 'ws:')}/`, (ws) => {
        const server = ws.connectToServer();
        ws.onMessage((message) => {
          const frame = typeof message === 'string' ? JSON.parse(message) : null;
          if (frame?.type === 'invokefunction') asked.push(frame.function_id);
          server.send(message);
        });
        server.onMessage((message) => {
          const frame = typeof message === 'string' ? JSON.parse(message) : null;
          if (frame?.type === 'invocationresult' && Array.isArray(frame.result?.functions)) {
            frame.result.functions = frame.result.functions.filter((f) => !absent.includes(f.function_id));
            message = JSON.stringify(frame);
          }
          ws.send(message);
        });
      });
      await page.goto(`${trusted}/console`);
      await page.locator('[data-testid="connection-status"][data-state="connected"]').waitFor({ timeout: 20_000 });
      await polls(page, 2);

      for (const [panel, id] of [
        ['panel-calls', 'engine::metrics::list'],
        ['panel-traces', 'engine::traces::list'],
        ['panel-logs', 'engine::logs::list'],
      ]) {
        const el = page.locator(`[data-testid="${panel}"]`);
        assert.equal(await el.getAttribute('data-state'), 'unavailable', panel);
        assert.match(await el.locator('.unavailable').textContent(), new RegExp(`Not available on this engine \\(${id} is not registered\\)`));
        assert.ok(await el.locator('.panel-body').isHidden(), `${panel}: only the note shows`);
      }
      assert.equal(await byTestId(page, 'calls-total').textContent(), 'not available');
      assert.equal(await byTestId(page, 'calls-rate').textContent(), '—');
      assert.equal(await byTestId(page, 'health').count(), 0, 'no health badge without engine::health::check');
      // Streams are there, state is not: the panel shows one and the note for the other.
      assert.equal(await byTestId(page, 'panel-streams').getAttribute('data-state'), 'ready');
      assert.equal(await byTestId(page, 'streams-part').getAttribute('data-state'), 'ready');
      assert.equal(await byTestId(page, 'state-part').getAttribute('data-state'), 'unavailable');
      assert.match(await byTestId(page, 'state-part').textContent(), /state::list_groups is not registered/);
      // The rest of the page works as usual.
      await page.locator('[data-testid="worker-row"][data-name="console-demo-worker"]').waitFor();
      await page.locator('[data-testid="function-row"][data-id="demo::hello"]').waitFor();
      assert.equal(await attr(page, '[data-testid="function-row"][data-id="demo::hello"]', 'data-calls'), '');
      // A function the engine does not list is never called (no errors in the engine's counters).
      assert.deepEqual(asked.filter((id) => absent.includes(id)), []);
      await screenshot(page, 'console-not-available.png');

      assert.deepEqual(problems.filter((p) => p.page === 'console-old-engine'), [], 'no console errors or page errors');
      await page.context().close();
    }),
  );
});
