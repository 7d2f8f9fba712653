import { StrictMode, useEffect, useState } from "react";
import { act, cleanup, render, renderHook, screen } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { useRunEvents } from "../../static/researchflow/use-run-events.js";
import { FakeFetch, fakeFetch } from "./fake-fetch.js";
import { FakeWebSocket } from "./fake-socket.js";

const base = { url: "ws://test.local/ws", WebSocket: FakeWebSocket };

/** Play the server's side of a successful connection on the newest socket. */
function serverAccepts() {
  act(() => {
    FakeWebSocket.last.establish();
    FakeWebSocket.last.authSuccess();
  });
}

const frames = (/** @type {FakeWebSocket} */ ws) => ws.sent.filter((m) => m.type !== "ping");

beforeEach(() => {
  FakeWebSocket.reset();
});

afterEach(() => {
  cleanup();
  vi.useRealTimers();
});

function RunMonitor({ options, onStarted }) {
  const { isConnected, connectionState, subscribe } = useRunEvents({ ...base, ...options });
  useEffect(() => subscribe("run.started", onStarted), [subscribe, onStarted]);
  return (
    <div>
      <span data-testid="status">{isConnected ? "Connected" : "Disconnected"}</span>
      <span data-testid="state">{connectionState}</span>
    </div>
  );
}

describe("useRunEvents", () => {
  it("connects on mount and authenticates with the scope and the component's subscriptions", () => {
    const onStarted = vi.fn();
    render(<RunMonitor options={{ runId: "run-123", userId: "alice" }} onStarted={onStarted} />);
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(screen.getByTestId("state").textContent).toBe("connecting");

    act(() => FakeWebSocket.last.establish());
    expect(FakeWebSocket.last.sentOfType("auth")[0].payload).toEqual({
      runId: "run-123",
      userId: "alice",
      eventTypes: ["run.started"],
      eventCategories: [],
    });
  });

  it("updates isConnected and connectionState from the client's state", () => {
    render(<RunMonitor options={{}} onStarted={() => {}} />);
    expect(screen.getByTestId("status").textContent).toBe("Disconnected");
    serverAccepts();
    expect(screen.getByTestId("status").textContent).toBe("Connected");
    expect(screen.getByTestId("state").textContent).toBe("open");
    act(() => FakeWebSocket.last.close(1006));
    expect(screen.getByTestId("status").textContent).toBe("Disconnected");
    expect(screen.getByTestId("state").textContent).toBe("reconnecting");
  });

  it("delivers events to a handler subscribed in an effect and unsubscribes it on unmount", () => {
    const onStarted = vi.fn();
    const { unmount } = render(<RunMonitor options={{}} onStarted={onStarted} />);
    serverAccepts();
    const ws = FakeWebSocket.last;
    act(() => ws.event(1, "run.started", { runId: "run-123" }));
    expect(onStarted).toHaveBeenCalledTimes(1);
    expect(onStarted.mock.calls[0][0]).toMatchObject({ id: 1, type: "run.started", payload: { runId: "run-123" } });

    unmount();
    expect(ws.closeCode).toBe(1000);
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("sends unsubscribe when the subscribing effect is cleaned up while mounted", () => {
    function Toggle({ on }) {
      const { subscribe } = useRunEvents(base);
      useEffect(() => (on ? subscribe("artifact.created", () => {}) : undefined), [on, subscribe]);
      return null;
    }
    const { rerender } = render(<Toggle on={false} />);
    serverAccepts();
    const ws = FakeWebSocket.last;
    rerender(<Toggle on />);
    rerender(<Toggle on={false} />);
    expect(frames(ws).slice(1)).toEqual([
      { type: "subscribe", payload: { eventType: "artifact.created" } },
      { type: "unsubscribe", payload: { eventType: "artifact.created" } },
    ]);
  });

  it("keeps callback identities stable across re-renders and keeps the same connection", () => {
    const { result, rerender } = renderHook((props) => useRunEvents({ ...base, ...props }), {
      initialProps: { runId: "run-1", onError: () => {} },
    });
    const first = result.current;
    serverAccepts();
    rerender({ runId: "run-1", onError: () => {} }); // new inline callback: no new client
    for (const name of ["subscribe", "unsubscribe", "subscribe_category", "unsubscribe_category", "reconnect", "disconnect"]) {
      expect(result.current[name]).toBe(first[name]);
    }
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(result.current.isConnected).toBe(true);
  });

  it("recreates the client when runId changes, keeping its handlers", () => {
    const { result, rerender } = renderHook((props) => useRunEvents({ ...base, ...props }), {
      initialProps: { runId: "run-1" },
    });
    serverAccepts();
    const handler = vi.fn();
    act(() => {
      result.current.subscribe_category("STAGE_EVENTS", handler);
    });
    const ws1 = FakeWebSocket.last;
    rerender({ runId: "run-2" });
    expect(ws1.closeCode).toBe(1000);
    expect(FakeWebSocket.instances).toHaveLength(2);
    act(() => FakeWebSocket.last.establish());
    expect(FakeWebSocket.last.sentOfType("auth")[0].payload).toMatchObject({ runId: "run-2", eventCategories: ["STAGE_EVENTS"] });
    act(() => {
      FakeWebSocket.last.authSuccess();
      FakeWebSocket.last.event(3, "stage.started");
    });
    expect(handler).toHaveBeenCalledTimes(1);
  });

  it("recreates the client on a token change and resumes from the previous client's lastEventId", () => {
    const { result, rerender } = renderHook((props) => useRunEvents({ ...base, ...props }), {
      initialProps: { token: "t1", lastEventId: 5 },
    });
    serverAccepts();
    act(() => {
      result.current.subscribe("run.created", () => {});
    });
    act(() => FakeWebSocket.last.event(9, "run.created"));
    rerender({ token: "t2", lastEventId: 5 });
    expect(FakeWebSocket.instances).toHaveLength(2);
    act(() => FakeWebSocket.last.establish());
    expect(FakeWebSocket.last.sentOfType("auth")[0].payload).toMatchObject({ token: "t2", lastEventId: 9 });
  });

  it("applies a change of eventTypes / eventCategories to the live connection", () => {
    const { rerender } = renderHook((props) => useRunEvents({ ...base, ...props }), {
      initialProps: { eventTypes: ["run.started"], eventCategories: [] },
    });
    serverAccepts();
    rerender({ eventTypes: ["run.started"], eventCategories: ["GOVERNANCE_EVENTS"] }); // new arrays, same content first
    rerender({ eventTypes: [], eventCategories: ["GOVERNANCE_EVENTS"] });
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(frames(FakeWebSocket.last).slice(1)).toEqual([
      { type: "subscribe", payload: { eventCategory: "GOVERNANCE_EVENTS" } },
      { type: "unsubscribe", payload: { eventType: "run.started" } },
    ]);
  });

  it("does not recreate the client for an inline token function", () => {
    let n = 0;
    const { rerender } = renderHook(() => useRunEvents({ ...base, token: () => `tok-${++n}` }));
    rerender();
    rerender();
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("applies subscriptions made before the client exists (from a child's effect)", () => {
    const handler = vi.fn();
    function Child({ subscribe }) {
      useEffect(() => subscribe("approval.granted", handler), [subscribe]);
      return null;
    }
    function Parent() {
      const { subscribe } = useRunEvents(base);
      return <Child subscribe={subscribe} />;
    }
    render(<Parent />);
    act(() => FakeWebSocket.last.establish());
    expect(FakeWebSocket.last.sentOfType("auth")[0].payload.eventTypes).toEqual(["approval.granted"]);
    act(() => {
      FakeWebSocket.last.authSuccess();
      FakeWebSocket.last.event(1, "approval.granted");
    });
    expect(handler).toHaveBeenCalledTimes(1);
  });

  it("throws TypeError for an unknown event type even before the client exists", () => {
    const { result } = renderHook(() => useRunEvents({ ...base, autoConnect: false }));
    expect(() => result.current.subscribe("run.nope", () => {})).toThrow(TypeError);
    expect(() => result.current.subscribe_category("NOPE", () => {})).toThrow(TypeError);
  });

  it("reconnect() opens a fresh connection that resumes from lastEventId", () => {
    const { result } = renderHook(() => useRunEvents(base));
    serverAccepts();
    act(() => {
      result.current.subscribe("run.completed", () => {});
    });
    act(() => FakeWebSocket.last.event(12, "run.completed"));
    expect(result.current.lastEventId).toBe(12);

    act(() => result.current.reconnect());
    expect(FakeWebSocket.instances).toHaveLength(2);
    expect(result.current.connectionState).toBe("reconnecting");
    act(() => FakeWebSocket.last.establish());
    expect(FakeWebSocket.last.sentOfType("auth")[0].payload).toMatchObject({ lastEventId: 12, eventTypes: ["run.completed"] });
    act(() => FakeWebSocket.last.authSuccess());
    expect(result.current.isConnected).toBe(true);
  });

  it("disconnect() closes and stops reconnecting", () => {
    vi.useFakeTimers();
    const { result } = renderHook(() => useRunEvents(base));
    serverAccepts();
    act(() => result.current.disconnect());
    expect(result.current.connectionState).toBe("closed");
    expect(vi.getTimerCount()).toBe(0);
    act(() => vi.advanceTimersByTime(120_000));
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("never calls a handler after unmount and leaves no timer behind", () => {
    vi.useFakeTimers();
    const handler = vi.fn();
    const onEvent = vi.fn();
    const { result, unmount } = renderHook(() => useRunEvents({ ...base, onEvent }));
    serverAccepts();
    act(() => {
      result.current.subscribe("stage.progress", handler); // not unsubscribed by the component
    });
    const ws = FakeWebSocket.last;
    const onmessage = ws.onmessage;
    unmount();
    expect(vi.getTimerCount()).toBe(0);
    // Even a frame that slips through from the old socket reaches nobody.
    onmessage?.({ data: JSON.stringify({ id: 1, type: "stage.progress", timestamp: "t", payload: {} }) });
    expect(handler).not.toHaveBeenCalled();
    expect(onEvent).not.toHaveBeenCalled();
    act(() => vi.advanceTimersByTime(120_000));
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("does not connect with autoConnect false until reconnect() or connect() is called", () => {
    const { result } = renderHook(() => useRunEvents({ ...base, autoConnect: false }));
    expect(FakeWebSocket.instances).toHaveLength(0);
    expect(result.current.connectionState).toBe("closed");
    expect(result.current.isConnected).toBe(false);
    act(() => result.current.connect());
    expect(FakeWebSocket.instances).toHaveLength(1);
    serverAccepts();
    expect(result.current.isConnected).toBe(true);
  });

  it("exposes errors and calls the latest onError", () => {
    const first = vi.fn();
    const latest = vi.fn();
    const { result, rerender } = renderHook((props) => useRunEvents({ ...base, ...props }), {
      initialProps: { onError: first },
    });
    rerender({ onError: latest });
    act(() => {
      FakeWebSocket.last.establish();
      FakeWebSocket.last.serverSend({ type: "auth.failed", timestamp: "t", payload: { message: "nope" } });
    });
    expect(first).not.toHaveBeenCalled();
    expect(latest).toHaveBeenCalledTimes(1);
    expect(result.current.error?.code).toBe("auth_failed");
    expect(result.current.connectionState).toBe("closed");
  });

  it("works under StrictMode: one live socket, subscriptions restored", () => {
    const onStarted = vi.fn();
    render(
      <StrictMode>
        <RunMonitor options={{}} onStarted={onStarted} />
      </StrictMode>,
    );
    const live = FakeWebSocket.instances.filter((ws) => ws.readyState !== FakeWebSocket.CLOSED);
    expect(live).toHaveLength(1);
    serverAccepts();
    expect(FakeWebSocket.last.sentOfType("auth")[0].payload.eventTypes).toEqual(["run.started"]);
    act(() => FakeWebSocket.last.event(1, "run.started"));
    expect(onStarted).toHaveBeenCalledTimes(1);
  });

  it("re-renders a component that stores events in state", () => {
    function Progress() {
      const { subscribe } = useRunEvents(base);
      const [progress, setProgress] = useState(0);
      useEffect(() => subscribe("stage.progress", (e) => setProgress(e.payload.progress)), [subscribe]);
      return <span data-testid="progress">{progress}</span>;
    }
    render(<Progress />);
    serverAccepts();
    act(() => FakeWebSocket.last.event(1, "stage.progress", { progress: 45 }));
    expect(screen.getByTestId("progress").textContent).toBe("45");
  });

  it("falls back to the event stream when sockets are refused, with the same subscribe API", async () => {
    function Transported() {
      const { subscribe, transport, connectionState } = useRunEvents({ ...base, fetch: fakeFetch, reconnectDelay: 10 });
      const [progress, setProgress] = useState(0);
      useEffect(() => subscribe("stage.progress", (e) => setProgress(e.payload.progress)), [subscribe]);
      return (
        <span data-testid="progress" data-transport={transport} data-state={connectionState}>
          {progress}
        </span>
      );
    }
    render(<Transported />);
    const shown = () => screen.getByTestId("progress");
    act(() => FakeWebSocket.last.close(1006)); // a proxy refuses the upgrade
    await vi.waitFor(() => expect(FakeWebSocket.instances).toHaveLength(2));
    act(() => FakeWebSocket.last.close(1006));
    await vi.waitFor(() => expect(FakeFetch.requests).toHaveLength(1));
    expect(FakeFetch.last.query.get("types")).toBe("stage.progress");
    await act(async () => FakeFetch.last.opened());
    await vi.waitFor(() => expect(shown().dataset.state).toBe("open"));
    expect(shown().dataset.transport).toBe("sse");
    await act(async () => FakeFetch.last.event(1, "stage.progress", { progress: 45 }));
    await vi.waitFor(() => expect(shown().textContent).toBe("45"));
  });
});
