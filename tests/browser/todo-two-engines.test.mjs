// The todo page on two engines that share one Redis, in headless Chromium.
//
// Starts a `redis-server` on a free port (its own temporary directory, nothing saved) and two
// `iii` engines ($III_BIN), each in a temporary directory of its own with the todo app's layout
// on free ports: trusted port, public RBAC port serving static/, the JS todo worker started by
// the engine, and `iii-stream` with the `redis` adapter. Tab A shows engine 1's page, tab B
// engine 2's. A change made in either tab goes through that engine's worker into Redis and must
// show up live in the other tab, whose engine learns of it only through Redis: both tabs receive
// every stream event exactly once and in the same order, show the same list and counters, and a
// reloaded tab reads the same list through either engine. The engine process, the config and the
// page helpers are in todo-harness.mjs.
//
//   III_BIN=target/debug/iii node --test tests/browser/
//
// Screenshots go to test-artifacts/browser/ (two-engines-a.png, two-engines-b.png). Needs
// Debian's Chromium at /usr/bin/chromium, Debian's redis-server, and the npm packages of
// tests/browser and worker (scripts/setup-test-deps).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

import {
  ARTIFACTS,
  Engine,
  SETUP_HINT,
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
  waitConnected,
} from './todo-harness.mjs';

/** How long a change may take to show in the other engine's tab (a loaded 2-core machine). */
const LIVE = 20_000;

// ───────────────────────────── redis-server ─────────────────────────────

/** Resolves to true once Redis on `port` answers PING, false if it does not (yet). */
function redisPing(port) {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let reply = '';
    const done = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(2_000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk;
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
  });
}

/** A `redis-server` on a free port, its files (none saved) and its log (redis.log) in `dir`. */
class Redis {
  constructor(dir) {
    this.dir = dir;
    this.child = null;
    this.exited = null;
    this.port = null;
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  get running() {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Starts it and waits until it answers PING; another port is tried if the one picked was taken meanwhile. */
  async start() {
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const log = openSync(path.join(this.dir, 'redis.log'), 'a');
      const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir];
      const child = spawn('redis-server', args, { cwd: this.dir, stdio: ['ignore', log, log] });
      closeSync(log);
      this.child = child;
      this.port = port;
      let spawnError = null;
      this.exited = new Promise((resolve) => {
        child.once('exit', (code, signal) => resolve({ code, signal }));
        child.once('error', (err) => {
          spawnError = err;
          resolve({ code: null, signal: null });
        });
      });

      const deadline = Date.now() + 15_000;
      for (;;) {
        if (spawnError) {
          throw new Error(
            `cannot start redis-server (${spawnError.code ?? spawnError.message}): ` +
              `${SETUP_HINT} (it installs Debian's redis-server)`,
          );
        }
        if (!this.running) break;
        if (await redisPing(port)) return;
        if (Date.now() > deadline) {
          throw new Error(`redis-server does not answer on port ${port} within 15 s:\n${this.logTail()}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      await this.exited;
      if (attempt === 3) {
        throw new Error(`redis-server exited (${this.child.exitCode ?? this.child.signalCode}):\n${this.logTail()}`);
      }
    }
  }

  /** SIGTERM, then SIGKILL if it is still running after `graceMs`. */
  async stop(graceMs = 5_000) {
    if (!this.child) return;
    if (this.running) this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  logTail(lines = 30) {
    try {
      return readFileSync(path.join(this.dir, 'redis.log'), 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no redis log)';
    }
  }
}

// ───────────────────────────── the suite ─────────────────────────────

describe('todo page on two engines sharing Redis, in Chromium', { timeout: 180_000 }, () => {
  /** @type {Redis} */ let redis;
  /** @type {Engine[]} */ const engines = [];
  /** Each engine's public (RBAC) port, where its page is served. */
  const pubPorts = [];
  let browser;
  let workDir;
  let failed = false;
  /** Console errors and page errors of every page: {tab, kind, text}. */
  const problems = [];

  /**
   * A new tab in its own browser context, and what its WebSocket carries: the sockets it opened
   * and the stream events the engine delivered to its `ui::on-todo-change` (`create <title>`,
   * `update <title> (done)`, …).
   */
  async function openTab(name) {
    const context = await browser.newContext({ viewport: VIEWPORT });
    const page = await context.newPage();
    const wire = { sockets: [], events: [] };
    page.on('console', (msg) => {
      if (msg.type() === 'error') problems.push({ tab: name, kind: 'console', text: msg.text() });
    });
    page.on('pageerror', (err) => problems.push({ tab: name, kind: 'pageerror', text: String(err) }));
    const frame = (payload) => {
      try {
        return typeof payload === 'string' ? JSON.parse(payload) : null;
      } catch {
        return null;
      }
    };
    page.on('websocket', (ws) => {
      wire.sockets.push(ws.url());
      ws.on('framereceived', ({ payload }) => {
        const f = frame(payload);
        if (f?.type !== 'invokefunction' || f.function_id !== 'ui::on-todo-change') return;
        const { type, data } = f.data?.event ?? {};
        wire.events.push(`${type} ${data?.title}${data?.completed ? ' (done)' : ''}`);
      });
    });
    return { page, wire };
  }

  /** Runs a test body; on failure, shows what both engines and Redis logged. */
  const withLog = (fn) => async (t) => {
    try {
      await fn(t);
    } catch (err) {
      failed = true;
      engines.forEach((engine, i) => {
        const n = i + 1;
        console.error(
          `---- engine ${n} log (${engine.dir}/engine.log), last lines ----\n${engine.logTail()}\n---- end of engine ${n} log ----`,
        );
      });
      if (redis) console.error(`---- redis log, last lines ----\n${redis.logTail()}\n---- end of redis log ----`);
      throw err;
    }
  };

  before(async () => {
    const { bin, chromium } = await requirements();
    mkdirSync(ARTIFACTS, { recursive: true });
    workDir = mkdtempSync(path.join(tmpdir(), 'iii-two-engines-'));

    try {
      const redisDir = path.join(workDir, 'redis');
      mkdirSync(redisDir);
      redis = new Redis(redisDir);
      await redis.start();

      // Every listener on a port the engine picks (0); the ready file says which.
      for (const name of ['engine-1', 'engine-2']) {
        const dir = path.join(workDir, name);
        mkdirSync(dir);
        const config = engineConfig({ trusted: 0, pub: 0, stream: 0 }, { redisUrl: redis.url });
        writeFileSync(path.join(dir, 'iii-config.yaml'), config);
        engines.push(new Engine(bin, dir));
      }
      // Both starts settle before a failure is reported, so `after` stops whatever did start.
      const starts = await Promise.allSettled(engines.map((engine) => engine.start()));
      const refused = starts.find((s) => s.status === 'rejected');
      if (refused) throw refused.reason;
      const readies = starts.map((s) => s.value);
      for (const ready of readies) {
        const pub = ready.listeners.find((l) => l.rbac);
        assert.ok(pub && ready.stream, `a public listener and a stream port: ${JSON.stringify(ready)}`);
        pubPorts.push(pub.port);
      }
    } catch (err) {
      failed = true;
      throw err;
    }

    browser = await launchChromium(chromium);
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await Promise.all(engines.map((engine) => engine.stop(5_000).catch(() => {})));
    await redis?.stop().catch(() => {});
    if (workDir && !failed) rmSync(workDir, { recursive: true, force: true });
    else if (workDir) console.error(`kept the engines' and Redis's directories for inspection: ${workDir}`);
  });

  // Never leave an engine or Redis behind, even if the runner is interrupted.
  process.once('exit', () => {
    for (const proc of [...engines, redis]) if (proc?.running) proc.child.kill('SIGKILL');
  });

  test(
    'a change made through either engine shows live in the tab of the other',
    withLog(async () => {
      const A = await openTab('A');
      const B = await openTab('B');
      const [a, b] = [A.page, B.page];
      // Each engine's worker (and with it the auth function) may still be starting: the page
      // retries on its own until it is admitted.
      await Promise.all([a.goto(`http://127.0.0.1:${pubPorts[0]}/`), b.goto(`http://127.0.0.1:${pubPorts[1]}/`)]);
      await Promise.all([waitConnected(a, 30_000), waitConnected(b, 30_000)]);
      // (A tab that came before its engine's auth function was refused and retried: same URL.)
      assert.deepEqual(new Set(A.wire.sockets), new Set([`ws://127.0.0.1:${pubPorts[0]}/`]), 'tab A talks to engine 1 only');
      assert.deepEqual(new Set(B.wire.sockets), new Set([`ws://127.0.0.1:${pubPorts[1]}/`]), 'tab B talks to engine 2 only');
      await expectTodos([a, b], []);

      // Adds in both tabs: each one shows in the other tab, through the other engine.
      await addTodo(a, 'Buy milk', 'enter');
      await expectTodos([b, a], [['Buy milk', false]], LIVE);
      await addTodo(b, 'Water the plants', 'button');
      await expectTodos([a, b], [['Buy milk', false], ['Water the plants', false]], LIVE);
      await addTodo(a, 'Call mom', 'button');
      await expectTodos([b, a], [['Buy milk', false], ['Water the plants', false], ['Call mom', false]], LIVE);
      await addTodo(b, 'Read a book', 'enter');
      await expectTodos(
        [a, b],
        [
          ['Buy milk', false],
          ['Water the plants', false],
          ['Call mom', false],
          ['Read a book', false],
        ],
        LIVE,
      );

      // Toggle in B shows in A; toggle in A shows in B.
      await checkbox(b, 'Buy milk').click();
      await expectTodos(
        [a, b],
        [
          ['Buy milk', true],
          ['Water the plants', false],
          ['Call mom', false],
          ['Read a book', false],
        ],
        LIVE,
      );
      await checkbox(a, 'Read a book').click();
      await expectTodos(
        [b, a],
        [
          ['Buy milk', true],
          ['Water the plants', false],
          ['Call mom', false],
          ['Read a book', true],
        ],
        LIVE,
      );

      // Delete in B is gone in A.
      await b.getByRole('button', { name: 'Delete Water the plants', exact: true }).click();
      const final = [
        ['Buy milk', true],
        ['Call mom', false],
        ['Read a book', true],
      ];
      await expectTodos([a, b], final, LIVE);
      assert.deepEqual(await readTab(a), await readTab(b), 'both tabs show the same list and counters');
      assert.equal(await a.getByTestId('items-remaining').textContent(), '1 item remaining');
      assert.equal(await b.getByTestId('done-count').textContent(), '2 done');
      assert.ok(await checkbox(a, 'Buy milk').isChecked(), 'the toggle made in B is checked in A');

      // Every change reached each tab as a stream event of its own engine, once, in the order it
      // was made.
      const events = [
        'create Buy milk',
        'create Water the plants',
        'create Call mom',
        'create Read a book',
        'update Buy milk (done)',
        'update Read a book (done)',
        'delete Water the plants',
      ];
      for (const [name, { wire }] of [['A', A], ['B', B]]) {
        await eventually(() => assert.deepEqual(wire.events, events, `the stream events tab ${name} got`), {
          timeout: LIVE,
        });
      }
      // The pointer off the rows, so no delete button shows its hover state.
      await Promise.all([a.mouse.move(0, 0), b.mouse.move(0, 0)]);
      await screenshot(a, 'two-engines-a.png');
      await screenshot(b, 'two-engines-b.png');

      // What is stored is the same through either engine: reloaded tabs read it afresh.
      await Promise.all([a.reload(), b.reload()]);
      await Promise.all([waitConnected(a, 30_000), waitConnected(b, 30_000)]);
      await expectTodos([a, b], final);

      assert.deepEqual(problems, [], 'no console errors or page errors');
      await Promise.all([a.context().close(), b.context().close()]);

      // Both engines stop cleanly, their Redis connections included.
      for (const [i, engine] of engines.entries()) {
        assert.deepEqual(await engine.stop(), { code: 0, signal: null }, `engine ${i + 1} exits cleanly on SIGTERM`);
      }
    }),
  );
});
