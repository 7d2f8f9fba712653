"""Memory per idle socket (docs/benchmarks.md, section 3): guards for the mechanisms that keep
it down, so a later change that undoes one fails here rather than only in the benchmark."""

from __future__ import annotations

import ast
import gc
import inspect
import textwrap
import tracemalloc
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from events.gateway.consumer import RunEventsConsumer
from events.gateway.hub import Hub
from tests.ws_helpers import ALL_CATEGORIES, authed_socket, request, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hubs_stopped")]


def _assigned_attributes(cls: type) -> set[str]:
    """Every `self.<name>` that a method of `cls` assigns (=, +=, annotated)."""
    tree = ast.parse(inspect.getsource(cls))
    names = set()
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            for sub in ast.walk(target):
                if (
                    isinstance(sub, ast.Attribute)
                    and isinstance(sub.value, ast.Name)
                    and sub.value.id == "self"
                ):
                    names.add(sub.attr)
    return names


def test_every_consumer_attribute_has_a_slot() -> None:
    # An attribute without a slot still works (the channels base classes have a __dict__), but
    # every socket then pays for a per-instance dict again: add the name to __slots__. The
    # consumer's own parts (its project base classes: the writer, the deadlines) count too.
    ours = [c for c in RunEventsConsumer.__mro__ if c.__module__.startswith("events.")]
    assert len(ours) > 1
    assigned = set().union(*(_assigned_attributes(c) for c in ours))
    slots = set().union(*(c.__dict__.get("__slots__", ()) for c in ours))
    missing = assigned - slots
    assert not missing, f"add to RunEventsConsumer.__slots__: {sorted(missing)}"


async def test_an_authenticated_socket_has_no_instance_dict(world: Any) -> None:
    comm = await authed_socket(world.bob, categories=ALL_CATEGORIES)
    await request(comm, "subscribe", eventType="run.created")
    await request(comm, "get_status")
    (consumer,) = Hub.running()[0].subscribers
    assert isinstance(consumer, RunEventsConsumer)
    # Including what channels' base classes set (scope, base_send, channel_layer, groups).
    assert vars(consumer) == {}, f"attributes outside __slots__: {sorted(vars(consumer))}"
    await comm.disconnect()


async def test_idle_sockets_hold_no_dispatch_task_or_scope_copies(world: Any) -> None:
    """The bytes an authenticated idle socket keeps on the server side: what the /ws stack (our
    middleware, channels, the consumer, asyncio on their behalf) allocated and still holds.

    Not counted: the test client's side (its queues, this test's frames) and the ORM's
    allocations (the user object the socket keeps, and Django/CPython caches that fill up).
    Measured at ~3.5 KB; before the changes of docs/benchmarks.md section 3 it was ~12 KB
    (channels' dispatch task and asyncio.wait, three scope copies, a 35-entry __dict__, a send
    deque built before anything needed queueing), then ~5.1 KB until the stack's layers
    stopped keeping awaiting frames (events/gateway/routing.py). The bound leaves room for
    noise, not for one of those to come back.
    """
    not_counted = ("asgiref/testing.py", "channels/testing/", "/tests/", "/django/db/")

    async def open_batch(n: int) -> list[WebsocketCommunicator]:
        return [await authed_socket(world.bob, categories=ALL_CATEGORIES) for _ in range(n)]

    warm = await open_batch(3)  # one-time costs: the hub, caches, code paths
    gc.collect()
    tracemalloc.start(64)
    try:
        before = tracemalloc.take_snapshot()
        batch = await open_batch(20)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    for comm in warm + batch:
        await comm.disconnect()

    def server_side(snapshot: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
        return snapshot.filter_traces(
            [tracemalloc.Filter(False, f"*{part}*", all_frames=True) for part in not_counted]
        )

    diff = server_side(after).compare_to(server_side(before), "lineno")
    per_socket = sum(stat.size_diff for stat in diff) / len(batch)
    top = "\n".join(f"{s.size_diff / len(batch):8.0f} B  {s.traceback[0]}" for s in diff[:15])
    print(f"{per_socket:.0f} B per socket\n{top}")
    assert per_socket < 4_500, f"{per_socket:.0f} B per idle socket; biggest lines:\n{top}"


async def test_an_idle_socket_keeps_no_awaiting_frame_between_the_router_and_the_consumer(
    world: Any,
) -> None:
    # Each layer that awaited the next kept its frame (and the scope and locals it held) for
    # the socket's lifetime (events/gateway/routing.py): the coroutine chain of an idle,
    # authenticated socket goes from channels' ProtocolTypeRouter straight to the consumer.
    comm = await authed_socket(world.bob, categories=ALL_CATEGORIES)
    coroutine: Any = comm.future.get_coro()  # type: ignore[attr-defined]
    chain = []
    while coroutine is not None and hasattr(coroutine, "cr_code"):
        chain.append(coroutine.cr_code.co_qualname)
        coroutine = coroutine.cr_await
    await comm.disconnect()
    ours = chain[chain.index("ProtocolTypeRouter.__call__") :]
    assert ours[:2] == ["ProtocolTypeRouter.__call__", "RunEventsConsumer.__call__"], chain


def test_uvicorn_reads_the_handshake_only_before_the_keepalive_starts() -> None:
    # events/gateway/servers/uvicorn_keepalive.py drops the protocol's handshake request and
    # response once start_keepalive() runs; sound only while uvicorn reads them no later.
    from uvicorn.protocols.websockets import websockets_sansio_impl as impl

    tree = ast.parse(inspect.getsource(impl.WebSocketsSansIOProtocol))
    readers: dict[str, list[int]] = {}
    keepalive_at: dict[str, list[int]] = {}
    for method in ast.walk(tree):
        if not isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(method):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
            ):
                if node.attr in ("request", "response"):
                    readers.setdefault(method.name, []).append(node.lineno)
                elif node.attr == "start_keepalive":
                    keepalive_at.setdefault(method.name, []).append(node.lineno)
    assert set(readers) <= {"handle_connect", "send"}, readers
    # In send(), every use precedes the start_keepalive() call that ends the handshake.
    assert max(readers.get("send", [0])) < min(keepalive_at["send"]), (readers, keepalive_at)
    assert "handle_connect" not in keepalive_at


async def test_uvicorn_sockets_forget_the_handshake_hold_lean_state_and_keep_working() -> None:
    import asyncio

    import uvicorn
    import websockets

    from events.gateway.servers import uvicorn_keepalive, uvicorn_lean_state

    uvicorn_keepalive.install()
    uvicorn_lean_state.install()

    async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"]})

    config = uvicorn.Config(
        echo, host="127.0.0.1", port=0, ws="websockets-sansio", lifespan="off", log_level="error"
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    try:
        await wait_until(lambda: server.started, what="uvicorn to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as client:
            await client.send("one")
            assert await client.recv() == "one"
            (protocol,) = server.server_state.connections
            assert protocol.request is None and protocol.response is None
            assert isinstance(protocol.queue, uvicorn_lean_state.LeanQueue)
            assert isinstance(protocol.writable, uvicorn_lean_state.LeanFlag)
            await client.send("two")  # still a working socket: frames, and a ping round trip
            assert await client.recv() == "two"
            await asyncio.wait_for(await client.ping(), 5)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


# --- uvicorn_lean_state: a lean receive queue and writable flag per WebSocket ----------------


def test_uvicorn_uses_only_what_the_lean_queue_and_flag_provide() -> None:
    # events/gateway/servers/uvicorn_lean_state.py replaces the asyncio.Queue and Event that
    # uvicorn's protocol makes in __init__; sound only while uvicorn uses no more of them.
    from uvicorn.protocols.websockets import websockets_sansio_impl as impl

    source = inspect.getsource(impl.WebSocketsSansIOProtocol)
    assert "self.queue: asyncio.Queue[ASGIReceiveEvent] = asyncio.Queue()" in source
    assert "self.writable = asyncio.Event()" in source
    tree = ast.parse(textwrap.dedent(source))
    used: dict[str, set[str]] = {"queue": set(), "writable": set()}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "self"
            and node.value.attr in used
        ):
            used[node.value.attr].add(node.attr)
    assert used["queue"] <= {"put_nowait", "get", "empty"}, used
    assert used["writable"] <= {"set", "clear", "is_set", "wait"}, used
    # Only receive() reads the queue (LeanQueue has one reader at a time).
    readers = [
        method.name
        for method in ast.walk(tree)
        if isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef)
        and "self.queue.get()" in ast.unparse(method)
    ]
    assert readers == ["receive"], readers


async def test_the_lean_queue_hands_items_over_in_order_and_holds_nothing_when_empty() -> None:
    import asyncio

    from events.gateway.servers.uvicorn_lean_state import LeanQueue

    queue = LeanQueue()
    assert queue.empty() and queue.qsize() == 0 and queue._items is None
    reader = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not reader.done()
    queue.put_nowait("a")
    queue.put_nowait("b")
    assert await reader == "a"
    assert queue.qsize() == 1 and await queue.get() == "b"
    assert queue._items is None and queue._getter is None  # nothing held once drained
    waiting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="another get"):
        await queue.get()
    waiting.cancel()  # a cancelled reader leaves nothing behind either
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert queue._getter is None
    queue.put_nowait("c")
    assert await queue.get() == "c"


async def test_the_lean_flag_wakes_its_waiters_and_forgets_them() -> None:
    import asyncio

    from events.gateway.servers.uvicorn_lean_state import LeanFlag

    flag = LeanFlag(True)
    assert await flag.wait() is True
    flag.clear()
    waiters = [asyncio.ensure_future(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters) and not flag.is_set()
    waiters[0].cancel()
    await asyncio.sleep(0)
    flag.set()
    assert await asyncio.gather(*waiters[1:]) == [True, True]
    assert flag.is_set() and flag._waiters is None
