import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { RunEventsClient, resolveStreamUrl } from "../../static/researchflow/run-events.js";
import { FakeFetch, fakeFetch } from "./fake-fetch.js";
import { FakeWebSocket } from "./fake-socket.js";

const URL = "ws://test.local/ws";

/** @param {Partial<import("../../static/researchflow/run-events.js").RunEventsClientOptions>} [options] */
function makeClient(options = {}) {
  return new RunEventsClient({ url: URL, WebSocket: FakeWebSocket, fetch: fakeFetch, reconnectDelay: 10, ...options });
}

/** Let the client's promise callbacks (fetch, reads) run. */
const settle = async () => {
  for (let i = 0; i < 10; i++) await Promise.resolve();
};

/** A client in "auto" whose sockets are refused (closed 1006 before opening) until it streams. */
async function fellBack(options = {}) {
  const client = makeClient(options);
  FakeWebSocket.last.close(1006);
  await vi.waitFor(() => expect(FakeWebSocket.instances).toHaveLength(2));
  FakeWebSocket.last.close(1006);
  await vi.waitFor(() => expect(FakeFetch.requests).toHaveLength(1));
  return { client, request: FakeFetch.last };
}

beforeEach(() => {
  FakeWebSocket.reset();
  FakeFetch.reset();
});

afterEach(() => {
  vi.useRealTimers();
});

describe("the fallback to Server-Sent Events", () => {
  it("switches to the event stream after two sockets closed before the server's first frame", async () => {
    const { client, request } = await fellBack({ token: "tok", runId: "run-1", eventCategories: ["STAGE_EVENTS"] });
    expect(client.transport).toBe("sse");
    expect(request.url.startsWith("http://test.local/events/stream?")).toBe(true);
    expect(Object.fromEntries(request.query)).toEqual({ runId: "run-1", types: "", categories: "STAGE_EVENTS" });
    // The token goes in a header, never in the URL.
    expect(request.init.headers).toEqual({ Accept: "text/event-stream", Authorization: "Token tok" });
    expect(request.url).not.toContain("tok");
    request.opened();
    await vi.waitFor(() => expect(client.connectionState).toBe("open"));
    expect(client.clientId).toBe("s-1");
    client.disconnect();
    expect(request.aborted).toBe(true);
  });

  it("keeps the WebSocket when it opens, however often it fails later", async () => {
    const client = makeClient();
    FakeWebSocket.last.establish();
    FakeWebSocket.last.authSuccess();
    for (let i = 0; i < 3; i++) {
      const count = FakeWebSocket.instances.length;
      FakeWebSocket.last.close(1006);
      await vi.waitFor(() => expect(FakeWebSocket.instances).toHaveLength(count + 1));
      FakeWebSocket.last.establish();
    }
    expect(FakeFetch.requests).toHaveLength(0);
    expect(client.transport).toBe("websocket");
    client.disconnect();
  });

  it("uses the stream at once when no WebSocket can be constructed", async () => {
    const client = makeClient({
      WebSocket: function Refused() {
        throw new Error("blocked by policy");
      },
    });
    await vi.waitFor(() => expect(FakeFetch.requests).toHaveLength(1));
    expect(client.transport).toBe("sse");
    client.disconnect();
  });

  it('uses only the stream with transport "sse", and never falls back with transport "websocket"', async () => {
    const sse = makeClient({ transport: "sse" });
    await vi.waitFor(() => expect(FakeFetch.requests).toHaveLength(1));
    expect(FakeWebSocket.instances).toHaveLength(0);
    sse.disconnect();
    const ws = makeClient({ transport: "websocket" });
    for (let i = 0; i < 3; i++) {
      FakeWebSocket.last.close(1006);
      await vi.waitFor(() => expect(FakeWebSocket.instances).toHaveLength(i + 2));
    }
    expect(FakeFetch.requests).toHaveLength(1);
    ws.disconnect();
  });
});

describe("events over the stream", () => {
  it("delivers events to the same handlers, once each, and resumes from the last id after the stream ends", async () => {
    const { client, request } = await fellBack({ lastEventId: 4 });
    expect(request.query.get("lastEventId")).toBe("4");
    const seen = [];
    client.subscribe("stage.progress", (e) => seen.push(e.id));
    request.opened();
    await vi.waitFor(() => expect(client.connectionState).toBe("open"));
    // The handler arrived before the stream opened: the stream is reopened with it.
    await vi.waitFor(() => expect(FakeFetch.requests).toHaveLength(2));
    const second = FakeFetch.last;
    expect(second.query.get("types")).toBe("stage.progress");
    expect(request.aborted).toBe(true);
    second.opened();
    second.event(4, "stage.progress"); // at or below the start: already seen
    second.event(5, "stage.progress");
    second.comment();
    second.event(6, "stage.progress");
    await vi.waitFor(() => expect(seen).toEqual([5, 6]));
    expect(client.lastEventId).toBe(6);

    second.end(); // the server restarts
    await vi.waitFor(() => expect(client.connectionState).toBe("reconnecting"));
    await vi.waitFor(() => expect(FakeFetch.requests).toHaveLength(3));
    const third = FakeFetch.last;
    expect(third.query.get("lastEventId")).toBe("6");
    third.opened();
    third.event(7, "stage.progress");
    await vi.waitFor(() => expect(seen).toEqual([5, 6, 7]));
    expect(client.connectionState).toBe("open");
    client.disconnect();
  });

  it("reopens the stream from the last id when the subscriptions change, once per change", async () => {
    const { client, request } = await fellBack({ eventTypes: ["run.started"] });
    request.opened();
    await vi.waitFor(() => expect(client.connectionState).toBe("open"));
    request.event(10, "run.started");
    await vi.waitFor(() => expect(client.lastEventId).toBe(10));
    const offA = client.subscribe("run.completed", () => {});
    client.subscribe_category("ARTIFACT_EVENTS", () => {});
    await vi.waitFor(() => expect(FakeFetch.requests).toHaveLength(2));
    await settle();
    expect(FakeFetch.requests).toHaveLength(2); // two changes, one reopen
    expect(Object.fromEntries(FakeFetch.last.query)).toEqual({
      types: "run.completed,run.started",
      categories: "ARTIFACT_EVENTS",
      lastEventId: "10",
    });
    FakeFetch.last.opened();
    await vi.waitFor(() => expect(client.connectionState).toBe("open"));
    offA();
    await vi.waitFor(() => expect(FakeFetch.requests).toHaveLength(3));
    expect(FakeFetch.last.query.get("types")).toBe("run.started");
    client.disconnect();
  });

  it("passes resync.required on", async () => {
    const onResync = vi.fn();
    const { client, request } = await fellBack({ onResync });
    request.opened();
    request.sse({ type: "resync.required", timestamp: "t", payload: { lastEventId: 3, oldestEventId: 50 } });
    await vi.waitFor(() => expect(onResync).toHaveBeenCalledWith({ lastEventId: 3, oldestEventId: 50 }));
    client.disconnect();
  });
});

describe("the end of a stream", () => {
  it.each([
    [401, "unauthorized"],
    [403, "forbidden"],
    [404, "auth_failed"],
    [400, "auth_failed"],
  ])("treats HTTP %i as final (%s)", async (status, code) => {
    const { client, request } = await fellBack();
    request.respond(status, { detail: "run not found or not accessible", code: "not_found" });
    await vi.waitFor(() => expect(client.connectionState).toBe("closed"));
    expect(client.error?.code).toBe(code);
    await new Promise((r) => setTimeout(r, 50));
    expect(FakeFetch.requests).toHaveLength(1);
    expect(FakeWebSocket.instances).toHaveLength(2);
  });

  it("treats a close notice like a socket's close code: 4401 final, 4008 resumed", async () => {
    const { client, request } = await fellBack();
    request.opened();
    request.event(3, "run.started");
    await vi.waitFor(() => expect(client.connectionState).toBe("open"));
    request.close(4008);
    await vi.waitFor(() => expect(FakeFetch.requests).toHaveLength(2));
    expect(FakeFetch.last.query.get("lastEventId")).toBe("3");
    FakeFetch.last.opened();
    await vi.waitFor(() => expect(client.connectionState).toBe("open"));
    FakeFetch.last.close(4401);
    await vi.waitFor(() => expect(client.connectionState).toBe("closed"));
    expect(client.error?.code).toBe("unauthorized");
    expect(client.error?.closeCode).toBe(4401);
  });

  it("gives the WebSocket another try when the stream cannot be reached, and retries a 503", async () => {
    const { client, request } = await fellBack();
    request.fail(); // the server is down
    await vi.waitFor(() => expect(FakeWebSocket.instances).toHaveLength(3));
    expect(client.transport).toBe("websocket");
    FakeWebSocket.last.close(1006); // still refused: one failure is enough to go back
    await vi.waitFor(() => expect(FakeFetch.requests).toHaveLength(2));
    FakeFetch.last.respond(503);
    await vi.waitFor(() => expect(FakeWebSocket.instances).toHaveLength(4));
    FakeWebSocket.last.close(1006);
    await vi.waitFor(() => expect(FakeFetch.requests).toHaveLength(3));
    FakeFetch.last.opened();
    await vi.waitFor(() => expect(client.connectionState).toBe("open"));
    client.disconnect();
  });

  it("drops a silent stream after pingInterval + pongTimeout and reconnects", async () => {
    const onError = vi.fn();
    const { client, request } = await fellBack({ pingInterval: 40, pongTimeout: 20, onError });
    request.opened();
    await vi.waitFor(() => expect(client.connectionState).toBe("open"));
    await vi.waitFor(() => expect(onError.mock.calls.map((c) => c[0].code)).toContain("heartbeat_timeout"));
    expect(request.aborted).toBe(true);
    await vi.waitFor(() => expect(FakeFetch.requests).toHaveLength(2));
    client.disconnect();
  });
});

describe("stream URL", () => {
  it("follows the socket URL, or takes sseUrl", () => {
    expect(resolveStreamUrl(undefined, "wss://rf.example.org/ws")).toBe("https://rf.example.org/events/stream");
    expect(resolveStreamUrl(undefined, "ws://localhost:3001/base/ws")).toBe("http://localhost:3001/base/events/stream");
    expect(resolveStreamUrl(undefined, "ws://localhost:3001/other")).toBe("http://localhost:3001/events/stream");
    expect(resolveStreamUrl("/sse", "ws://x/ws", { protocol: "https:", host: "a.example" })).toBe("https://a.example/sse");
    expect(resolveStreamUrl("https://b.example/events/stream", "ws://x/ws")).toBe("https://b.example/events/stream");
  });
});
