// A Node worker that subscribes to stream changes: it registers `<name>::on-change` and binds
// it to a `stream` trigger on stream `todo` (group from env STREAM_GROUP, default `todos`).
// Every event it receives is printed as {"event": <payload>}. Prints {"ready":true} once its
// function is callable through the engine, then serves until SIGTERM.
import { connect, emit, startWatchdog, stayUpUntilSignalled, triggerWithStartupRetry } from "./common.mjs";

const name = process.env.SUBSCRIBER_NAME ?? "sub";
const group = process.env.STREAM_GROUP ?? "todos";
const stopWatchdog = startWatchdog("become ready");
const iii = connect(`sdk-test-${name}`);
const fn = `${name}::on-change`;

iii.registerFunction(fn, async (event) => {
  if (event?.probe) return { pong: true };
  emit({ event });
  return {};
});
iii.registerTrigger({ type: "stream", function_id: fn, config: { stream_name: "todo", group_id: group } });

await triggerWithStartupRetry(iii, { function_id: fn, payload: { probe: true } });
stopWatchdog();
emit({ ready: true });
stayUpUntilSignalled(iii);
