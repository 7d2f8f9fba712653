// ResearchFlow events — browser client for the `/ws` protocol (docs/protocol.md, version 1).
//
// Plain ES module, no build step: load it with <script type="module"> or import it from Node.
//
//   import { RunEventsClient } from "/static/researchflow/run-events.js";
//   const client = new RunEventsClient({ runId: "run-123", lastEventId: 41 });
//   const off = client.subscribe("stage.progress", (event) => render(event.payload));
//   client.subscribe_category("RUN_EVENTS", (event) => refreshRun(event));
//
// Semantics worth knowing (see the JSDoc of each member for details):
//
// * Connection flow: open socket -> wait for `connection.established` -> send ONE `auth` message
//   carrying the scope (userId/projectId/runId), the optional token, `lastEventId` and the full
//   subscription set (option lists ∪ types/categories that currently have handlers). The server
//   replaces the socket's subscriptions with that set and replays every missed event from its log.
//   The state becomes "open" on `auth.success`.
// * Server subscriptions follow handlers: `subscribe` is sent when the first handler of a type
//   (or category) arrives, `unsubscribe` when the last one leaves. Types/categories given in the
//   `eventTypes` / `eventCategories` options stay subscribed for the client's whole life (they feed
//   `onEvent`). While not authenticated nothing is sent: the next `auth` carries the set, and any
//   change made between sending `auth` and receiving `auth.success` is sent right after it.
// * Exactly-once: every event carries its integer log position `id`. An event whose id is <= the
//   client's `lastEventId` is dropped; otherwise `lastEventId` becomes its id. Together with the
//   `lastEventId` in `auth` this gives gap-free, duplicate-free delivery across reconnects.
// * Dispatch: each event goes to the handlers of its type, then to the handlers of its category,
//   then to `onEvent` / "event" listeners. A handler registered for BOTH a type and that type's
//   category is therefore called twice for such an event (once per registration). Registering the
//   same handler twice for the same type (or category) keeps it once, like addEventListener.
//   A handler removed during a dispatch is not called afterwards. A throwing handler does not stop
//   the others; the exception is reported through `onError` / "error" listeners.
// * Reconnect: exponential backoff with EQUAL jitter:
//     base = min(maxReconnectDelay, reconnectDelay * 2^n);  delay = base/2 + random() * base/2
//   (n = 0 for the first retry), so delays always grow until the cap, yet clients that lose the
//   server together do not come back in lock-step. After `reconnectAttempts` failed attempts the
//   state becomes "closed" with an error. The attempt count is reset by a successful `auth`.
//   Close codes 4401 (not authenticated / revoked) and 4403 (origin/permission refused) are not
//   retried, nor is `auth.failed`; any other close (1001, 1006, 4008, 1000 from the server, ...) is.
// * Heartbeat: `{"type":"ping"}` every `pingInterval` ms; if nothing at all (pong or any other
//   frame) arrives within `pongTimeout` ms after a ping, the socket is considered dead: it is
//   closed and a reconnect is scheduled.
// * disconnect(): closes with 1000, clears every timer, state "closed", no reconnect. Handlers stay
//   registered (a later connect() restores their subscriptions); remove them with the returned
//   unsubscribe functions / unsubscribe(). Removed handlers are not referenced any more.
// * Transport (`transport`: "auto" (default) | "websocket" | "sse"): behind a proxy that breaks
//   WebSocket upgrades, "auto" falls back to Server-Sent Events (`GET /events/stream`,
//   docs/protocol.md) after `sseFallbackAfter` sockets in a row closed before the server's first
//   frame (a refused upgrade closes 1006 before `open`), or at once when a WebSocket cannot be
//   constructed. Same API, same events, same exactly-once rule: each stream is opened with the
//   scope, the subscription set and `lastEventId` in its query, read with fetch() (so a token goes
//   in the Authorization header, never in the URL; same-origin pages send the session cookie),
//   and reopened from the last id when the subscription set changes or the stream ends. A stream
//   that fails before it opens (the server is down) sends the next attempt back to the WebSocket,
//   so after a restart whichever transport works is found. The server's keepalive comments stand
//   in for pong: nothing for `pingInterval + pongTimeout` ms means a dead stream. HTTP 401/403 are
//   final like close codes 4401/4403, and 400/404 like `auth.failed`; anything else is retried.

/** Event categories and their event types (docs/protocol.md, "Event types and categories"); kept
 * equal to the server's catalogue (events/schemas.py EVENT_CATALOGUE) by tests/test_catalogue.py. */
export const EVENT_CATEGORIES = Object.freeze({
  RUN_EVENTS: Object.freeze(["run.created", "run.started", "run.completed", "run.failed"]),
  STAGE_EVENTS: Object.freeze(["stage.started", "stage.progress", "stage.completed", "stage.failed"]),
  ARTIFACT_EVENTS: Object.freeze(["artifact.created"]),
  GOVERNANCE_EVENTS: Object.freeze(["governance.required", "approval.granted", "approval.denied"]),
});

/** All twelve event types. */
export const EVENT_TYPES = Object.freeze(Object.values(EVENT_CATEGORIES).flat());

/** @type {Readonly<Record<string, string>>} event type -> category */
const CATEGORY_OF_TYPE = Object.freeze(
  Object.fromEntries(
    Object.entries(EVENT_CATEGORIES).flatMap(([category, types]) => types.map((t) => [t, category])),
  ),
);

/**
 * @typedef {"connecting" | "open" | "reconnecting" | "closed"} ConnectionStateValue
 */

/** Connection states. */
export const ConnectionState = Object.freeze({
  /** First connection (connect()) in progress: socket opening or authenticating. */
  CONNECTING: /** @type {ConnectionStateValue} */ ("connecting"),
  /** Authenticated (`auth.success` received); events flow. */
  OPEN: /** @type {ConnectionStateValue} */ ("open"),
  /** Connection lost (or reconnect() called): waiting for the backoff timer or re-authenticating. */
  RECONNECTING: /** @type {ConnectionStateValue} */ ("reconnecting"),
  /** Not connected and not trying to: initial (autoConnect false), disconnect(), auth refused, gave up. */
  CLOSED: /** @type {ConnectionStateValue} */ ("closed"),
});

/** Close codes after which the client does not try again (auth / permission problems). */
export const NON_RETRYABLE_CLOSE_CODES = Object.freeze([4401, 4403]);

const WS_OPEN = 1; // WebSocket.OPEN; not read from the constructor so injected fakes need not define it
const WS_CONNECTING = 0;

const LISTENER_NAMES = Object.freeze(["state", "error", "resync", "event", "message"]);

const TRANSPORTS = Object.freeze(["auto", "websocket", "sse"]);

/**
 * @typedef {object} RunEvent
 * @property {number} id            Position in the server's event log (strictly increasing).
 * @property {string} type          One of EVENT_TYPES.
 * @property {string} timestamp     ISO-8601 UTC, e.g. "2026-01-28T20:30:00.000Z".
 * @property {Record<string, any>} payload
 */

/**
 * @callback EventHandler
 * @param {RunEvent} event
 * @returns {void}
 */

/**
 * @typedef {object} RunEventsClientOptions
 * @property {string|number} [runId]       Narrow the socket to this run.
 * @property {string|number} [projectId]   Narrow the socket to this project.
 * @property {string} [userId]             Username; must be the authenticated user.
 * @property {string[]} [eventTypes]       Types subscribed for the client's whole life (feed onEvent).
 * @property {string[]} [eventCategories]  Categories subscribed for the client's whole life.
 * @property {(error: Error) => void} [onError]
 * @property {boolean} [autoConnect=true]  Call connect() from the constructor.
 * @property {number} [reconnectAttempts=10] Max consecutive reconnect attempts (Infinity allowed).
 * @property {number} [reconnectDelay=1000]  Base backoff delay in ms.
 * @property {number} [maxReconnectDelay=30000] Backoff cap in ms.
 * @property {string} [url]  Default: globalThis.RESEARCHFLOW_WEBSOCKET_URL, else same-origin `/ws`
 *   (`wss:` on https pages, `ws:` on http). Relative (`/ws`) and http(s) URLs are converted.
 * @property {string | (() => string | null | undefined | Promise<string | null | undefined>)} [token]
 *   REST API token or short-lived socket token, sent in `auth.payload.token` (never in the URL).
 *   A function is called for every (re)connection, e.g. to fetch a fresh token from
 *   `POST /api/ws/token/`.
 * @property {number|null} [lastEventId]  Start after this log position (the newest event id the
 *   page's REST-loaded state reflects).
 * @property {any} [WebSocket]  WebSocket constructor (tests); default globalThis.WebSocket.
 * @property {"auto"|"websocket"|"sse"} [transport="auto"]  "auto": WebSocket, falling back to
 *   Server-Sent Events when sockets cannot be opened; or one of them only.
 * @property {number} [sseFallbackAfter=2]  "auto": sockets in a row that close before the server's
 *   first frame before switching to Server-Sent Events.
 * @property {string} [sseUrl]  Default: the socket URL with http(s) and `/events/stream` for its
 *   final `/ws` (same-origin `/events/stream` by default).
 * @property {any} [fetch]  fetch() implementation for the stream (tests); default globalThis.fetch.
 * @property {number} [pingInterval=30000]
 * @property {number} [pongTimeout=10000]
 * @property {(state: ConnectionStateValue, previous: ConnectionStateValue) => void} [onStateChange]
 * @property {(payload: {lastEventId?: number|null, oldestEventId?: number|null}) => void} [onResync]
 *   Called on `resync.required`: the log no longer holds what was missed; reload over REST.
 * @property {(event: RunEvent) => void} [onEvent]  Every delivered event.
 */

/** Error type used for everything the client reports; `code` tells what happened. */
export class RunEventsError extends Error {
  /**
   * @param {string} message
   * @param {string} code  auth_failed | unauthorized | forbidden | reconnect_exhausted |
   *   heartbeat_timeout | transport_error | server_error | handler_error | invalid_message |
   *   token_error | connect_failed
   * @param {{details?: any, closeCode?: number, cause?: unknown, event?: RunEvent}} [extra]
   */
  constructor(message, code, extra = {}) {
    super(message, extra.cause !== undefined ? { cause: extra.cause } : undefined);
    this.name = "RunEventsError";
    this.code = code;
    if (extra.details !== undefined) this.details = extra.details;
    if (extra.closeCode !== undefined) this.closeCode = extra.closeCode;
    if (extra.event !== undefined) this.event = extra.event;
  }
}

/** @param {string} type @returns {string|undefined} the category of an event type */
export function categoryOf(type) {
  return CATEGORY_OF_TYPE[type];
}

/** @param {unknown} type */
export function assertEventType(type) {
  if (typeof type !== "string" || !Object.prototype.hasOwnProperty.call(CATEGORY_OF_TYPE, type)) {
    throw new TypeError(`Unknown event type: ${String(type)} (expected one of ${EVENT_TYPES.join(", ")})`);
  }
}

/** @param {unknown} category */
export function assertEventCategory(category) {
  if (typeof category !== "string" || !Object.prototype.hasOwnProperty.call(EVENT_CATEGORIES, category)) {
    throw new TypeError(
      `Unknown event category: ${String(category)} (expected one of ${Object.keys(EVENT_CATEGORIES).join(", ")})`,
    );
  }
}

/** @param {unknown} handler */
function assertHandler(handler) {
  if (typeof handler !== "function") throw new TypeError("Event handler must be a function");
}

/**
 * Resolve the socket URL: explicit `url`, else globalThis.RESEARCHFLOW_WEBSOCKET_URL, else
 * same-origin `/ws`. Relative paths and http(s) URLs are turned into ws(s) URLs.
 * @param {string} [url]
 * @param {{protocol: string, host: string} | undefined} [location]
 * @returns {string}
 */
export function resolveWebSocketUrl(url, location = /** @type {any} */ (globalThis).location) {
  let target = url ?? /** @type {any} */ (globalThis).RESEARCHFLOW_WEBSOCKET_URL ?? "/ws";
  target = String(target);
  if (/^wss?:\/\//i.test(target)) return target;
  if (/^https?:\/\//i.test(target)) return target.replace(/^http/i, "ws");
  if (!location || !location.host) {
    throw new TypeError(`Cannot resolve WebSocket URL ${JSON.stringify(target)} without a page location; pass options.url`);
  }
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const path = target.startsWith("/") ? target : `/${target}`;
  return `${scheme}//${location.host}${path}`;
}

/**
 * Resolve the Server-Sent Events URL: explicit `sseUrl` (relative to the page), else the socket
 * URL with http(s) for ws(s) and `/events/stream` in place of its final `/ws`.
 * @param {string|undefined} sseUrl
 * @param {string} socketUrl  an absolute ws(s) URL
 * @param {{protocol: string, host: string} | undefined} [location]
 * @returns {string}
 */
export function resolveStreamUrl(sseUrl, socketUrl, location = /** @type {any} */ (globalThis).location) {
  if (sseUrl !== undefined && sseUrl !== null) {
    const target = String(sseUrl);
    if (/^https?:\/\//i.test(target)) return target;
    if (!location || !location.host) {
      throw new TypeError(`Cannot resolve event stream URL ${JSON.stringify(target)} without a page location`);
    }
    return `${location.protocol}//${location.host}${target.startsWith("/") ? target : `/${target}`}`;
  }
  const parsed = new URL(socketUrl);
  const scheme = parsed.protocol === "wss:" ? "https:" : "http:";
  const path = parsed.pathname.endsWith("/ws") ? `${parsed.pathname.slice(0, -3)}/events/stream` : "/events/stream";
  return `${scheme}//${parsed.host}${path}`;
}

/**
 * Backoff delay before reconnect attempt `attempt` (0-based), with equal jitter:
 * base = min(maxReconnectDelay, reconnectDelay * 2^attempt); result in [base/2, base].
 * @param {number} attempt
 * @param {{reconnectDelay: number, maxReconnectDelay: number}} options
 * @param {() => number} [random]
 */
export function computeBackoffDelay(attempt, { reconnectDelay, maxReconnectDelay }, random = Math.random) {
  const base = Math.min(maxReconnectDelay, reconnectDelay * 2 ** attempt);
  return Math.round(base / 2 + random() * (base / 2));
}

/** @param {unknown} value @param {string} name */
function normaliseEventId(value, name) {
  if (value === undefined || value === null) return null;
  const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 0) {
    throw new TypeError(`${name} must be a non-negative integer event id or null`);
  }
  return n;
}

/**
 * @param {unknown} list
 * @param {string} name
 * @param {(v: unknown) => void} check
 * @returns {string[]}
 */
function normaliseList(list, name, check) {
  if (list === undefined || list === null) return [];
  if (!Array.isArray(list)) throw new TypeError(`${name} must be an array`);
  list.forEach(check);
  return [...new Set(/** @type {string[]} */ (list))];
}

/** @param {unknown} v @param {string} name @param {number} min */
function nonNegativeNumber(v, name, min = 0) {
  if (typeof v !== "number" || Number.isNaN(v) || v < min) throw new TypeError(`${name} must be a number >= ${min}`);
  return v;
}

/** WebSocket client for ResearchFlow run events. */
export class RunEventsClient {
  /** @param {RunEventsClientOptions} [options] */
  constructor(options = {}) {
    const o = options;
    /** @private */ this._scope = { runId: o.runId, projectId: o.projectId, userId: o.userId };
    /** @private */ this._token = o.token;
    /** @private */ this._baseTypes = normaliseList(o.eventTypes, "eventTypes", assertEventType);
    /** @private */ this._baseCategories = normaliseList(o.eventCategories, "eventCategories", assertEventCategory);
    /** @private */ this._reconnectAttempts = nonNegativeNumber(o.reconnectAttempts ?? 10, "reconnectAttempts");
    /** @private */ this._reconnectDelay = nonNegativeNumber(o.reconnectDelay ?? 1000, "reconnectDelay");
    /** @private */ this._maxReconnectDelay = nonNegativeNumber(o.maxReconnectDelay ?? 30000, "maxReconnectDelay");
    /** @private */ this._pingInterval = nonNegativeNumber(o.pingInterval ?? 30000, "pingInterval", 1);
    /** @private */ this._pongTimeout = nonNegativeNumber(o.pongTimeout ?? 10000, "pongTimeout", 1);
    /** @private */ this._WebSocket = o.WebSocket ?? /** @type {any} */ (globalThis).WebSocket;
    const globalFetch = /** @type {any} */ (globalThis).fetch;
    // Bound: a browser's fetch called as a method of another object throws "Illegal invocation".
    /** @private */ this._fetch = o.fetch ?? (typeof globalFetch === "function" ? globalFetch.bind(globalThis) : undefined);
    const transport = o.transport ?? "auto";
    if (!TRANSPORTS.includes(transport)) {
      throw new TypeError(`transport must be one of ${TRANSPORTS.join(", ")}`);
    }
    /** @private */ this._mode = transport;
    /** @private */ this._fallbackAfter = nonNegativeNumber(o.sseFallbackAfter ?? 2, "sseFallbackAfter", 1);
    const hasWebSocket = typeof this._WebSocket === "function";
    const hasFetch = typeof this._fetch === "function";
    if (transport !== "sse" && !hasWebSocket && !(transport === "auto" && hasFetch)) {
      throw new TypeError("No WebSocket implementation: pass options.WebSocket");
    }
    if (transport !== "websocket" && !hasFetch && !(transport === "auto" && hasWebSocket)) {
      throw new TypeError("No fetch implementation for Server-Sent Events: pass options.fetch");
    }
    /** The transport the next connection uses. @private @type {"websocket"|"sse"} */
    this._transport = transport === "sse" || (transport === "auto" && !hasWebSocket) ? "sse" : "websocket";
    /** The current socket has had a frame from the server. @private */ this._wsHeard = false;
    /** "auto": sockets in a row closed before the server's first frame. @private */
    this._wsFailures = 0;
    /** @private */ this._url = resolveWebSocketUrl(o.url);
    /** @private */ this._sseUrl = resolveStreamUrl(o.sseUrl, this._url);
    /** The open (or opening) event stream, when the transport is "sse". @private @type {any} */
    this._stream = null;
    /** @private */ this._reopenScheduled = false;
    /** @private */ this._callbacks = {
      onError: o.onError,
      onStateChange: o.onStateChange,
      onResync: o.onResync,
      onEvent: o.onEvent,
    };

    /** @private @type {ConnectionStateValue} */ this._state = ConnectionState.CLOSED;
    /** @private @type {Error|null} */ this._error = null;
    /** @private @type {number|null} */ this._lastEventId = normaliseEventId(o.lastEventId, "lastEventId");
    /** @private @type {string|null} */ this._clientId = null;
    /** @private @type {any} */ this._ws = null;
    /** @private */ this._authenticated = false;
    /** @private */ this._attempt = 0;
    /** @private @type {ReturnType<typeof setTimeout>|null} */ this._reconnectTimer = null;
    /** @private @type {ReturnType<typeof setInterval>|null} */ this._pingTimer = null;
    /** @private @type {ReturnType<typeof setTimeout>|null} */ this._pongTimer = null;
    /** Subscription keys ("type:x" / "category:Y") the server currently has for this socket. @private */
    this._serverSubs = new Set();
    /** @private @type {Map<string, Set<EventHandler>>} */ this._typeHandlers = new Map();
    /** @private @type {Map<string, Set<EventHandler>>} */ this._categoryHandlers = new Map();
    /** @private @type {Map<string, Set<Function>>} */ this._listeners = new Map();

    if (o.autoConnect ?? true) this.connect();
  }

  // ---------------------------------------------------------------- getters

  /** True when authenticated and events flow. */
  get isConnected() {
    return this._state === ConnectionState.OPEN;
  }

  /** @returns {ConnectionStateValue} */
  get connectionState() {
    return this._state;
  }

  /** Last error reported (cleared by a successful authentication), or null. */
  get error() {
    return this._error;
  }

  /** Id of the newest event delivered (or the starting position), or null. */
  get lastEventId() {
    return this._lastEventId;
  }

  /** Server-assigned id of the current socket (from `connection.established`), or null. */
  get clientId() {
    return this._clientId;
  }

  /** The resolved WebSocket URL. */
  get url() {
    return this._url;
  }

  /** The resolved Server-Sent Events URL (`GET /events/stream`). */
  get sseUrl() {
    return this._sseUrl;
  }

  /** @returns {"websocket"|"sse"} the transport of the current (or next) connection */
  get transport() {
    return this._transport;
  }

  // ------------------------------------------------------------ subscriptions

  /**
   * Call `handler` for every event of `eventType`. Throws TypeError for an unknown type.
   * @param {string} eventType
   * @param {EventHandler} handler
   * @returns {() => void} unsubscribe (idempotent)
   */
  subscribe(eventType, handler) {
    assertEventType(eventType);
    assertHandler(handler);
    this._add(this._typeHandlers, eventType, handler);
    /** @type {EventHandler|null} */ let h = handler;
    return () => {
      if (h) this.unsubscribe(eventType, h);
      h = null;
    };
  }

  /**
   * @param {string} eventType
   * @param {EventHandler} handler
   */
  unsubscribe(eventType, handler) {
    assertEventType(eventType);
    this._remove(this._typeHandlers, eventType, handler);
  }

  /**
   * Call `handler` for every event of a category (e.g. "STAGE_EVENTS"). Throws TypeError for an
   * unknown category.
   * @param {string} category
   * @param {EventHandler} handler
   * @returns {() => void} unsubscribe (idempotent)
   */
  subscribe_category(category, handler) {
    assertEventCategory(category);
    assertHandler(handler);
    this._add(this._categoryHandlers, category, handler);
    /** @type {EventHandler|null} */ let h = handler;
    return () => {
      if (h) this.unsubscribe_category(category, h);
      h = null;
    };
  }

  /**
   * @param {string} category
   * @param {EventHandler} handler
   */
  unsubscribe_category(category, handler) {
    assertEventCategory(category);
    this._remove(this._categoryHandlers, category, handler);
  }

  /** camelCase aliases of the spec's snake_case names. */
  subscribeCategory(/** @type {string} */ category, /** @type {EventHandler} */ handler) {
    return this.subscribe_category(category, handler);
  }

  unsubscribeCategory(/** @type {string} */ category, /** @type {EventHandler} */ handler) {
    this.unsubscribe_category(category, handler);
  }

  /**
   * Replace the option-level (always-on) subscriptions, e.g. when a component's props change.
   * @param {string[]} [eventTypes]
   * @param {string[]} [eventCategories]
   */
  setDefaultSubscriptions(eventTypes, eventCategories) {
    const types = normaliseList(eventTypes, "eventTypes", assertEventType);
    const categories = normaliseList(eventCategories, "eventCategories", assertEventCategory);
    this._baseTypes = types;
    this._baseCategories = categories;
    this._syncSubscriptions();
  }

  /**
   * Listen to client happenings. Names: "state" (state, previous), "error" (error),
   * "resync" (payload), "event" (event), "message" (every parsed server frame).
   * @param {"state"|"error"|"resync"|"event"|"message"} name
   * @param {Function} fn
   * @returns {() => void} off
   */
  on(name, fn) {
    if (!LISTENER_NAMES.includes(name)) throw new TypeError(`Unknown listener name: ${String(name)}`);
    assertHandler(fn);
    let set = this._listeners.get(name);
    if (!set) this._listeners.set(name, (set = new Set()));
    set.add(fn);
    /** @type {Function|null} */ let f = fn;
    return () => {
      if (!f) return;
      const s = this._listeners.get(name);
      if (s) {
        s.delete(f);
        if (s.size === 0) this._listeners.delete(name);
      }
      f = null;
    };
  }

  // ------------------------------------------------------------- connection

  /** Open the connection if closed (no-op while connecting, open or reconnecting). */
  connect() {
    if (this._state !== ConnectionState.CLOSED) return;
    this._attempt = 0;
    this._setState(ConnectionState.CONNECTING);
    this._openSocket();
  }

  /** Drop the current socket (if any) and connect again now, with a fresh attempt budget. */
  reconnect() {
    this._clearReconnectTimer();
    this._teardownSocket(1000, "client reconnect");
    this._attempt = 0;
    this._setState(ConnectionState.RECONNECTING);
    this._openSocket();
  }

  /**
   * Close with 1000 and stop: no timers remain, no reconnect. Handlers stay registered, so a later
   * connect() restores their subscriptions; unsubscribe them to release them.
   */
  disconnect() {
    this._clearReconnectTimer();
    this._teardownSocket(1000, "client disconnect");
    this._setState(ConnectionState.CLOSED);
  }

  // -------------------------------------------------------------- internals

  /** @private */
  _add(/** @type {Map<string, Set<EventHandler>>} */ map, /** @type {string} */ key, /** @type {EventHandler} */ handler) {
    let set = map.get(key);
    if (!set) map.set(key, (set = new Set()));
    set.add(handler);
    this._syncSubscriptions();
  }

  /** @private */
  _remove(/** @type {Map<string, Set<EventHandler>>} */ map, /** @type {string} */ key, /** @type {EventHandler} */ handler) {
    const set = map.get(key);
    if (!set || !set.delete(handler)) return;
    if (set.size === 0) map.delete(key);
    this._syncSubscriptions();
  }

  /** Wanted subscriptions: option lists ∪ keys with handlers. @private */
  _desired() {
    const types = new Set([...this._baseTypes, ...this._typeHandlers.keys()]);
    const categories = new Set([...this._baseCategories, ...this._categoryHandlers.keys()]);
    return { types: [...types].sort(), categories: [...categories].sort() };
  }

  /** Bring the server's subscription set in line with the wanted one (only when authenticated). @private */
  _syncSubscriptions() {
    if (!this._authenticated) return;
    const { types, categories } = this._desired();
    const wanted = new Set([...types.map((t) => `type:${t}`), ...categories.map((c) => `category:${c}`)]);
    if (this._stream) {
      // A stream's subscriptions are its query: reopen it from the last id with the new set,
      // once for all the changes made in this turn (a component registering several handlers).
      if (sameSet(wanted, this._serverSubs) || this._reopenScheduled) return;
      this._reopenScheduled = true;
      queueMicrotask(() => {
        this._reopenScheduled = false;
        if (!this._stream || !this._authenticated) return;
        const now = this._desired();
        const keys = new Set([...now.types.map((t) => `type:${t}`), ...now.categories.map((c) => `category:${c}`)]);
        if (sameSet(keys, this._serverSubs)) return;
        this._teardownSocket(1000, "subscriptions changed");
        this._openStream();
      });
      return;
    }
    for (const key of [...this._serverSubs]) {
      if (!wanted.has(key)) {
        this._serverSubs.delete(key);
        this._send({ type: "unsubscribe", payload: subscriptionPayload(key) });
      }
    }
    for (const key of wanted) {
      if (!this._serverSubs.has(key)) {
        this._serverSubs.add(key);
        this._send({ type: "subscribe", payload: subscriptionPayload(key) });
      }
    }
  }

  /** @private */
  _openSocket() {
    if (this._transport === "sse") {
      this._openStream();
      return;
    }
    let ws;
    try {
      ws = new this._WebSocket(this._url);
    } catch (cause) {
      if (this._mode === "auto" && typeof this._fetch === "function") {
        this._transport = "sse"; // no WebSocket here at all (a policy, a missing implementation)
        this._openStream();
        return;
      }
      this._setState(ConnectionState.CLOSED);
      this._report(new RunEventsError(`Cannot open WebSocket ${this._url}`, "connect_failed", { cause }));
      return;
    }
    this._ws = ws;
    this._wsHeard = false;
    this._authenticated = false;
    this._serverSubs = new Set();
    this._clientId = null;
    ws.onopen = () => {
      if (ws !== this._ws) return;
      this._startHeartbeat();
    };
    ws.onmessage = (/** @type {{data: unknown}} */ ev) => {
      if (ws !== this._ws) return;
      this._onMessage(ws, ev.data);
    };
    ws.onerror = () => {
      if (ws !== this._ws) return;
      this._report(new RunEventsError("WebSocket error", "transport_error"));
    };
    ws.onclose = (/** @type {{code?: number, reason?: string}} */ ev) => {
      if (ws !== this._ws) return;
      if (!this._wsHeard && this._mode === "auto") {
        // Closed before the server's first frame: a refused upgrade, a proxy, or no server.
        this._wsFailures += 1;
        if (this._wsFailures >= this._fallbackAfter && typeof this._fetch === "function") this._transport = "sse";
      }
      this._onClose(ev?.code ?? 1006, ev?.reason ?? "");
    };
  }

  /** Open a Server-Sent Events stream (fetch, read, parse); see "Transport" above. @private */
  _openStream() {
    const controller = typeof AbortController === "function" ? new AbortController() : null;
    const { types, categories } = this._desired();
    const stream = { controller, opened: false, closeCode: /** @type {number|null} */ (null), closeReason: "" };
    this._stream = stream;
    this._authenticated = false;
    this._clientId = null;
    // The stream's subscriptions are exactly the set in its query.
    this._serverSubs = new Set([...types.map((t) => `type:${t}`), ...categories.map((c) => `category:${c}`)]);
    const live = () => stream === this._stream;
    void (async () => {
      /** @type {unknown} */
      let token = this._token;
      if (typeof token === "function") {
        try {
          token = await token();
        } catch (cause) {
          if (!live()) return;
          this._teardownSocket(1000, "no token");
          this._scheduleReconnect();
          this._report(new RunEventsError("Could not obtain a socket token", "token_error", { cause }));
          return;
        }
        if (!live()) return;
      }
      /** @type {Record<string, string>} */
      const headers = { Accept: "text/event-stream" };
      if (token !== undefined && token !== null && token !== "") headers.Authorization = `Token ${String(token)}`;
      const query = new URLSearchParams();
      for (const [k, v] of Object.entries(this._scope)) if (v !== undefined && v !== null) query.set(k, String(v));
      query.set("types", types.join(","));
      query.set("categories", categories.join(","));
      if (this._lastEventId !== null) query.set("lastEventId", String(this._lastEventId));
      const url = `${this._sseUrl}${this._sseUrl.includes("?") ? "&" : "?"}${query}`;
      let response;
      try {
        response = await this._fetch(url, {
          headers,
          credentials: "include",
          cache: "no-store",
          signal: controller?.signal,
        });
      } catch (cause) {
        if (!live()) return;
        this._report(new RunEventsError("Event stream request failed", "transport_error", { cause }));
        if (live()) this._onStreamEnd(stream);
        return;
      }
      if (!live()) return;
      if (!response.ok) {
        await this._onStreamRefused(stream, response);
        return;
      }
      stream.opened = true;
      this._armStreamWatchdog(stream);
      try {
        await this._readStream(stream, response);
      } catch (cause) {
        if (!live()) return;
        this._report(new RunEventsError("Event stream broken", "transport_error", { cause }));
      }
      if (live()) this._onStreamEnd(stream);
    })();
  }

  /** The stream was answered with an HTTP error before it started. @private */
  async _onStreamRefused(/** @type {any} */ stream, /** @type {any} */ response) {
    const status = Number(response.status);
    /** @type {any} */
    let body = null;
    try {
      body = await response.json();
    } catch {
      // not JSON: the status says enough
    }
    if (stream !== this._stream) return;
    const detail = body && typeof body.detail === "string" ? body.detail : `HTTP ${status}`;
    if (status === 401 || status === 403) {
      this._teardownSocket(1000, "");
      this._setState(ConnectionState.CLOSED);
      const what = status === 401 ? "not authenticated" : "refused (origin or permission)";
      this._report(
        new RunEventsError(`Event stream refused: ${what} — ${detail}`, status === 401 ? "unauthorized" : "forbidden", {
          closeCode: status === 401 ? 4401 : 4403,
          details: body,
        }),
      );
      return;
    }
    if (status === 400 || status === 404) {
      this._clearReconnectTimer();
      this._teardownSocket(1000, "");
      this._setState(ConnectionState.CLOSED);
      this._report(new RunEventsError(`Authentication failed: ${detail}`, "auth_failed", { details: body }));
      return;
    }
    this._onStreamEnd(stream); // 429, 5xx, a proxy's error page: retried
  }

  /** Read the response body as SSE (WHATWG HTML "Server-sent events" parsing). @private */
  async _readStream(/** @type {any} */ stream, /** @type {any} */ response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let data = /** @type {string[]} */ ([]);
    let name = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (stream !== this._stream) return;
      if (done) return;
      this._armStreamWatchdog(stream);
      buffer += decoder.decode(value, { stream: true });
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop() ?? "";
      for (const line of lines) {
        if (line === "") {
          if (data.length) this._onStreamMessage(stream, name || "message", data.join("\n"));
          if (stream !== this._stream) return;
          data = [];
          name = "";
          continue;
        }
        if (line.startsWith(":")) continue; // a keepalive comment
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        let text = colon === -1 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "data") data.push(text);
        else if (field === "event") name = text;
        // `id` is also in the frame (its `id`), `retry` is the browser's: both unused here.
      }
    }
  }

  /** One SSE message: the socket's JSON frame, or the stream's `close` notice. @private */
  _onStreamMessage(/** @type {any} */ stream, /** @type {string} */ name, /** @type {string} */ data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (cause) {
      this._report(new RunEventsError("Invalid JSON from server", "invalid_message", { cause }));
      return;
    }
    if (!msg || typeof msg !== "object" || typeof msg.type !== "string") {
      this._report(new RunEventsError("Malformed message from server", "invalid_message", { details: msg }));
      return;
    }
    if (name === "close") {
      stream.closeCode = Number(msg.payload?.code ?? 1000);
      stream.closeReason = String(msg.payload?.reason ?? "");
      return;
    }
    this._handleMessage(stream, msg);
  }

  /** The stream ended (or failed): as a socket's close, with the code its notice named. @private */
  _onStreamEnd(/** @type {any} */ stream) {
    if (stream !== this._stream) return;
    if (!stream.opened && this._mode === "auto" && typeof this._WebSocket === "function") {
      // Could not even reach the stream: maybe the server is down. Give the socket another try
      // (one failure before the server's first frame sends it back here).
      this._transport = "websocket";
      this._wsFailures = Math.max(0, this._fallbackAfter - 1);
    }
    this._onClose(stream.closeCode ?? 1006, stream.closeReason);
  }

  /** Nothing at all for pingInterval + pongTimeout ms: the stream is dead. @private */
  _armStreamWatchdog(/** @type {any} */ stream) {
    this._stopHeartbeat();
    this._pongTimer = setTimeout(() => {
      this._pongTimer = null;
      if (stream !== this._stream) return;
      this._teardownSocket(1000, "heartbeat timeout");
      this._scheduleReconnect();
      this._report(
        new RunEventsError(`Nothing from the event stream within ${this._pingInterval + this._pongTimeout} ms`, "heartbeat_timeout"),
      );
    }, this._pingInterval + this._pongTimeout);
  }

  /** Forget the current socket (its later callbacks are ignored), stop the heartbeat, close it. @private */
  _teardownSocket(/** @type {number} */ code, /** @type {string} */ reason) {
    this._stopHeartbeat();
    const stream = this._stream;
    this._stream = null;
    if (stream) {
      try {
        stream.controller?.abort();
      } catch {
        // aborting a finished request is best effort
      }
    }
    const ws = this._ws;
    this._ws = null;
    this._authenticated = false;
    this._serverSubs = new Set();
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    try {
      if (ws.readyState === WS_OPEN || ws.readyState === WS_CONNECTING) ws.close(code, reason);
    } catch {
      // closing a broken socket is best effort
    }
  }

  /** @private */
  _onClose(/** @type {number} */ code, /** @type {string} */ reason) {
    this._teardownSocket(1000, "");
    if (NON_RETRYABLE_CLOSE_CODES.includes(code)) {
      const what = code === 4401 ? "not authenticated" : "refused (origin or permission)";
      this._setState(ConnectionState.CLOSED);
      this._report(
        new RunEventsError(`WebSocket closed by server: ${what}${reason ? ` — ${reason}` : ""}`, code === 4401 ? "unauthorized" : "forbidden", {
          closeCode: code,
        }),
      );
      return;
    }
    this._scheduleReconnect();
  }

  /** @private */
  _scheduleReconnect() {
    this._clearReconnectTimer();
    if (this._attempt >= this._reconnectAttempts) {
      this._setState(ConnectionState.CLOSED);
      this._report(
        new RunEventsError(`Gave up reconnecting after ${this._attempt} attempt(s)`, "reconnect_exhausted"),
      );
      return;
    }
    const delay = computeBackoffDelay(this._attempt, {
      reconnectDelay: this._reconnectDelay,
      maxReconnectDelay: this._maxReconnectDelay,
    });
    this._attempt += 1;
    this._setState(ConnectionState.RECONNECTING);
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      this._openSocket();
    }, delay);
  }

  /** @private */
  _clearReconnectTimer() {
    if (this._reconnectTimer !== null) clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
  }

  /** @private */
  _startHeartbeat() {
    this._stopHeartbeat();
    this._pingTimer = setInterval(() => {
      this._send({ type: "ping" });
      if (this._pongTimer === null) {
        this._pongTimer = setTimeout(() => {
          this._pongTimer = null;
          this._teardownSocket(4000, "heartbeat timeout");
          this._scheduleReconnect();
          // Reported last: an onError that calls disconnect() also cancels the scheduled reconnect.
          this._report(new RunEventsError(`No answer to ping within ${this._pongTimeout} ms`, "heartbeat_timeout"));
        }, this._pongTimeout);
      }
    }, this._pingInterval);
  }

  /** @private */
  _stopHeartbeat() {
    if (this._pingTimer !== null) clearInterval(this._pingTimer);
    if (this._pongTimer !== null) clearTimeout(this._pongTimer);
    this._pingTimer = null;
    this._pongTimer = null;
  }

  /** @private */
  _send(/** @type {object} */ message) {
    const ws = this._ws;
    if (!ws || ws.readyState !== WS_OPEN) return false;
    try {
      ws.send(JSON.stringify(message));
      return true;
    } catch (cause) {
      this._report(new RunEventsError("WebSocket send failed", "transport_error", { cause }));
      return false;
    }
  }

  /** @private */
  async _sendAuth(/** @type {any} */ ws) {
    /** @type {unknown} */
    let token = this._token;
    if (typeof token === "function") {
      try {
        token = await token();
      } catch (cause) {
        if (ws !== this._ws) return;
        this._teardownSocket(1000, "no token");
        this._scheduleReconnect();
        this._report(new RunEventsError("Could not obtain a socket token", "token_error", { cause }));
        return;
      }
      if (ws !== this._ws) return; // socket replaced or closed meanwhile
    }
    const { types, categories } = this._desired();
    /** @type {Record<string, unknown>} */
    const payload = {};
    if (token !== undefined && token !== null && token !== "") payload.token = token;
    for (const [k, v] of Object.entries(this._scope)) if (v !== undefined && v !== null) payload[k] = v;
    if (this._lastEventId !== null) payload.lastEventId = this._lastEventId;
    payload.eventTypes = types;
    payload.eventCategories = categories;
    // The server replaces the socket's subscriptions with exactly this set.
    this._serverSubs = new Set([...types.map((t) => `type:${t}`), ...categories.map((c) => `category:${c}`)]);
    this._send({ type: "auth", payload });
  }

  /** @private */
  _onMessage(/** @type {any} */ ws, /** @type {unknown} */ data) {
    // Any frame proves the socket is alive.
    if (this._pongTimer !== null) {
      clearTimeout(this._pongTimer);
      this._pongTimer = null;
    }
    let msg;
    try {
      msg = JSON.parse(String(data));
    } catch (cause) {
      this._report(new RunEventsError("Invalid JSON from server", "invalid_message", { cause }));
      return;
    }
    if (!msg || typeof msg !== "object" || typeof msg.type !== "string") {
      this._report(new RunEventsError("Malformed message from server", "invalid_message", { details: msg }));
      return;
    }
    this._handleMessage(ws, msg);
  }

  /** A server message from the current socket or stream (`conn`). @private */
  _handleMessage(/** @type {any} */ conn, /** @type {any} */ msg) {
    this._emit("message", msg);
    if (conn !== this._ws && conn !== this._stream) return; // a "message" listener disconnected or reconnected us
    const payload = msg.payload ?? {};
    switch (msg.type) {
      case "connection.established":
        this._clientId = payload.clientId ?? null;
        if (conn === this._ws) {
          this._wsHeard = true;
          this._wsFailures = 0;
          void this._sendAuth(conn);
        }
        return;
      case "auth.success":
        this._authenticated = true;
        this._attempt = 0;
        this._error = null;
        this._setState(ConnectionState.OPEN);
        this._syncSubscriptions(); // changes made while the auth was in flight
        return;
      case "auth.failed": {
        this._clearReconnectTimer();
        this._teardownSocket(1000, "auth failed");
        this._setState(ConnectionState.CLOSED);
        this._report(new RunEventsError(`Authentication failed: ${payload.message ?? "refused"}`, "auth_failed", { details: payload }));
        return;
      }
      case "error":
        this._report(new RunEventsError(payload.message ?? "Server error", "server_error", { details: payload.details }));
        return;
      case "resync.required": {
        const id = payload.lastEventId;
        if (typeof id === "number" && Number.isInteger(id)) this._lastEventId = id;
        this._call(this._callbacks.onResync, payload);
        this._emit("resync", payload);
        return;
      }
      case "pong":
      case "subscription.added":
      case "subscription.removed":
      case "status":
        return;
      default:
        if (Object.prototype.hasOwnProperty.call(CATEGORY_OF_TYPE, msg.type)) this._onEvent(msg);
    }
  }

  /** @private */
  _onEvent(/** @type {RunEvent} */ event) {
    const id = event.id;
    if (typeof id === "number") {
      if (this._lastEventId !== null && id <= this._lastEventId) return; // already delivered
      this._lastEventId = id;
    }
    const category = CATEGORY_OF_TYPE[event.type];
    for (const [map, key] of /** @type {const} */ ([
      [this._typeHandlers, event.type],
      [this._categoryHandlers, category],
    ])) {
      const set = map.get(key);
      if (!set) continue;
      for (const handler of [...set]) {
        // Skip handlers removed by an earlier handler during this dispatch.
        if (map.get(key)?.has(handler)) this._callHandler(handler, event);
      }
    }
    this._call(this._callbacks.onEvent, event);
    this._emit("event", event);
  }

  /** @private */
  _callHandler(/** @type {Function} */ handler, /** @type {RunEvent} */ event) {
    try {
      handler(event);
    } catch (cause) {
      this._report(
        new RunEventsError(`Event handler for ${event.type} threw: ${cause instanceof Error ? cause.message : String(cause)}`, "handler_error", {
          cause,
          event,
        }),
      );
    }
  }

  /** Call an option callback; its exceptions are swallowed (logged) so the client keeps working. @private */
  _call(/** @type {Function|undefined} */ fn, /** @type {unknown[]} */ ...args) {
    if (typeof fn !== "function") return;
    try {
      fn(...args);
    } catch (err) {
      if (fn === this._callbacks.onError) console.error("RunEventsClient: onError threw", err);
      else this._report(new RunEventsError("Callback threw", "handler_error", { cause: err }));
    }
  }

  /** @private */
  _emit(/** @type {string} */ name, /** @type {unknown[]} */ ...args) {
    const set = this._listeners.get(name);
    if (!set) return;
    for (const fn of [...set]) {
      if (!this._listeners.get(name)?.has(fn)) continue;
      try {
        fn(...args);
      } catch (err) {
        if (name === "error") console.error("RunEventsClient: error listener threw", err);
        else this._report(new RunEventsError(`"${name}" listener threw`, "handler_error", { cause: err }));
      }
    }
  }

  /** @private */
  _report(/** @type {Error} */ error) {
    this._error = error;
    this._call(this._callbacks.onError, error);
    this._emit("error", error);
  }

  /** @private */
  _setState(/** @type {ConnectionStateValue} */ state) {
    const previous = this._state;
    if (previous === state) return;
    this._state = state;
    this._call(this._callbacks.onStateChange, state, previous);
    this._emit("state", state, previous);
  }
}

/** @param {Set<string>} a @param {Set<string>} b */
function sameSet(a, b) {
  if (a.size !== b.size) return false;
  for (const key of a) if (!b.has(key)) return false;
  return true;
}

/** @param {string} key "type:x" or "category:Y" */
function subscriptionPayload(key) {
  return key.startsWith("type:") ? { eventType: key.slice(5) } : { eventCategory: key.slice(9) };
}
