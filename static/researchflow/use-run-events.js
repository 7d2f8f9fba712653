// React hook over RunEventsClient (for apps that bundle React; the plain client needs no React).
//
//   const { isConnected, subscribe } = useRunEvents({ runId: "run-123" });
//   useEffect(() => subscribe("run.started", (event) => setStarted(event)), [subscribe]);
//
// * One RunEventsClient per mounted component, created in an effect and recreated only when
//   url / token / userId / projectId / runId change (a token given as a function is read through a
//   ref, so an inline arrow does not recreate the client). When only the token changes, the new
//   client resumes from the old client's lastEventId.
// * Other options are read when the client is created, except the callbacks (onError, onEvent,
//   onResync, onStateChange: the latest ones are always called) and eventTypes / eventCategories
//   (changes are applied to the live client).
// * subscribe / unsubscribe / subscribe_category / unsubscribe_category / connect / reconnect /
//   disconnect keep their identity for the component's life. Registrations are kept by the hook
//   and (re)applied to whichever client exists, so subscribing before the client is created — e.g.
//   from a child's effect, which runs before the parent's — works.
// * On unmount the client is disconnected, every handler is released, and no handler is called
//   afterwards.
// * autoConnect: false — nothing connects until connect() or reconnect() is called. An explicit
//   disconnect() is remembered: a client recreated by an option change stays disconnected.
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import {
  ConnectionState,
  RunEventsClient,
  assertEventCategory,
  assertEventType,
} from "./run-events.js";

/**
 * @typedef {import("./run-events.js").RunEventsClientOptions} UseRunEventsOptions
 * @typedef {import("./run-events.js").EventHandler} EventHandler
 * @typedef {import("./run-events.js").ConnectionStateValue} ConnectionStateValue
 */

/**
 * @typedef {object} UseRunEventsReturn
 * @property {boolean} isConnected
 * @property {ConnectionStateValue} connectionState
 * @property {Error|null} error
 * @property {number|null} lastEventId
 * @property {"websocket"|"sse"} transport  the current connection's: "sse" after the fallback to
 *   Server-Sent Events (the `transport` option, run-events.js)
 * @property {(eventType: string, handler: EventHandler) => () => void} subscribe
 * @property {(eventType: string, handler: EventHandler) => void} unsubscribe
 * @property {(category: string, handler: EventHandler) => () => void} subscribe_category
 * @property {(category: string, handler: EventHandler) => void} unsubscribe_category
 * @property {() => void} connect     (extension) connect if closed
 * @property {() => void} reconnect   force a fresh connection now
 * @property {() => void} disconnect
 */

const CALLBACK_NAMES = /** @type {const} */ (["onError", "onEvent", "onResync", "onStateChange"]);

/**
 * @param {UseRunEventsOptions} [options]
 * @returns {UseRunEventsReturn}
 */
export function useRunEvents(options = {}) {
  const { url, token, userId, projectId, runId, autoConnect = true } = options;

  const optionsRef = useRef(options);
  optionsRef.current = options;

  /** @type {import("react").MutableRefObject<RunEventsClient|null>} */
  const clientRef = useRef(null);
  const mountedRef = useRef(false);
  /** null: follow autoConnect; true/false: the app called connect()/reconnect() or disconnect(). */
  const wantConnectedRef = useRef(/** @type {boolean|null} */ (null));
  /** Hook-level registry: "type:x" / "category:Y" -> Map(handler -> wrapper given to the client). */
  const registryRef = useRef(/** @type {Map<string, Map<EventHandler, EventHandler>>} */ (new Map()));
  const previousRef = useRef(/** @type {{scopeKey: string, lastEventId: number|null} | null} */ (null));

  const [snapshot, setSnapshot] = useState(() => ({
    connectionState: /** @type {ConnectionStateValue} */ (autoConnect ? ConnectionState.CONNECTING : ConnectionState.CLOSED),
    error: /** @type {Error|null} */ (null),
    lastEventId: /** @type {number|null} */ (options.lastEventId ?? null),
    transport: /** @type {"websocket"|"sse"} */ (options.transport === "sse" ? "sse" : "websocket"),
  }));

  const tokenKey = typeof token === "function" ? "\u0000function" : token;
  const scopeKey = JSON.stringify([url ?? null, userId ?? null, projectId ?? null, runId ?? null]);

  useEffect(() => {
    mountedRef.current = true;
    const o = optionsRef.current;
    const prev = previousRef.current;
    let lastEventId = o.lastEventId ?? null;
    if (prev && prev.scopeKey === scopeKey && prev.lastEventId !== null) {
      // Same scope (e.g. only the token changed): carry on from where the previous client was.
      lastEventId = lastEventId === null ? prev.lastEventId : Math.max(lastEventId, prev.lastEventId);
    }
    /** @type {Record<string, unknown>} */
    const callbacks = {};
    for (const name of CALLBACK_NAMES) {
      callbacks[name] = (/** @type {unknown[]} */ ...args) => {
        const fn = optionsRef.current[name];
        if (mountedRef.current && typeof fn === "function") /** @type {Function} */ (fn)(...args);
      };
    }
    const client = new RunEventsClient({
      ...o,
      ...callbacks,
      token: typeof o.token === "function" ? () => /** @type {Function} */ (optionsRef.current.token)() : o.token,
      lastEventId,
      autoConnect: false,
    });
    clientRef.current = client;

    const sync = () => {
      if (!mountedRef.current || clientRef.current !== client) return;
      setSnapshot((s) =>
        s.connectionState === client.connectionState &&
        s.error === client.error &&
        s.lastEventId === client.lastEventId &&
        s.transport === client.transport
          ? s
          : {
              connectionState: client.connectionState,
              error: client.error,
              lastEventId: client.lastEventId,
              transport: client.transport,
            },
      );
    };
    const offs = [client.on("state", sync), client.on("error", sync), client.on("event", sync), client.on("resync", sync)];

    for (const [key, handlers] of registryRef.current) {
      for (const wrapper of handlers.values()) applyRegistration(client, key, wrapper, true);
    }
    if (wantConnectedRef.current ?? autoConnect) client.connect();
    sync();

    return () => {
      offs.forEach((off) => off());
      for (const [key, handlers] of registryRef.current) {
        for (const wrapper of handlers.values()) applyRegistration(client, key, wrapper, false);
      }
      client.disconnect();
      previousRef.current = { scopeKey, lastEventId: client.lastEventId };
      if (clientRef.current === client) clientRef.current = null;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps -- recreate only on connection identity
  }, [scopeKey, tokenKey]);

  // Declared after the client effect so that, on unmount, the client's cleanup (which unregisters
  // every handler from it) runs before the registry is emptied.
  useEffect(() => {
    mountedRef.current = true;
    return () => {
      mountedRef.current = false;
      registryRef.current.clear();
    };
  }, []);

  const typesKey = JSON.stringify(options.eventTypes ?? []);
  const categoriesKey = JSON.stringify(options.eventCategories ?? []);
  const firstSubsRef = useRef(true);
  useEffect(() => {
    if (firstSubsRef.current) {
      firstSubsRef.current = false; // the client was created with these
      return;
    }
    clientRef.current?.setDefaultSubscriptions(JSON.parse(typesKey), JSON.parse(categoriesKey));
  }, [typesKey, categoriesKey]);

  const register = useCallback((/** @type {string} */ key, /** @type {EventHandler} */ handler) => {
    let handlers = registryRef.current.get(key);
    if (!handlers) registryRef.current.set(key, (handlers = new Map()));
    if (handlers.has(handler)) return; // same handler twice: kept once, like addEventListener
    /** @type {EventHandler} */
    const wrapper = (event) => {
      if (mountedRef.current) handler(event);
    };
    handlers.set(handler, wrapper);
    if (clientRef.current) applyRegistration(clientRef.current, key, wrapper, true);
  }, []);

  const unregister = useCallback((/** @type {string} */ key, /** @type {EventHandler} */ handler) => {
    const handlers = registryRef.current.get(key);
    const wrapper = handlers?.get(handler);
    if (!handlers || !wrapper) return;
    handlers.delete(handler);
    if (handlers.size === 0) registryRef.current.delete(key);
    if (clientRef.current) applyRegistration(clientRef.current, key, wrapper, false);
  }, []);

  const unsubscribe = useCallback(
    (/** @type {string} */ eventType, /** @type {EventHandler} */ handler) => {
      assertEventType(eventType);
      unregister(`type:${eventType}`, handler);
    },
    [unregister],
  );

  const subscribe = useCallback(
    (/** @type {string} */ eventType, /** @type {EventHandler} */ handler) => {
      assertEventType(eventType);
      if (typeof handler !== "function") throw new TypeError("Event handler must be a function");
      register(`type:${eventType}`, handler);
      /** @type {EventHandler|null} */ let h = handler;
      return () => {
        if (h) unregister(`type:${eventType}`, h);
        h = null;
      };
    },
    [register, unregister],
  );

  const unsubscribe_category = useCallback(
    (/** @type {string} */ category, /** @type {EventHandler} */ handler) => {
      assertEventCategory(category);
      unregister(`category:${category}`, handler);
    },
    [unregister],
  );

  const subscribe_category = useCallback(
    (/** @type {string} */ category, /** @type {EventHandler} */ handler) => {
      assertEventCategory(category);
      if (typeof handler !== "function") throw new TypeError("Event handler must be a function");
      register(`category:${category}`, handler);
      /** @type {EventHandler|null} */ let h = handler;
      return () => {
        if (h) unregister(`category:${category}`, h);
        h = null;
      };
    },
    [register, unregister],
  );

  const connect = useCallback(() => {
    wantConnectedRef.current = true;
    clientRef.current?.connect();
  }, []);

  const reconnect = useCallback(() => {
    wantConnectedRef.current = true;
    clientRef.current?.reconnect();
  }, []);

  const disconnect = useCallback(() => {
    wantConnectedRef.current = false;
    clientRef.current?.disconnect();
  }, []);

  const { connectionState, error, lastEventId, transport } = snapshot;
  return useMemo(
    () => ({
      isConnected: connectionState === ConnectionState.OPEN,
      connectionState,
      error,
      lastEventId,
      transport,
      subscribe,
      unsubscribe,
      subscribe_category,
      unsubscribe_category,
      connect,
      reconnect,
      disconnect,
    }),
    [connectionState, error, lastEventId, transport, subscribe, unsubscribe, subscribe_category, unsubscribe_category, connect, reconnect, disconnect],
  );
}

/**
 * @param {RunEventsClient} client
 * @param {string} key
 * @param {EventHandler} wrapper
 * @param {boolean} add
 */
function applyRegistration(client, key, wrapper, add) {
  if (key.startsWith("type:")) {
    const type = key.slice(5);
    if (add) client.subscribe(type, wrapper);
    else client.unsubscribe(type, wrapper);
  } else {
    const category = key.slice(9);
    if (add) client.subscribe_category(category, wrapper);
    else client.unsubscribe_category(category, wrapper);
  }
}

export default useRunEvents;
