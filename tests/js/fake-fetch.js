// A fake fetch() for the event-stream tests: inject it with `new RunEventsClient({ fetch: fakeFetch })`.
// The test plays the server: `FakeFetch.last.respond(200)`, `.sse({...}, id)`, `.comment()`, `.end()`.

export class FakeRequest {
  /** @param {string} url @param {any} init */
  constructor(url, init) {
    this.url = url;
    this.init = init;
    this.aborted = false;
    /** @type {(value: any) => void} */ this._resolve = () => {};
    /** @type {(error: any) => void} */ this._reject = () => {};
    this.promise = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    /** @type {Array<{value?: Uint8Array, done: boolean}>} */ this._chunks = [];
    /** @type {Array<(r: {value?: Uint8Array, done: boolean}) => void>} */ this._readers = [];
    init?.signal?.addEventListener("abort", () => {
      this.aborted = true;
      const error = Object.assign(new Error("aborted"), { name: "AbortError" });
      this._reject(error);
      this._deliver({ done: true });
    });
  }

  /** The query of the request URL. */
  get query() {
    return new URL(this.url).searchParams;
  }

  /** Answer with `status`; a JSON `body` for an error. @param {number} status @param {any} [body] */
  respond(status, body = null) {
    const request = this;
    this._resolve({
      ok: status >= 200 && status < 300,
      status,
      json: async () => {
        if (body === null) throw new SyntaxError("no JSON");
        return body;
      },
      body: {
        getReader: () => ({
          read: () =>
            new Promise((resolve) => {
              const chunk = request._chunks.shift();
              if (chunk) resolve(chunk);
              else request._readers.push(resolve);
            }),
        }),
      },
    });
  }

  /** The network failed before an answer. */
  fail() {
    this._reject(new TypeError("Failed to fetch"));
  }

  /** @param {{done: boolean, value?: Uint8Array}} chunk */
  _deliver(chunk) {
    const reader = this._readers.shift();
    if (reader) reader(chunk);
    else this._chunks.push(chunk);
  }

  /** Raw SSE text. @param {string} text */
  write(text) {
    this._deliver({ done: false, value: new TextEncoder().encode(text) });
  }

  /** One server frame as an SSE event (named by its type, with an id when it is an event). @param {any} frame */
  sse(frame) {
    const id = typeof frame.id === "number" ? `id: ${frame.id}\n` : "";
    this.write(`${id}event: ${frame.type}\ndata: ${JSON.stringify(frame)}\n\n`);
  }

  /** What the server sends first on every stream. */
  opened(payload = { userId: "alice", projectId: null, runId: null }) {
    this.respond(200);
    this.write("retry: 2000\n\n");
    this.sse({ type: "connection.established", timestamp: "t", payload: { clientId: "s-1", version: "1.0", authenticated: true, userId: "alice" } });
    this.sse({ type: "auth.success", timestamp: "t", payload });
  }

  /** An event frame. @param {number} id @param {string} type @param {object} [payload] */
  event(id, type, payload = {}) {
    this.sse({ id, type, timestamp: "t", payload });
  }

  comment() {
    this.write(": keepalive\n\n");
  }

  /** The server's close notice, then the end of the response. @param {number} code */
  close(code) {
    this.sse({ type: "close", timestamp: "t", payload: { code, reason: "" } });
    this.end();
  }

  /** The response ends (the server went away). */
  end() {
    this._deliver({ done: true });
  }
}

export const FakeFetch = {
  /** @type {FakeRequest[]} */
  requests: [],
  reset() {
    FakeFetch.requests = [];
  },
  get last() {
    return FakeFetch.requests[FakeFetch.requests.length - 1];
  },
};

/** @param {string} url @param {any} init */
export function fakeFetch(url, init) {
  const request = new FakeRequest(url, init);
  FakeFetch.requests.push(request);
  return request.promise;
}
