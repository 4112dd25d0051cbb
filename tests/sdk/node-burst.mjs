// A busy user of the published Node SDK: 2,000 stream::set calls at once (Promise.all), and 50
// stream triggers registered while they run. Every call must succeed (none refused because a
// queue inside the engine was momentarily full), every item must be there afterwards, and every
// trigger must fire. One JSON line per check; exit 0 when all pass.
import { connect, describeError, emit, shutdownAndExit, startWatchdog } from "./common.mjs";

const stopWatchdog = startWatchdog("finish", 60000);
const iii = connect("sdk-test-burst");
const failures = [];

function check(name, ok, details) {
  emit({ check: name, ok, ...details });
  if (!ok) failures.push(`${name}: ${JSON.stringify(details)}`);
}

const N = 2000;
const fired = new Set();
iii.registerFunction("burst::on-change", async (event) => {
  fired.add(event.groupId);
  return {};
});

const sets = Array.from({ length: N }, (_, i) =>
  iii
    .trigger({
      function_id: "stream::set",
      payload: { stream_name: "burst", group_id: "all", item_id: `i${i}`, data: { i } },
      timeoutMs: 30000,
    })
    .then(
      () => null,
      (err) => describeError(err),
    ),
);
for (let t = 0; t < 50; t++) {
  iii.registerTrigger({
    type: "stream",
    function_id: "burst::on-change",
    config: { stream_name: "watched", group_id: `g${t}` },
  });
}
const errors = (await Promise.all(sets)).filter(Boolean);
check("2000 concurrent sets", errors.length === 0, { failed: errors.length, first: errors[0] });

const list = await iii.trigger({
  function_id: "stream::list",
  payload: { stream_name: "burst", group_id: "all" },
  timeoutMs: 10000,
});
check("all items stored", Array.isArray(list) && list.length === N, { count: list?.length });

for (let t = 0; t < 50; t++) {
  await iii.trigger({
    function_id: "stream::set",
    payload: { stream_name: "watched", group_id: `g${t}`, item_id: "x", data: t },
  });
}
const deadline = Date.now() + 10000;
while (fired.size < 50 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
check("triggers registered during the burst all fire", fired.size === 50, { fired: fired.size });

stopWatchdog();
if (failures.length > 0) console.error(failures.join("\n"));
await shutdownAndExit(iii, failures.length === 0 ? 0 : 1);
