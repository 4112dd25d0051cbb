// The demo worker of the console test (tests/browser/console.test.mjs), started by the engine's
// iii-exec with III_URL (the trusted listener) and III_SDK_URL (the published `iii-sdk`, from
// worker/node_modules, as a file URL: this directory has no iii-sdk of its own).
//
// Registers demo::* functions, binds a `stream` and a `state` trigger, places three orders (a
// stream item, a state value and an engine log line each), says hello once and fails once, then
// prints "ready" and serves calls until SIGTERM.

const { registerWorker } = await import(process.env.III_SDK_URL);

const iii = registerWorker(process.env.III_URL, { workerName: 'console-demo-worker' });
const call = (function_id, payload) => iii.trigger({ function_id, payload, timeoutMs: 5000 });

iii.registerFunction('demo::hello', async ({ name } = {}) => ({ greeting: `Hello, ${name ?? 'world'}!` }), {
  description: 'Say hello',
});
iii.registerFunction(
  'demo::fail',
  async () => {
    throw new Error('demo failure');
  },
  { description: 'Always fails' },
);
iii.registerFunction(
  'demo::place-order',
  async (order) => {
    await call('stream::set', { stream_name: 'orders', group_id: order.region, item_id: order.id, data: order });
    await call('state::set', { scope: 'inventory', key: order.sku, value: { reserved: order.qty } });
    await iii.trigger({
      function_id: 'engine::log::info',
      payload: { message: `order ${order.id} placed`, data: { order_id: order.id } },
      action: { type: 'void' },
    });
    return { id: order.id, placed: true };
  },
  { description: 'Store an order in a stream and reserve its stock in state' },
);
iii.registerFunction('demo::on-order', async () => ({}), { description: 'Reacts to every new order' });
iii.registerFunction('demo::on-stock', async () => ({}), { description: 'Reacts to stock reservations' });
iii.registerTrigger({ type: 'stream', function_id: 'demo::on-order', config: { stream_name: 'orders' } });
iii.registerTrigger({ type: 'state', function_id: 'demo::on-stock', config: { scope: 'inventory' } });

// Some traffic, retried while the registrations are still on their way.
const orders = [
  { id: 'o-1', region: 'eu', sku: 'apple', qty: 3 },
  { id: 'o-2', region: 'us', sku: 'pear', qty: 1 },
  { id: 'o-3', region: 'eu', sku: 'plum', qty: 2 },
];
for (const order of orders) {
  for (let attempt = 0; ; attempt++) {
    try {
      await call('demo::place-order', order);
      break;
    } catch (err) {
      if (attempt > 100) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
await call('demo::hello', { name: 'console' });
await call('demo::fail', {}).catch(() => {});
console.log('console-demo-worker: ready');

process.on('SIGTERM', () => iii.shutdown().finally(() => process.exit(0)));
