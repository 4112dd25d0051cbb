// Channels (MODULES.md §8) with the published Node SDK: engine::channels::create through the
// SDK's createChannel, text messages and binary data in one channel, and refs passed inside an
// ordinary call's payload (the SDK turns them into a reader on the other side). One JSON line
// per check.
import { createChannel } from "iii-sdk/helpers";
import { checker, connect, sleep, startWatchdog, triggerWithStartupRetry } from "./common.mjs";

const stopWatchdog = startWatchdog("finish", 60000);
const iii = connect("sdk-test-channels");
const { check, finish } = checker(iii, "node-channels-check.mjs");

function pattern(n, seed) {
  const buf = Buffer.alloc(n);
  for (let i = 0; i < n; i++) buf[i] = (i * seed + (i >> 8)) & 0xff;
  return buf;
}

async function writeAll(writer, data, chunk = 64 * 1024) {
  for (let off = 0; off < data.length; off += chunk) {
    if (!writer.stream.write(data.subarray(off, off + chunk))) {
      await new Promise((r) => writer.stream.once("drain", r));
    }
  }
  writer.stream.end();
}

// 1. Messages and bytes through one channel.
{
  const ch = await createChannel(iii, 8);
  const messages = [];
  ch.reader.onMessage((m) => messages.push(m));
  const data = pattern(3 * 1024 * 1024, 7);
  const reading = ch.reader.readAll();
  ch.writer.sendMessage(JSON.stringify({ type: "start" }));
  await writeAll(ch.writer, data);
  const got = await reading;
  check("3 MiB arrive byte-identical", Buffer.compare(got, data) === 0, { length: got.length });
  check("text messages arrive", messages.length === 1 && JSON.parse(messages[0]).type === "start", { messages });
}

// 2. A reader ref inside a payload: another function reads what this side writes.
{
  iii.registerFunction("ch::count", async ({ upload }) => {
    const bytes = await upload.readAll();
    let sum = 0;
    for (const b of bytes) sum = (sum + b) % 65521;
    return { length: bytes.length, sum };
  });
  await triggerWithStartupRetry(iii, { function_id: "engine::functions::list", payload: {} });
  await sleep(200);
  const ch = await createChannel(iii);
  const data = pattern(1024 * 1024, 13);
  const answer = iii.trigger({ function_id: "ch::count", payload: { upload: ch.readerRef }, timeoutMs: 20000 });
  await writeAll(ch.writer, data);
  const r = await answer;
  let sum = 0;
  for (const b of data) sum = (sum + b) % 65521;
  check("refs travel in payloads", r.length === data.length && r.sum === sum, { r, want: { length: data.length, sum } });
}

// A slow reader is tested with raw sockets (tests/http_e2e.rs): this SDK's ChannelWriter
// terminates its socket right after end(), so bytes it still buffers while the engine holds it
// back (the point of a bounded channel) never leave the client.

stopWatchdog();
await finish();
