import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  ConnectionState,
  EVENT_CATEGORIES,
  EVENT_TYPES,
  RunEventsClient,
  computeBackoffDelay,
  resolveWebSocketUrl,
} from "../../static/researchflow/run-events.js";
import { FakeWebSocket } from "./fake-socket.js";

const URL = "ws://test.local/ws";

/**
 * A client on the WebSocket transport only: these tests play sockets that fail before they open,
 * which in "auto" would switch to the event stream (tests/js/run-events-sse.test.js).
 * @param {Partial<import("../../static/researchflow/run-events.js").RunEventsClientOptions>} [options]
 */
function makeClient(options = {}) {
  return new RunEventsClient({ url: URL, WebSocket: FakeWebSocket, transport: "websocket", ...options });
}

/** Connect a client all the way to "open". */
function connected(options = {}) {
  const client = makeClient(options);
  const ws = FakeWebSocket.last;
  ws.establish();
  ws.authSuccess();
  return { client, ws };
}

/** Frames other than heartbeats. */
const frames = (/** @type {FakeWebSocket} */ ws) => ws.sent.filter((m) => m.type !== "ping");

beforeEach(() => {
  FakeWebSocket.reset();
});

afterEach(() => {
  vi.useRealTimers();
});

describe("constants", () => {
  it("maps the four categories to the twelve event types of the protocol", () => {
    expect(EVENT_CATEGORIES).toEqual({
      RUN_EVENTS: ["run.created", "run.started", "run.completed", "run.failed"],
      STAGE_EVENTS: ["stage.started", "stage.progress", "stage.completed", "stage.failed"],
      ARTIFACT_EVENTS: ["artifact.created"],
      GOVERNANCE_EVENTS: ["governance.required", "approval.granted", "approval.denied"],
    });
    expect(EVENT_TYPES).toHaveLength(12);
    expect(ConnectionState).toEqual({ CONNECTING: "connecting", OPEN: "open", RECONNECTING: "reconnecting", CLOSED: "closed" });
  });
});

describe("URL resolution", () => {
  afterEach(() => {
    delete globalThis.RESEARCHFLOW_WEBSOCKET_URL;
  });

  it("defaults to same-origin /ws with wss on https and ws on http", () => {
    expect(resolveWebSocketUrl(undefined, { protocol: "https:", host: "rf.example.org" })).toBe("wss://rf.example.org/ws");
    expect(resolveWebSocketUrl(undefined, { protocol: "http:", host: "localhost:8000" })).toBe("ws://localhost:8000/ws");
  });

  it("lets the page-level RESEARCHFLOW_WEBSOCKET_URL override the default, and options.url override both", () => {
    globalThis.RESEARCHFLOW_WEBSOCKET_URL = "wss://events.example.org/ws";
    expect(resolveWebSocketUrl(undefined, { protocol: "http:", host: "x" })).toBe("wss://events.example.org/ws");
    expect(resolveWebSocketUrl("https://other.example.org/ws", undefined)).toBe("wss://other.example.org/ws");
    expect(makeClient({ url: undefined, autoConnect: false }).url).toBe("wss://events.example.org/ws");
  });

  it("never puts credentials in the URL", () => {
    makeClient({ token: "secret-token" });
    expect(FakeWebSocket.last.url).toBe(URL);
  });
});

describe("connection flow", () => {
  it("waits for connection.established, then sends one auth with scope, token and subscriptions", () => {
    const states = [];
    const client = makeClient({
      runId: "run-123",
      projectId: "proj-456",
      userId: "alice",
      token: "tok",
      eventTypes: ["run.started", "run.completed"],
      eventCategories: ["STAGE_EVENTS"],
      onStateChange: (s) => states.push(s),
    });
    client.subscribe("artifact.created", () => {});
    client.subscribe_category("GOVERNANCE_EVENTS", () => {});
    const ws = FakeWebSocket.last;
    expect(client.connectionState).toBe("connecting");

    ws.open();
    expect(ws.sent).toEqual([]); // nothing before connection.established
    ws.serverSend({ type: "connection.established", timestamp: "t", payload: { clientId: "c-42", version: "1", authenticated: false, userId: null } });

    expect(ws.sent).toEqual([
      {
        type: "auth",
        payload: {
          token: "tok",
          runId: "run-123",
          projectId: "proj-456",
          userId: "alice",
          eventTypes: ["artifact.created", "run.completed", "run.started"],
          eventCategories: ["GOVERNANCE_EVENTS", "STAGE_EVENTS"],
        },
      },
    ]);
    expect(client.clientId).toBe("c-42");
    expect(client.isConnected).toBe(false);

    ws.authSuccess({ userId: "alice", projectId: "proj-456", runId: "run-123" });
    expect(client.isConnected).toBe(true);
    expect(client.connectionState).toBe("open");
    expect(states).toEqual(["connecting", "open"]);
    // The auth already carried every subscription: no extra subscribe frames.
    expect(frames(ws).map((m) => m.type)).toEqual(["auth"]);
  });

  it("includes lastEventId in the auth when started from a known log position", () => {
    makeClient({ lastEventId: 41 });
    FakeWebSocket.last.establish();
    expect(FakeWebSocket.last.sentOfType("auth")[0].payload).toEqual({ lastEventId: 41, eventTypes: [], eventCategories: [] });
  });

  it("asks a token function for a fresh token on every connection", async () => {
    let n = 0;
    const client = makeClient({ token: async () => `tok-${++n}` });
    FakeWebSocket.last.establish();
    await vi.waitFor(() => expect(FakeWebSocket.last.sentOfType("auth")).toHaveLength(1));
    expect(FakeWebSocket.last.sentOfType("auth")[0].payload.token).toBe("tok-1");
    client.reconnect();
    FakeWebSocket.last.establish();
    await vi.waitFor(() => expect(FakeWebSocket.last.sentOfType("auth")).toHaveLength(1));
    expect(FakeWebSocket.last.sentOfType("auth")[0].payload.token).toBe("tok-2");
    client.disconnect();
  });

  it("does not connect when autoConnect is false until connect() is called", () => {
    const client = makeClient({ autoConnect: false });
    expect(FakeWebSocket.instances).toHaveLength(0);
    expect(client.connectionState).toBe("closed");
    client.connect();
    expect(FakeWebSocket.instances).toHaveLength(1);
    client.connect(); // no-op while connecting
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("reports auth.failed through onError and stays closed without retrying", () => {
    vi.useFakeTimers();
    const onError = vi.fn();
    const client = makeClient({ onError });
    const ws = FakeWebSocket.last;
    ws.establish();
    ws.serverSend({ type: "auth.failed", timestamp: "t", payload: { message: "Not allowed" } });

    expect(client.connectionState).toBe("closed");
    expect(onError).toHaveBeenCalledTimes(1);
    expect(onError.mock.calls[0][0].code).toBe("auth_failed");
    expect(client.error?.message).toMatch(/Not allowed/);
    expect(ws.readyState).toBe(FakeWebSocket.CLOSED);
    vi.advanceTimersByTime(120_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("reports server error frames without dropping the connection", () => {
    const onError = vi.fn();
    const { client } = connected({ onError });
    FakeWebSocket.last.serverSend({ type: "error", timestamp: "t", payload: { message: "Slow down", details: { code: "rate_limited" } } });
    expect(onError.mock.calls[0][0]).toMatchObject({ code: "server_error", details: { code: "rate_limited" } });
    expect(client.isConnected).toBe(true);
  });
});

describe("argument validation", () => {
  it("throws TypeError synchronously for an unknown event type or category", () => {
    const client = makeClient({ autoConnect: false });
    expect(() => client.subscribe("run.exploded", () => {})).toThrow(TypeError);
    expect(() => client.unsubscribe("nope", () => {})).toThrow(TypeError);
    expect(() => client.subscribe_category("RUN", () => {})).toThrow(TypeError);
    expect(() => client.unsubscribe_category("run.started", () => {})).toThrow(TypeError);
    expect(() => client.subscribe("run.started", "not a function")).toThrow(TypeError);
    expect(() => makeClient({ eventTypes: ["run.started", "bogus"] })).toThrow(TypeError);
    expect(() => makeClient({ eventCategories: ["BOGUS"] })).toThrow(TypeError);
    expect(FakeWebSocket.instances).toHaveLength(0);
  });
});

describe("server subscriptions follow handlers", () => {
  it("sends subscribe only for the first handler and unsubscribe only when the last one leaves", () => {
    const { client, ws } = connected();
    const a = () => {};
    const b = () => {};
    const offA = client.subscribe("stage.progress", a);
    client.subscribe("stage.progress", b);
    client.subscribe("stage.progress", a); // same handler again: kept once
    expect(frames(ws).slice(1)).toEqual([{ type: "subscribe", payload: { eventType: "stage.progress" } }]);

    offA();
    offA(); // idempotent
    expect(frames(ws).slice(1)).toHaveLength(1);
    client.unsubscribe("stage.progress", b);
    expect(frames(ws).slice(1)).toEqual([
      { type: "subscribe", payload: { eventType: "stage.progress" } },
      { type: "unsubscribe", payload: { eventType: "stage.progress" } },
    ]);

    const offCat = client.subscribe_category("RUN_EVENTS", a);
    offCat();
    expect(frames(ws).slice(3)).toEqual([
      { type: "subscribe", payload: { eventCategory: "RUN_EVENTS" } },
      { type: "unsubscribe", payload: { eventCategory: "RUN_EVENTS" } },
    ]);
  });

  it("keeps option-level types subscribed when their last handler leaves", () => {
    const { client, ws } = connected({ eventTypes: ["run.started"] });
    const off = client.subscribe("run.started", () => {});
    off();
    expect(frames(ws).map((m) => m.type)).toEqual(["auth"]);
  });

  it("sends nothing before authentication and puts handlers registered meanwhile in the auth", () => {
    const client = makeClient();
    const ws = FakeWebSocket.last;
    client.subscribe("run.failed", () => {});
    ws.open();
    client.subscribe_category("ARTIFACT_EVENTS", () => {});
    expect(ws.sent).toEqual([]);
    ws.serverSend({ type: "connection.established", timestamp: "t", payload: { clientId: "c" } });
    expect(ws.sent).toEqual([
      { type: "auth", payload: { eventTypes: ["run.failed"], eventCategories: ["ARTIFACT_EVENTS"] } },
    ]);
  });

  it("applies changes made while the auth is in flight right after auth.success", () => {
    const client = makeClient();
    const ws = FakeWebSocket.last;
    const off = client.subscribe("run.failed", () => {});
    ws.establish(); // auth sent with run.failed
    off();
    client.subscribe("stage.failed", () => {});
    expect(frames(ws).map((m) => m.type)).toEqual(["auth"]);
    ws.authSuccess();
    expect(frames(ws).slice(1)).toEqual([
      { type: "unsubscribe", payload: { eventType: "run.failed" } },
      { type: "subscribe", payload: { eventType: "stage.failed" } },
    ]);
  });
});

describe("dispatch", () => {
  it("delivers an event to the handlers of its type and of its category, then onEvent", () => {
    const calls = [];
    const { client, ws } = connected({ onEvent: (e) => calls.push(["onEvent", e.id]) });
    client.subscribe("stage.progress", (e) => calls.push(["type", e.id, e.payload.progress]));
    client.subscribe_category("STAGE_EVENTS", (e) => calls.push(["category", e.id, e.type]));
    client.subscribe_category("RUN_EVENTS", (e) => calls.push(["run-category", e.id]));

    ws.event(1, "stage.progress", { progress: 45 });
    ws.event(2, "stage.completed");
    expect(calls).toEqual([
      ["type", 1, 45],
      ["category", 1, "stage.progress"],
      ["onEvent", 1],
      ["category", 2, "stage.completed"],
      ["onEvent", 2],
    ]);
    expect(client.lastEventId).toBe(2);
  });

  it("calls a handler registered for both a type and its category twice for such an event", () => {
    const { client, ws } = connected();
    const h = vi.fn();
    client.subscribe("run.started", h);
    client.subscribe_category("RUN_EVENTS", h);
    ws.event(1, "run.started");
    expect(h).toHaveBeenCalledTimes(2);
  });

  it("isolates a throwing handler: the others still run and the error goes to onError", () => {
    const onError = vi.fn();
    const { client, ws } = connected({ onError });
    const after = vi.fn();
    client.subscribe("run.failed", () => {
      throw new Error("boom");
    });
    client.subscribe("run.failed", after);
    client.subscribe_category("RUN_EVENTS", after);
    ws.event(7, "run.failed");
    expect(after).toHaveBeenCalledTimes(2);
    expect(onError).toHaveBeenCalledTimes(1);
    expect(onError.mock.calls[0][0]).toMatchObject({ code: "handler_error" });
    expect(onError.mock.calls[0][0].cause.message).toBe("boom");
    expect(client.isConnected).toBe(true);
    ws.event(8, "run.failed");
    expect(after).toHaveBeenCalledTimes(4);
  });

  it("does not call a handler removed by an earlier handler of the same event", () => {
    const { client, ws } = connected();
    const second = vi.fn();
    client.subscribe("run.created", () => client.unsubscribe("run.created", second));
    client.subscribe("run.created", second);
    ws.event(1, "run.created");
    expect(second).not.toHaveBeenCalled();
  });

  it("releases unsubscribed handlers (no reference kept)", () => {
    const { client } = connected();
    const off = client.subscribe("run.created", () => {});
    const offCat = client.subscribe_category("RUN_EVENTS", () => {});
    const offListener = client.on("event", () => {});
    off();
    offCat();
    offListener();
    expect(client._typeHandlers.size).toBe(0);
    expect(client._categoryHandlers.size).toBe(0);
    expect(client._listeners.size).toBe(0);
  });

  it("forwards non-event frames to 'message' listeners and ignores unknown ones", () => {
    const { client, ws } = connected();
    const messages = [];
    client.on("message", (m) => messages.push(m.type));
    const onEvent = vi.fn();
    client.on("event", onEvent);
    ws.serverSend({ type: "pong", timestamp: "t", payload: {} });
    ws.serverSend({ type: "subscription.added", timestamp: "t", payload: { eventType: "run.created", subscriptions: [] } });
    ws.serverSend({ type: "something.new", timestamp: "t", payload: {} });
    expect(messages).toEqual(["pong", "subscription.added", "something.new"]);
    expect(onEvent).not.toHaveBeenCalled();
  });
});

describe("exactly-once across reconnects", () => {
  it("drops duplicate ids and resumes with lastEventId and the current subscriptions", () => {
    vi.useFakeTimers();
    vi.spyOn(Math, "random").mockReturnValue(0.5);
    const seen = [];
    const { client, ws } = connected({ eventCategories: ["RUN_EVENTS"] });
    client.subscribe("stage.progress", (e) => seen.push(e.id));
    ws.event(1, "stage.progress");
    ws.event(2, "stage.progress");
    ws.event(2, "stage.progress"); // duplicate on the same socket
    ws.event(3, "run.started"); // not for the stage handler, but advances the position

    ws.close(1006);
    expect(client.connectionState).toBe("reconnecting");
    vi.advanceTimersByTime(1000);
    expect(FakeWebSocket.instances).toHaveLength(2);

    const ws2 = FakeWebSocket.last;
    ws2.establish("client-2");
    expect(ws2.sent).toEqual([
      { type: "auth", payload: { lastEventId: 3, eventTypes: ["stage.progress"], eventCategories: ["RUN_EVENTS"] } },
    ]);
    ws2.authSuccess();
    ws2.event(2, "stage.progress"); // replay overlap from the server: dropped
    ws2.event(4, "stage.progress");
    ws2.event(5, "stage.progress");
    expect(seen).toEqual([1, 2, 4, 5]);
    expect(client.lastEventId).toBe(5);
    expect(client.clientId).toBe("client-2");
    client.disconnect();
  });
});

describe("reconnect backoff", () => {
  it("uses equal jitter: delay in [base/2, base] with base = min(max, delay * 2^n)", () => {
    const opts = { reconnectDelay: 1000, maxReconnectDelay: 30000 };
    expect(computeBackoffDelay(0, opts, () => 0)).toBe(500);
    expect(computeBackoffDelay(0, opts, () => 1)).toBe(1000);
    expect(computeBackoffDelay(3, opts, () => 1)).toBe(8000);
    expect(computeBackoffDelay(10, opts, () => 0)).toBe(15000);
    expect(computeBackoffDelay(10, opts, () => 1)).toBe(30000);
  });

  it("grows delays exponentially, caps them, gives up after reconnectAttempts and leaves no timer", () => {
    vi.useFakeTimers();
    vi.spyOn(Math, "random").mockReturnValue(1); // upper bound of the jitter: delay = base
    const onError = vi.fn();
    const client = makeClient({ reconnectAttempts: 5, reconnectDelay: 1000, maxReconnectDelay: 5000, onError });
    FakeWebSocket.last.establish();
    FakeWebSocket.last.authSuccess();

    const delays = [];
    for (let attempt = 0; attempt < 5; attempt++) {
      const before = FakeWebSocket.instances.length;
      FakeWebSocket.last.close(1006); // connection lost / reconnect attempt failed
      expect(client.connectionState).toBe("reconnecting");
      let waited = 0;
      while (FakeWebSocket.instances.length === before) {
        vi.advanceTimersByTime(100);
        waited += 100;
      }
      delays.push(waited);
    }
    expect(delays).toEqual([1000, 2000, 4000, 5000, 5000]);

    FakeWebSocket.last.close(1006); // the fifth attempt fails too
    expect(client.connectionState).toBe("closed");
    expect(client.error?.code).toBe("reconnect_exhausted");
    expect(onError).toHaveBeenCalledTimes(1);
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(60_000);
    expect(FakeWebSocket.instances).toHaveLength(6);
  });

  it("resets the attempt count after a successful auth", () => {
    vi.useFakeTimers();
    vi.spyOn(Math, "random").mockReturnValue(1);
    connected({ reconnectDelay: 1000 });
    FakeWebSocket.last.close(1006);
    vi.advanceTimersByTime(1000);
    FakeWebSocket.last.close(1006);
    vi.advanceTimersByTime(2000);
    expect(FakeWebSocket.instances).toHaveLength(3);
    FakeWebSocket.last.establish();
    FakeWebSocket.last.authSuccess();
    FakeWebSocket.last.close(4008); // slow consumer: reconnect and resume
    vi.advanceTimersByTime(999);
    expect(FakeWebSocket.instances).toHaveLength(3);
    vi.advanceTimersByTime(1);
    expect(FakeWebSocket.instances).toHaveLength(4);
  });

  it.each([1001, 1006, 4008, 1000])("retries after close code %i", (code) => {
    vi.useFakeTimers();
    const { client, ws } = connected();
    ws.close(code);
    expect(client.connectionState).toBe("reconnecting");
    vi.advanceTimersByTime(1000);
    expect(FakeWebSocket.instances).toHaveLength(2);
    client.disconnect();
  });

  it.each([
    [4401, "unauthorized"],
    [4403, "forbidden"],
  ])("does not retry after close code %i", (code, errorCode) => {
    vi.useFakeTimers();
    const onError = vi.fn();
    const { client, ws } = connected({ onError });
    ws.close(code);
    expect(client.connectionState).toBe("closed");
    expect(onError.mock.calls[0][0]).toMatchObject({ code: errorCode, closeCode: code });
    vi.advanceTimersByTime(120_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("reconnect() forces a fresh connection now and resets the attempts", () => {
    vi.useFakeTimers();
    vi.spyOn(Math, "random").mockReturnValue(1);
    const { client, ws } = connected({ reconnectDelay: 1000 });
    ws.close(1006);
    vi.advanceTimersByTime(1000);
    FakeWebSocket.last.close(1006); // now waiting 2000 ms
    expect(FakeWebSocket.instances).toHaveLength(2);

    client.reconnect();
    expect(FakeWebSocket.instances).toHaveLength(3);
    vi.advanceTimersByTime(5000); // the pending backoff timer was cancelled
    expect(FakeWebSocket.instances).toHaveLength(3);
    FakeWebSocket.last.close(1006);
    vi.advanceTimersByTime(1000); // attempt count restarted: first delay again
    expect(FakeWebSocket.instances).toHaveLength(4);

    const ws4 = FakeWebSocket.last;
    ws4.establish();
    ws4.authSuccess();
    client.reconnect(); // while open: the old socket is closed with 1000 and ignored afterwards
    expect(ws4.closeCode).toBe(1000);
    expect(FakeWebSocket.instances).toHaveLength(5);
    expect(client.connectionState).toBe("reconnecting");
    client.disconnect();
  });
});

describe("heartbeat", () => {
  it("pings every pingInterval and reconnects when nothing answers within pongTimeout", () => {
    vi.useFakeTimers();
    vi.spyOn(Math, "random").mockReturnValue(1);
    const onError = vi.fn();
    const { client, ws } = connected({ pingInterval: 30000, pongTimeout: 10000, reconnectDelay: 1000, onError });

    vi.advanceTimersByTime(30000);
    expect(ws.sentOfType("ping")).toEqual([{ type: "ping" }]);
    vi.advanceTimersByTime(5000);
    ws.serverSend({ type: "pong", timestamp: "t", payload: {} });
    vi.advanceTimersByTime(25000); // second ping at 60 s
    expect(ws.sentOfType("ping")).toHaveLength(2);
    expect(client.isConnected).toBe(true);

    vi.advanceTimersByTime(10000); // no pong: dead socket
    expect(ws.readyState).toBe(FakeWebSocket.CLOSED);
    expect(client.connectionState).toBe("reconnecting");
    expect(onError.mock.calls[0][0].code).toBe("heartbeat_timeout");
    vi.advanceTimersByTime(1000);
    expect(FakeWebSocket.instances).toHaveLength(2);
    client.disconnect();
  });

  it("counts any frame, not only pong, as a sign of life", () => {
    vi.useFakeTimers();
    const { client, ws } = connected({ pingInterval: 1000, pongTimeout: 500 });
    client.subscribe("stage.progress", () => {});
    vi.advanceTimersByTime(1000);
    ws.event(1, "stage.progress");
    vi.advanceTimersByTime(500);
    expect(client.isConnected).toBe(true);
    expect(FakeWebSocket.instances).toHaveLength(1);
    client.disconnect();
  });
});

describe("disconnect", () => {
  it("closes with 1000, leaves no timer, never reconnects and keeps handlers for a later connect()", () => {
    vi.useFakeTimers();
    const { client, ws } = connected();
    const handler = vi.fn();
    client.subscribe("run.completed", handler);
    vi.advanceTimersByTime(30000); // a ping is out, its pong timeout pending
    expect(vi.getTimerCount()).toBeGreaterThan(0);

    client.disconnect();
    expect(ws.closeCode).toBe(1000);
    expect(client.connectionState).toBe("closed");
    expect(client.isConnected).toBe(false);
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(600_000);
    expect(FakeWebSocket.instances).toHaveLength(1);

    client.connect();
    FakeWebSocket.last.establish();
    expect(FakeWebSocket.last.sentOfType("auth")[0].payload.eventTypes).toEqual(["run.completed"]);
    client.disconnect();
    expect(vi.getTimerCount()).toBe(0);
  });

  it("cancels a pending reconnect", () => {
    vi.useFakeTimers();
    const { client, ws } = connected();
    ws.close(1006);
    expect(vi.getTimerCount()).toBe(1);
    client.disconnect();
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(60_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("ignores frames and closes from a socket it has left", () => {
    const { client, ws } = connected();
    const handler = vi.fn();
    client.subscribe("run.created", handler);
    const onmessage = ws.onmessage;
    client.disconnect();
    onmessage?.({ data: JSON.stringify({ id: 9, type: "run.created", timestamp: "t", payload: {} }) });
    expect(handler).not.toHaveBeenCalled();
    expect(client.connectionState).toBe("closed");
  });
});

describe("resync", () => {
  it("calls onResync and 'resync' listeners and moves lastEventId to the server's position", () => {
    const onResync = vi.fn();
    const { client, ws } = connected({ lastEventId: 10, onResync });
    const listener = vi.fn();
    client.on("resync", listener);
    const seen = [];
    client.subscribe_category("RUN_EVENTS", (e) => seen.push(e.id));

    const payload = { lastEventId: 500, oldestEventId: 200 };
    ws.serverSend({ type: "resync.required", timestamp: "t", payload });
    expect(onResync).toHaveBeenCalledWith(payload);
    expect(listener).toHaveBeenCalledWith(payload);
    expect(client.lastEventId).toBe(500);

    ws.event(500, "run.started");
    ws.event(501, "run.completed");
    expect(seen).toEqual([501]);
  });

  it("keeps going when resync.required carries no lastEventId", () => {
    const onResync = vi.fn();
    const { client, ws } = connected({ lastEventId: 10, onResync });
    ws.serverSend({ type: "resync.required", timestamp: "t", payload: {} });
    expect(onResync).toHaveBeenCalledTimes(1);
    expect(client.lastEventId).toBe(10);
    expect(client.isConnected).toBe(true);
  });
});
