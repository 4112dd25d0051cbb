// A Node worker that serves HTTP routes through the engine's iii-http module, written as an SDK
// user writes them: `http` triggers, handlers returning {status_code, headers, body}, the
// request_body channel, streaming responses with the @iii-dev/helpers `http()` wrapper (a 5 MiB
// PDF, server-sent events), middleware that continues, responds, fails or hangs, a condition.
// Prints {"ready":true} once its routes are bound, then serves until SIGTERM.
import { http } from "@iii-dev/helpers/http";
import { connect, emit, sleep, startWatchdog, stayUpUntilSignalled, triggerWithStartupRetry } from "./common.mjs";

const stopWatchdog = startWatchdog("become ready");
const iii = connect("sdk-test-http");

/** The deterministic 5 MiB "PDF" the test rebuilds to compare (32-bit LCG, byte = bits 16..23). */
function pdfBytes() {
  const buf = Buffer.alloc(5 * 1024 * 1024);
  let x = 12345;
  for (let i = 0; i < buf.length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    buf[i] = (x >>> 16) & 0xff;
  }
  return buf;
}

/** FNV-1a, 32 bits: what an upload's bytes hash to (the test computes the same). */
function fnv1a(bytes) {
  let h = 0x811c9dc5;
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h;
}

function route(id, method, path, handler, extra = {}) {
  iii.registerFunction(id, handler);
  iii.registerTrigger({ type: "http", function_id: id, config: { api_path: path, http_method: method, ...extra } });
}

route("http::hello", "GET", "/hello", async () => ({ status_code: 200, body: { hello: "world" } }));
route("http::item", "GET", "items/:id", async (req) => ({
  status_code: 200,
  headers: { "x-item": req.path_params.id },
  body: { path_params: req.path_params, query_params: req.query_params, path: req.path, method: req.method,
          trigger: req.trigger, has_channels: Boolean(req.request_body && req.response) },
}));
route("http::echo", "POST", "/echo", async (req) => {
  const raw = (await req.request_body.readAll()).toString("utf8");
  return { status_code: 201, body: { body: req.body, raw, content_type: req.headers["content-type"] } };
});
route("http::upload", "POST", "/upload", async (req) => {
  const bytes = await req.request_body.readAll();
  return { body: { length: bytes.length, fnv1a: fnv1a(bytes), body: req.body } };
});
route("http::download", "GET", "/download", http(async (_req, res) => {
  res.status(200);
  res.headers({ "content-type": "application/pdf", "content-disposition": "attachment; filename=report.pdf" });
  const pdf = pdfBytes();
  for (let off = 0; off < pdf.length; off += 256 * 1024) {
    if (!res.stream.write(pdf.subarray(off, off + 256 * 1024))) await new Promise((r) => res.stream.once("drain", r));
  }
  res.stream.end();
}));
route("http::sse", "GET", "/events", http(async (_req, res) => {
  res.status(200);
  res.headers({ "content-type": "text/event-stream", "cache-control": "no-cache" });
  for (let i = 1; i <= 4; i++) {
    res.stream.write(`data: event ${i}\n\n`);
    await sleep(50);
  }
  res.stream.end();
}));
route("http::json-stream", "POST", "/stream-json", http(async (_req, res) => {
  res.status(202);
  res.headers({ "content-type": "application/json" });
  res.stream.end(JSON.stringify({ streamed: true }));
}));
route("http::xml", "GET", "/xml", async () => ({ headers: { "Content-Type": "text/xml" }, body: "<a>1</a>" }));
route("http::nothing", "GET", "/nothing", async () => undefined);
route("http::fail", "GET", "/fail", async () => {
  throw new Error("handler exploded");
});
route("http::slow", "GET", "/slow", async () => {
  await sleep(6000);
  return { body: { late: true } };
});
iii.registerFunction("mw::continue", async () => ({ action: "continue" }));
iii.registerFunction("mw::deny", async (input) =>
  input.request.headers["x-deny"]
    ? { action: "respond", response: { status_code: 403, body: { denied: true, phase: input.phase } } }
    : { action: "continue" });
iii.registerFunction("mw::boom", async () => {
  throw new Error("middleware exploded");
});
iii.registerFunction("mw::hang", async () => {
  await sleep(6000);
  return { action: "continue" };
});
iii.registerFunction("cond::header", async (req) => req.headers["x-allow"] === "yes");
route("http::guarded", "GET", "/guarded/:id", async (req) => ({ body: { ok: req.path_params.id } }), {
  middleware_function_ids: ["mw::continue", "mw::deny"],
});
route("http::mw-boom", "GET", "/mw-boom", async () => ({ body: {} }), { middleware_function_ids: ["mw::boom"] });
route("http::mw-hang", "GET", "/mw-hang", async () => ({ body: {} }), { middleware_function_ids: ["mw::hang"] });
route("http::conditional", "GET", "/conditional", async () => ({ body: { passed: true } }), {
  condition_function_id: "cond::header",
});
// Same shape as items/:id with another parameter name: refused (logged by the engine).
iii.registerFunction("http::conflict", async () => ({ body: { wrong: true } }));
iii.registerTrigger({ type: "http", function_id: "http::conflict", config: { api_path: "/items/:name" } });

// Ready once the last route answers through the engine's own HTTP listener.
const base = process.env.HTTP_URL;
await triggerWithStartupRetry(iii, { function_id: "http::hello", payload: {} });
for (let i = 0; i < 100; i++) {
  const r = await fetch(`${base}/conditional`, { headers: { "x-allow": "yes" } }).catch(() => null);
  if (r?.status === 200) break;
  await sleep(50);
}
stopWatchdog();
emit({ ready: true });
stayUpUntilSignalled(iii);
