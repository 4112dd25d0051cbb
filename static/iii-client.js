// iii-client.js — our browser client for the iii engine's worker protocol.
//
// A plain ES module with no build step and no dependencies. It speaks the same JSON frames as the
// upstream `iii-browser-sdk` 0.22.1 over one WebSocket (see PROTOCOL.md §2–§4) and keeps its API
// shape (`registerWorker` → `trigger`, `registerFunction`, `registerTrigger`,
// `addConnectionStateListener`, `shutdown`). On top of upstream it adds: Error objects with `.code`,
// a connect/handshake timeout, a JSON ping heartbeat, reconnect on `online` / tab visible, the
// engine's `{"type":"error"}` frames surfaced (auth rejected, denied registrations), and a
// reconnect hook so an app can resync what it missed while offline. Runs in browsers and in
// `node --experimental-websocket`.

/** @typedef {'disconnected'|'connecting'|'connected'|'reconnecting'|'failed'} ConnectionState */

/**
 * @typedef {object} ReconnectionConfig
 * @property {number} [initialDelayMs=1000]   delay before the first retry
 * @property {number} [maxDelayMs=30000]      cap for the exponential delay
 * @property {number} [backoffMultiplier=2]   growth factor per attempt
 * @property {number} [jitterFactor=0.3]      the delay varies by up to this fraction, either way
 * @property {number} [maxRetries=-1]         -1 retries forever; otherwise the state becomes `failed`
 */

/**
 * @typedef {object} InitOptions
 * @property {number} [invocationTimeoutMs=30000] default timeout of `trigger()` calls
 * @property {Partial<ReconnectionConfig>} [reconnectionConfig]
 * @property {number} [connectTimeoutMs=10000]   socket open + `workerregistered` must happen within this
 * @property {number} [heartbeatIntervalMs=25000] how often a JSON `ping` is sent while connected
 * @property {number} [heartbeatTimeoutMs=120000] a ping unanswered (no inbound frame at all) this long => dead
 * @property {number} [probeTimeoutMs=10000]     deadline of the quick check made on `online` / tab visible
 * @property {boolean} [stopOnAuthError=false]  stop retrying (state `failed`) when the engine rejects auth
 * @property {typeof WebSocket} [WebSocket]      WebSocket implementation (defaults to the global one)
 * @property {Record<string,string>} [headers]  accepted for API compatibility; browsers cannot send them
 */

/**
 * @typedef {object} ConnectionInfo
 * @property {number} attempt          reconnect attempts since the last successful connection
 * @property {number} [retryInMs]      only in `reconnecting`: delay until the next attempt
 * @property {number} [retryAt]        only in `reconnecting`: `Date.now()` of the next attempt
 * @property {IIIError|null} lastError why the last connection ended (e.g. code `AUTH_ERROR`); cleared when connected
 * @property {boolean} authRejected    `lastError` is an engine auth rejection
 * @property {number} connections      how many times the client has been connected so far
 */

/**
 * @typedef {object} TriggerRequest
 * @property {string} function_id
 * @property {unknown} [payload]       sent as the frame's `data`
 * @property {{type:'void'}|{type:'enqueue', queue:string}} [action]
 * @property {number} [timeoutMs]      overrides `invocationTimeoutMs` for this call
 * @property {unknown} [metadata]      per-call metadata passed through to the callee
 */

/**
 * @typedef {object} TriggerInput
 * @property {string} type             trigger type, e.g. `stream` (sent as `trigger_type`)
 * @property {string} function_id
 * @property {unknown} [config]
 * @property {unknown} [metadata]
 */

/**
 * A function this client serves. Receives the call's `data`, plus a context object.
 * @callback RemoteFunctionHandler
 * @param {any} data
 * @param {{function_id:string, invocation_id?:string, metadata?:unknown, traceparent?:string, baggage?:string}} context
 * @returns {unknown|Promise<unknown>}
 */

const RECONNECTION_DEFAULTS = Object.freeze({
  initialDelayMs: 1000,
  maxDelayMs: 30000,
  backoffMultiplier: 2,
  jitterFactor: 0.3,
  maxRetries: -1,
});

const OPTION_DEFAULTS = Object.freeze({
  invocationTimeoutMs: 30000,
  connectTimeoutMs: 10000,
  heartbeatIntervalMs: 25000,
  heartbeatTimeoutMs: 120000,
  probeTimeoutMs: 10000,
  stopOnAuthError: false,
});

const WS_OPEN = 1;

/** Actions for `trigger({action})`, as in the upstream SDK. */
export const TriggerAction = Object.freeze({
  /** Fire and forget: no `invocation_id`, `trigger()` resolves to `undefined` at once. */
  Void: () => ({ type: 'void' }),
  /** Hand the call to a queue; resolves to `{messageReceiptId}`. */
  Enqueue: ({ queue }) => ({ type: 'enqueue', queue }),
});

/** Built-in engine function ids (upstream `EngineFunctions`). */
export const EngineFunctions = Object.freeze({
  LIST_FUNCTIONS: 'engine::functions::list',
  FUNCTION_INFO: 'engine::functions::info',
  LIST_WORKERS: 'engine::workers::list',
  WORKER_INFO: 'engine::workers::info',
  LIST_TRIGGERS: 'engine::triggers::list',
  TRIGGER_INFO: 'engine::triggers::info',
  LIST_REGISTERED_TRIGGERS: 'engine::registered-triggers::list',
  REGISTERED_TRIGGER_INFO: 'engine::registered-triggers::info',
  REGISTER_WORKER: 'engine::workers::register',
});

/** Built-in engine trigger types (upstream `EngineTriggers`). */
export const EngineTriggers = Object.freeze({
  FUNCTIONS_AVAILABLE: 'engine::functions-available',
  WORKERS_AVAILABLE: 'engine::workers-available',
});

/**
 * Every failure this client reports. `.code` and `.message` are copied from the engine's
 * `{code, message}` error body, so `e.code` / `e.message` work as with the raw upstream object.
 * Codes added by this client: `TIMEOUT`, `SHUTDOWN`, `connection_lost`, `CONNECT_TIMEOUT`,
 * `HEARTBEAT_TIMEOUT`, `INVALID_ARGUMENT`, `SERIALIZATION_ERROR`, `engine_error` (an engine
 * `{"type":"error"}` frame without a code).
 */
export class IIIError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{function_id?: string, stacktrace?: string, trigger_id?: string, trigger_type?: string}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = 'IIIError';
    /** @type {string} */
    this.code = code;
    /** @type {string|undefined} the function called (or whose trigger failed) */
    this.function_id = extra.function_id;
    /** @type {string|undefined} the remote stack trace, when a handler threw */
    this.stacktrace = extra.stacktrace;
    /** @type {string|undefined} for trigger registration failures */
    this.trigger_id = extra.trigger_id;
    /** @type {string|undefined} for trigger registration failures */
    this.trigger_type = extra.trigger_type;
  }

  toJSON() {
    const { code, message, function_id, stacktrace, trigger_id, trigger_type } = this;
    return { code, message, function_id, stacktrace, trigger_id, trigger_type };
  }
}

/**
 * A random v4 UUID. Uses `crypto.randomUUID` when available (secure contexts), otherwise builds one
 * from `crypto.getRandomValues` (plain http on a LAN address). The engine rejects non-UUID ids.
 * @returns {string}
 */
export function uuidv4() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  const b = new Uint8Array(16);
  if (c && typeof c.getRandomValues === 'function') c.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
  b[6] = (b[6] & 0x0f) | 0x40; // version 4
  b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * Reconnect delay for a given attempt: min(initial × multiplier^attempt, max) ± jitter, floored.
 * @param {number} attempt 0 for the first retry
 * @param {ReconnectionConfig} cfg
 * @param {() => number} [random]
 * @returns {number}
 */
export function backoffDelay(attempt, cfg, random = Math.random) {
  const base = Math.min(cfg.initialDelayMs * cfg.backoffMultiplier ** attempt, cfg.maxDelayMs);
  const jitter = base * cfg.jitterFactor * (random() * 2 - 1);
  return Math.max(0, Math.floor(base + jitter));
}

/** Turn an engine error body (or anything thrown) into an IIIError. */
function toIIIError(body, functionId) {
  if (body instanceof IIIError) return body;
  if (body && typeof body === 'object' && 'code' in body) {
    return new IIIError(String(body.code), String(body.message ?? ''), {
      function_id: functionId,
      stacktrace: body.stacktrace ?? undefined,
    });
  }
  return new IIIError('UNKNOWN', String(body?.message ?? body), { function_id: functionId });
}

/**
 * Connect to an iii engine as a worker. Connecting starts at once; the returned client queues
 * calls until it is connected.
 * @param {string} url  WebSocket URL of the engine, e.g. `ws://localhost:3111`
 * @param {InitOptions} [options]
 * @returns {IIIClient}
 */
export function registerWorker(url, options = {}) {
  return new IIIClient(url, options);
}

export class IIIClient {
  /** @type {string} */ #url;
  /** @type {Required<Omit<InitOptions,'reconnectionConfig'|'WebSocket'|'headers'>>} */ #opts;
  /** @type {ReconnectionConfig} */ #rc;
  /** @type {typeof WebSocket} */ #WebSocket;

  /** @type {WebSocket|null} */ #ws = null;
  /** @type {ConnectionState} */ #state = 'disconnected';
  #ready = false; // socket open and accepted by the engine (`workerregistered` received)
  #epoch = 0; // bumped for every new socket
  #attempt = 0;
  #connections = 0;
  #stopped = false;
  #haltedForAuth = false;
  /** @type {IIIError|null} */ #lastError = null;
  /** @type {{retryInMs:number, retryAt:number}|null} */ #retry = null;

  #workerId = null;
  #reattachToken = null;

  /** @type {Map<string, {message: object, handler: RemoteFunctionHandler}>} */ #functions = new Map();
  /** @type {Map<string, object>} */ #triggers = new Map();
  /** @type {Map<string, {resolve: Function, reject: Function, timer: any, function_id: string, sentEpoch: number}>} */
  #pending = new Map();
  /** @type {{text: string, invocationId?: string, epoch?: number}[]} */ #queue = [];

  #timers = { reconnect: null, connect: null, heartbeat: null, probe: null };
  #pingSentAt = 0;
  #lastInboundAt = 0;

  #stateListeners = new Set();
  #reconnectListeners = new Set();
  #errorListeners = new Set();

  /**
   * @param {string} url
   * @param {InitOptions} [options]
   */
  constructor(url, options = {}) {
    if (typeof url !== 'string' || !url) throw new IIIError('INVALID_ARGUMENT', 'registerWorker: url is required');
    this.#url = url;
    const { reconnectionConfig, WebSocket: WS, headers: _ignored, ...rest } = options;
    this.#opts = { ...OPTION_DEFAULTS, ...stripUndefined(rest) };
    this.#rc = { ...RECONNECTION_DEFAULTS, ...stripUndefined(reconnectionConfig ?? {}) };
    this.#WebSocket = WS ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== 'function') {
      throw new IIIError('INVALID_ARGUMENT', 'No WebSocket implementation (in node 20 run with --experimental-websocket)');
    }
    this.#addEnvironmentListeners();
    this.#connect();
  }

  // ───────────────────────────── public API ─────────────────────────────

  /** Current connection state. @returns {ConnectionState} */
  get state() {
    return this.#state;
  }

  /** The engine's id for the current (or last) connection, from `workerregistered`. */
  get workerId() {
    return this.#workerId;
  }

  /**
   * Call a function through the engine.
   * Resolves with its result; rejects with an {@link IIIError} (engine errors keep their `code`,
   * e.g. `FORBIDDEN`; a timeout has code `TIMEOUT`). While offline the call is queued and sent on
   * reconnect, unless it timed out first. With `action: {type:'void'}` it resolves to `undefined` at once.
   * @param {TriggerRequest} request
   * @returns {Promise<any>}
   */
  trigger(request) {
    const { function_id, payload, action, timeoutMs, metadata } = request ?? {};
    if (typeof function_id !== 'string' || !function_id) {
      return Promise.reject(new IIIError('INVALID_ARGUMENT', 'trigger: function_id is required'));
    }
    if (this.#stopped) return Promise.reject(new IIIError('SHUTDOWN', 'iii is shutting down', { function_id }));

    const frame = { type: 'invokefunction', function_id, data: payload ?? null };
    if (action) frame.action = action;
    if (metadata !== undefined) frame.metadata = metadata;

    if (action?.type === 'void') {
      const text = serialize(frame, function_id);
      if (text instanceof IIIError) return Promise.reject(text);
      this.#sendOrQueue({ text });
      return Promise.resolve(undefined);
    }

    const invocationId = uuidv4();
    frame.invocation_id = invocationId;
    const text = serialize(frame, function_id);
    if (text instanceof IIIError) return Promise.reject(text);

    const ms = timeoutMs ?? this.#opts.invocationTimeoutMs;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (!this.#pending.delete(invocationId)) return;
        reject(new IIIError('TIMEOUT', `Invocation timeout after ${ms}ms: ${function_id}`, { function_id }));
      }, ms);
      this.#pending.set(invocationId, { resolve, reject, timer, function_id, sentEpoch: 0 });
      this.#sendOrQueue({ text, invocationId });
    });
  }

  /**
   * Serve a function. The registration is kept in memory and (re)sent on every connection.
   * @param {string|{id:string, description?:string, request_format?:unknown, response_format?:unknown, metadata?:unknown}} idOrMessage
   * @param {RemoteFunctionHandler} handler
   * @param {{description?:string, request_format?:unknown, response_format?:unknown, metadata?:unknown}} [options]
   * @returns {{id: string, unregister: () => void}}
   */
  registerFunction(idOrMessage, handler, options = {}) {
    const fields = typeof idOrMessage === 'object' && idOrMessage !== null ? idOrMessage : { ...options, id: idOrMessage };
    const id = fields.id;
    if (typeof id !== 'string' || !id.trim()) throw new IIIError('INVALID_ARGUMENT', 'registerFunction: id is required');
    if (typeof handler !== 'function') throw new IIIError('INVALID_ARGUMENT', 'registerFunction: handler must be a function');
    if (this.#functions.has(id)) throw new IIIError('INVALID_ARGUMENT', `function id already registered: ${id}`);

    const message = { type: 'registerfunction', ...fields, id };
    this.#functions.set(id, { message, handler });
    this.#sendIfOpen(message); // never queued: the replay on open covers offline registrations

    return {
      id,
      unregister: () => {
        if (this.#functions.get(id)?.handler !== handler) return;
        this.#functions.delete(id);
        this.#sendIfOpen({ type: 'unregisterfunction', id });
      },
    };
  }

  /**
   * Bind a trigger to a function, e.g.
   * `{type:'stream', function_id:'ui::on-todo-change', config:{stream_name:'todo', group_id:'todos'}}`.
   * Kept in memory and (re)sent on every connection.
   * @param {TriggerInput} trigger
   * @returns {{id: string, unregister: () => void}}
   */
  registerTrigger(trigger) {
    const { type, function_id, config, metadata } = trigger ?? {};
    if (typeof type !== 'string' || !type) throw new IIIError('INVALID_ARGUMENT', 'registerTrigger: type is required');
    if (typeof function_id !== 'string' || !function_id) {
      throw new IIIError('INVALID_ARGUMENT', 'registerTrigger: function_id is required');
    }
    const id = uuidv4();
    const message = { type: 'registertrigger', id, trigger_type: type, function_id, config: config ?? null };
    if (metadata !== undefined) message.metadata = metadata;
    this.#triggers.set(id, message);
    this.#sendIfOpen(message);

    return {
      id,
      unregister: () => {
        if (!this.#triggers.delete(id)) return;
        this.#sendOrQueue({ text: JSON.stringify({ type: 'unregistertrigger', id, trigger_type: type }) });
      },
    };
  }

  /**
   * Be told about connection changes. Called at once with the current state, then on every change.
   * @param {(state: ConnectionState, info: ConnectionInfo) => void} listener
   * @returns {() => void} unsubscribe
   */
  addConnectionStateListener(listener) {
    this.#stateListeners.add(listener);
    safeCall(listener, this.#state, this.#info());
    return () => this.#stateListeners.delete(listener);
  }

  /**
   * Be told each time the client is connected again after a disconnection (not on the first
   * connection). Registrations have been replayed and queued calls sent by then; changes made while
   * offline were missed, so this is the place to reload state (e.g. re-run `todos::list`).
   * @param {(info: ConnectionInfo) => void} listener
   * @returns {() => void} unsubscribe
   */
  addReconnectListener(listener) {
    this.#reconnectListeners.add(listener);
    return () => this.#reconnectListeners.delete(listener);
  }

  /**
   * Be told about problems the engine reports outside of a call: an auth rejection (`{"type":"error"}`,
   * code `AUTH_ERROR`), other `{"type":"error"}` frames on a connection that stays open (e.g. a denied
   * registration, `FORBIDDEN`) and failed trigger registrations (`triggerregistrationresult`, with `.trigger_id`).
   * @param {(error: IIIError) => void} listener
   * @returns {() => void} unsubscribe
   */
  addErrorListener(listener) {
    this.#errorListeners.add(listener);
    return () => this.#errorListeners.delete(listener);
  }

  /**
   * Connect now if not connected: cancels a pending backoff timer, resets the attempt counter and
   * leaves the `failed` state. Used for "Retry" buttons; done automatically on `online` / tab visible.
   */
  reconnect() {
    if (this.#stopped) return;
    this.#haltedForAuth = false;
    if (this.#state === 'connected' || this.#state === 'connecting') return;
    clearTimeout(this.#timers.reconnect);
    this.#attempt = 0;
    this.#connect();
  }

  /**
   * Stop for good: no more reconnects, pending calls reject with code `SHUTDOWN`, the socket closes,
   * queued frames are dropped.
   * @returns {Promise<void>}
   */
  async shutdown() {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#removeEnvironmentListeners();
    this.#clearTimers();
    for (const [id, p] of this.#pending) {
      clearTimeout(p.timer);
      this.#pending.delete(id);
      p.reject(new IIIError('SHUTDOWN', 'iii is shutting down', { function_id: p.function_id }));
    }
    this.#queue = [];
    const ws = this.#ws;
    this.#ws = null;
    this.#ready = false;
    if (ws) {
      detach(ws);
      try {
        ws.close();
      } catch {
        /* already closing */
      }
    }
    this.#setState('disconnected');
  }

  // ───────────────────────────── connection lifecycle ─────────────────────────────

  #connect() {
    if (this.#stopped) return;
    this.#retry = null;
    this.#setState('connecting');
    const epoch = ++this.#epoch;
    let ws;
    try {
      ws = new this.#WebSocket(this.#url);
    } catch (err) {
      // A malformed URL never gets better: stop instead of retrying forever.
      this.#lastError = new IIIError('INVALID_URL', `Cannot connect to ${this.#url}: ${err?.message ?? err}`);
      this.#setState('failed');
      return;
    }
    this.#ws = ws;
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => this.#onOpen(ws);
    ws.onmessage = (ev) => this.#onMessage(ws, ev);
    // Errors are fatal for a WebSocket. Browsers follow up with `close`, node 20's WebSocket does not.
    ws.onerror = () => this.#ws === ws && this.#dropSocket(ws, null);
    ws.onclose = () => this.#onClosed(ws, null);
    // Handshake deadline: the socket must open and the engine accept us (`workerregistered`).
    this.#timers.connect = setTimeout(() => {
      if (this.#ws === ws && this.#epoch === epoch && !this.#ready) {
        this.#dropSocket(ws, new IIIError('CONNECT_TIMEOUT', `No connection to ${this.#url} within ${this.#opts.connectTimeoutMs}ms`));
      }
    }, this.#opts.connectTimeoutMs);
  }

  /** Socket is open: re-identify and replay registrations. Calls wait until the engine accepts us. */
  #onOpen(ws) {
    if (this.#ws !== ws) return;
    this.#lastInboundAt = Date.now();
    if (this.#workerId && this.#reattachToken) {
      this.#sendIfOpen({ type: 'reattach', previous_worker_id: this.#workerId, reattach_token: this.#reattachToken });
    }
    for (const { message } of this.#functions.values()) this.#sendIfOpen(message);
    for (const message of this.#triggers.values()) this.#sendIfOpen(message);
  }

  /** `workerregistered` arrived: the engine accepted the connection. */
  #onAccepted(msg) {
    this.#workerId = msg.worker_id ?? this.#workerId;
    this.#reattachToken = msg.reattach_token ?? this.#reattachToken;
    if (this.#ready) return;
    clearTimeout(this.#timers.connect);
    this.#ready = true;
    this.#attempt = 0;
    this.#lastError = null;
    this.#connections += 1;
    this.#flushQueue();
    this.#startHeartbeat();
    this.#setState('connected');
    if (this.#connections > 1) {
      const info = this.#info();
      for (const fn of [...this.#reconnectListeners]) safeCall(fn, info);
    }
  }

  /** Close the socket ourselves (timeouts, dead connection) and handle it like a close event. */
  #dropSocket(ws, reason) {
    detach(ws);
    try {
      ws.close();
    } catch {
      /* ignore */
    }
    this.#onClosed(ws, reason);
  }

  #onClosed(ws, reason) {
    if (this.#ws !== ws) return;
    detach(ws);
    this.#ws = null;
    this.#ready = false;
    this.#clearTimers();
    if (reason) this.#lastError = reason;

    // Calls already sent on this socket can no longer be answered: the engine routes results to
    // the connection that made the call. Fail them now instead of waiting for their timeout.
    const epoch = this.#epoch;
    for (const [id, p] of this.#pending) {
      if (p.sentEpoch !== epoch) continue;
      clearTimeout(p.timer);
      this.#pending.delete(id);
      p.reject(new IIIError('connection_lost', 'Connection to the engine was lost before the result arrived', { function_id: p.function_id }));
    }
    // Replies to the engine's calls on the old connection are pointless on a new one.
    this.#queue = this.#queue.filter((q) => q.epoch === undefined);

    if (this.#stopped) return this.#setState('disconnected');
    this.#setState('disconnected');
    this.#scheduleReconnect();
  }

  #scheduleReconnect() {
    const authRejected = this.#lastError?.code === 'AUTH_ERROR';
    if (authRejected && this.#opts.stopOnAuthError) this.#haltedForAuth = true;
    if (this.#haltedForAuth || (this.#rc.maxRetries !== -1 && this.#attempt >= this.#rc.maxRetries)) {
      this.#setState('failed');
      return;
    }
    const delay = backoffDelay(this.#attempt, this.#rc);
    this.#attempt += 1;
    this.#retry = { retryInMs: delay, retryAt: Date.now() + delay };
    this.#timers.reconnect = setTimeout(() => this.#connect(), delay);
    this.#setState('reconnecting');
  }

  // ───────────────────────────── heartbeat and wake-ups ─────────────────────────────

  #startHeartbeat() {
    this.#pingSentAt = 0;
    clearInterval(this.#timers.heartbeat);
    this.#timers.heartbeat = setInterval(() => this.#heartbeatTick(), this.#opts.heartbeatIntervalMs);
  }

  /** Send a ping unless one is outstanding; give up on a socket whose ping went unanswered too long. */
  #heartbeatTick() {
    const ws = this.#ws;
    if (!ws || !this.#ready) return;
    const now = Date.now();
    if (this.#pingSentAt && now - this.#pingSentAt > this.#opts.heartbeatTimeoutMs) {
      this.#dropSocket(ws, new IIIError('HEARTBEAT_TIMEOUT', `No answer from the engine for ${now - this.#pingSentAt}ms`));
      return;
    }
    if (!this.#pingSentAt) {
      this.#pingSentAt = now;
      this.#sendIfOpen({ type: 'ping' });
    }
  }

  /** Quick liveness check after the network or the tab comes back: ping, expect any frame soon. */
  #probe() {
    const ws = this.#ws;
    if (!ws || !this.#ready || this.#timers.probe) return;
    const started = Date.now();
    this.#sendIfOpen({ type: 'ping' });
    this.#timers.probe = setTimeout(() => {
      this.#timers.probe = null;
      if (this.#ws === ws && this.#lastInboundAt < started) {
        this.#dropSocket(ws, new IIIError('HEARTBEAT_TIMEOUT', `No answer from the engine within ${this.#opts.probeTimeoutMs}ms`));
      }
    }, this.#opts.probeTimeoutMs);
  }

  #wake = () => {
    if (this.#stopped || this.#haltedForAuth) return;
    if (this.#state === 'connected') this.#probe();
    else if (this.#state !== 'connecting') this.reconnect();
  };

  #onVisibility = () => {
    if (globalThis.document?.visibilityState === 'visible') this.#wake();
  };

  #addEnvironmentListeners() {
    globalThis.addEventListener?.('online', this.#wake);
    globalThis.document?.addEventListener?.('visibilitychange', this.#onVisibility);
  }

  #removeEnvironmentListeners() {
    globalThis.removeEventListener?.('online', this.#wake);
    globalThis.document?.removeEventListener?.('visibilitychange', this.#onVisibility);
  }

  // ───────────────────────────── inbound frames ─────────────────────────────

  #onMessage(ws, ev) {
    if (this.#ws !== ws) return;
    this.#lastInboundAt = Date.now();
    this.#pingSentAt = 0;
    let text = ev.data;
    if (typeof text !== 'string') {
      try {
        text = new TextDecoder().decode(text);
      } catch {
        return;
      }
    }
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      console.warn('[iii] dropping a frame that is not JSON');
      return;
    }
    if (!msg || typeof msg !== 'object') return;

    switch (msg.type) {
      case 'workerregistered':
        return this.#onAccepted(msg);
      case 'invocationresult':
        return this.#onInvocationResult(msg);
      case 'invokefunction':
        return void this.#onInvokeFunction(msg);
      case 'registertrigger':
        // We provide no trigger types; answer like the SDKs do for an unknown type.
        return this.#sendOrQueue({
          text: JSON.stringify({
            type: 'triggerregistrationresult',
            id: msg.id,
            trigger_type: msg.trigger_type,
            function_id: msg.function_id,
            error: { code: 'trigger_type_not_found', message: 'Trigger type not found' },
          }),
        });
      case 'triggerregistrationresult':
        return this.#onTriggerRegistrationResult(msg);
      case 'error':
        return this.#onEngineError(msg);
      default:
        return; // pong, unregistertrigger and unknown types: nothing to do
    }
  }

  #onInvocationResult(msg) {
    const p = this.#pending.get(msg.invocation_id);
    if (!p) return; // timed out, or not ours
    this.#pending.delete(msg.invocation_id);
    clearTimeout(p.timer);
    if (msg.error) p.reject(toIIIError(msg.error, msg.function_id ?? p.function_id));
    else p.resolve(msg.result);
  }

  /** The engine calls one of our functions. Reply unless the call carries no `invocation_id`. */
  async #onInvokeFunction(msg) {
    const { invocation_id, function_id, data, traceparent, baggage, metadata } = msg;
    const epoch = this.#epoch;
    const fn = this.#functions.get(function_id);
    const reply = (body) => {
      if (!invocation_id) return;
      const frame = { type: 'invocationresult', invocation_id, function_id, ...body };
      if (traceparent !== undefined) frame.traceparent = traceparent;
      if (baggage !== undefined) frame.baggage = baggage;
      const text = serialize(frame, function_id);
      this.#sendOrQueue(
        text instanceof IIIError
          ? { text: JSON.stringify({ type: 'invocationresult', invocation_id, function_id, error: { code: 'invocation_failed', message: text.message } }), epoch }
          : { text, epoch },
      );
    };

    if (!fn) {
      if (!invocation_id) console.warn(`[iii] no handler for ${function_id}`);
      return reply({ error: { code: 'function_not_found', message: 'Function not found' } });
    }
    try {
      const result = await fn.handler(data, { function_id, invocation_id, metadata, traceparent, baggage });
      reply({ result });
    } catch (err) {
      if (!invocation_id) console.error(`[iii] ${function_id} failed:`, err);
      reply({
        error: {
          code: 'invocation_failed',
          message: String(err?.message ?? err),
          ...(err?.stack ? { stacktrace: String(err.stack) } : {}),
        },
      });
    }
  }

  #onTriggerRegistrationResult(msg) {
    if (!msg.error) return;
    const body = msg.error;
    const err = new IIIError(String(body.code ?? 'trigger_registration_failed'), String(body.message ?? ''), {
      function_id: msg.function_id,
      trigger_id: msg.id,
      trigger_type: msg.trigger_type,
    });
    console.warn(`[iii] Trigger registration failed for "${msg.id}" (${msg.trigger_type}): ${err.message}`);
    this.#emitError(err);
  }

  /**
   * `{"type":"error"}`. Code `AUTH_ERROR` means the engine refused the connection and closes the
   * socket next. Any other code reports a problem on a connection that stays open (a denied
   * registration is `FORBIDDEN`, a frame the engine could not read is `invalid_message` or
   * `unknown_message_type`): the listeners hear about it, the connection state is left alone.
   */
  #onEngineError(msg) {
    const body = msg.error ?? {};
    const code = String(body.code ?? 'engine_error');
    if (code === 'AUTH_ERROR') {
      const err = new IIIError(code, String(body.message ?? 'connection rejected by the engine'));
      this.#lastError = err;
      console.warn(`[iii] engine rejected the connection: ${err.code}: ${err.message}`);
      this.#emitError(err);
      return;
    }
    const err = new IIIError(code, String(body.message ?? 'error reported by the engine'));
    console.warn(`[iii] engine reported an error: ${err.code}: ${err.message}`);
    this.#emitError(err);
  }

  #emitError(err) {
    for (const fn of [...this.#errorListeners]) safeCall(fn, err);
  }

  // ───────────────────────────── outbound frames ─────────────────────────────

  /** Send now if the socket is open (used for registrations, which are replayed on open instead). */
  #sendIfOpen(message) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WS_OPEN) return false;
    ws.send(typeof message === 'string' ? message : JSON.stringify(message));
    return true;
  }

  /** Send now if the engine has accepted us, else queue until it has. */
  #sendOrQueue(item) {
    if (this.#ready && this.#sendIfOpen(item.text)) {
      this.#markSent(item);
      return;
    }
    this.#queue.push(item);
  }

  #markSent(item) {
    if (!item.invocationId) return;
    const p = this.#pending.get(item.invocationId);
    if (p) p.sentEpoch = this.#epoch;
  }

  #flushQueue() {
    const queue = this.#queue;
    this.#queue = [];
    for (const item of queue) {
      if (item.invocationId && !this.#pending.has(item.invocationId)) continue; // timed out while offline
      if (item.epoch !== undefined && item.epoch !== this.#epoch) continue; // reply for an old connection
      if (!this.#sendIfOpen(item.text)) {
        this.#queue.push(item);
        continue;
      }
      this.#markSent(item);
    }
  }

  // ───────────────────────────── helpers ─────────────────────────────

  /** @param {ConnectionState} state */
  #setState(state) {
    if (state === this.#state) return;
    this.#state = state;
    const info = this.#info();
    for (const fn of [...this.#stateListeners]) safeCall(fn, state, info);
  }

  /** @returns {ConnectionInfo} */
  #info() {
    return {
      attempt: this.#attempt,
      ...(this.#state === 'reconnecting' && this.#retry ? this.#retry : {}),
      lastError: this.#lastError,
      authRejected: this.#lastError?.code === 'AUTH_ERROR',
      connections: this.#connections,
    };
  }

  #clearTimers() {
    clearTimeout(this.#timers.reconnect);
    clearTimeout(this.#timers.connect);
    clearInterval(this.#timers.heartbeat);
    clearTimeout(this.#timers.probe);
    this.#timers = { reconnect: null, connect: null, heartbeat: null, probe: null };
  }
}

function detach(ws) {
  ws.onopen = ws.onmessage = ws.onclose = null;
  ws.onerror = () => {};
}

function safeCall(fn, ...args) {
  try {
    fn(...args);
  } catch (err) {
    console.error('[iii] listener threw:', err);
  }
}

function stripUndefined(obj) {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined));
}

/** JSON-encode a frame; an unserializable payload (cycle, BigInt) becomes an IIIError. */
function serialize(frame, functionId) {
  try {
    return JSON.stringify(frame);
  } catch (err) {
    return new IIIError('SERIALIZATION_ERROR', `Cannot serialize the call: ${err?.message ?? err}`, { function_id: functionId });
  }
}
