// A fake WebSocket for tests: inject it with `new RunEventsClient({ WebSocket: FakeWebSocket })`.
// The test plays the server: `ws.open()`, `ws.serverSend({...})`, `ws.close(code)`.

export class FakeWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;

  /** Every socket constructed since the last reset(), oldest first. */
  static instances = /** @type {FakeWebSocket[]} */ ([]);

  static reset() {
    FakeWebSocket.instances = [];
  }

  /** The most recently constructed socket. */
  static get last() {
    return FakeWebSocket.instances[FakeWebSocket.instances.length - 1];
  }

  /** @param {string} url */
  constructor(url) {
    this.url = url;
    this.readyState = FakeWebSocket.CONNECTING;
    /** Parsed frames the client sent. */
    this.sent = /** @type {any[]} */ ([]);
    /** @type {number|null} */ this.closeCode = null;
    /** @type {string|null} */ this.closeReason = null;
    this.onopen = null;
    this.onmessage = null;
    this.onerror = null;
    this.onclose = null;
    FakeWebSocket.instances.push(this);
  }

  /** @param {string} data */
  send(data) {
    if (this.readyState !== FakeWebSocket.OPEN) throw new Error("InvalidStateError: socket not open");
    this.sent.push(JSON.parse(data));
  }

  /** Frames the client sent with this `type`. @param {string} type */
  sentOfType(type) {
    return this.sent.filter((m) => m.type === type);
  }

  /** Server accepts the connection. */
  open() {
    this.readyState = FakeWebSocket.OPEN;
    this.onopen?.({ type: "open" });
  }

  /** Server sends a frame (an object is JSON-encoded, a string is sent as is). @param {any} obj */
  serverSend(obj) {
    if (this.readyState !== FakeWebSocket.OPEN) throw new Error("fake: serverSend on a socket that is not open");
    this.onmessage?.({ type: "message", data: typeof obj === "string" ? obj : JSON.stringify(obj) });
  }

  /** Convenience: open and send `connection.established`. */
  establish(clientId = "client-1") {
    this.open();
    this.serverSend({
      type: "connection.established",
      timestamp: new Date(0).toISOString(),
      payload: { clientId, version: "1", authenticated: true, userId: "alice" },
    });
  }

  /** Convenience: answer the auth with `auth.success`. */
  authSuccess(payload = { userId: "alice", projectId: null, runId: null }) {
    this.serverSend({ type: "auth.success", timestamp: new Date(0).toISOString(), payload });
  }

  /** Convenience: send an event frame. @param {number} id @param {string} type @param {object} [payload] */
  event(id, type, payload = {}) {
    this.serverSend({ id, type, timestamp: new Date(0).toISOString(), payload });
  }

  /** Transport error (browsers follow it with a close). */
  error() {
    this.onerror?.({ type: "error" });
  }

  /**
   * Close the socket: called by the client under test, or by the test to play a server/network
   * close (any code, e.g. 1006). Fires onclose synchronously.
   * @param {number} [code] @param {string} [reason]
   */
  close(code = 1000, reason = "") {
    if (this.readyState === FakeWebSocket.CLOSED) return;
    this.readyState = FakeWebSocket.CLOSED;
    this.closeCode = code;
    this.closeReason = reason;
    this.onclose?.({ type: "close", code, reason, wasClean: code === 1000 });
  }
}
