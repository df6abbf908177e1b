"""Where an idle trio_ws server connection's memory goes, by what holds it.

``python benchmarks/memory_breakdown.py`` runs, for compression off and then on, a trio_ws echo
server in a process of its own (the handler of ``trio_peer.py``: ``async for`` over the
connection, each message echoed) and a client process that opens ``--count`` connections over
127.0.0.1, echoes one message on each (so that every handler surely runs) and holds them, idle,
as the ``idle`` workload of ``run.py`` does. The server process alone is measured, so no client
object is counted.

With every connection open, the server reports its growth per connection three ways:

- **tracemalloc**: a snapshot before the connections and one with all open, compared line by
  line (the ``--top`` lines that allocated most, per connection), and in total: every byte that
  Python's allocators handed out and that is still held, zlib's state included (CPython's zlib
  allocates through them). The authoritative figure.
- **by holder**: ``sys.getsizeof`` of the objects reachable from each connection's main objects
  (its Connection, Core, inbox, reader, writer, wsproto's objects, stream, socket, tasks and
  their coroutine frames, nursery and cancel scopes...), each object counted once, under the
  first holder that reaches it, and never an object that existed before the connections (the
  options, the server, modules, classes). ``getsizeof`` misses what an object holds outside
  Python objects (zlib's state) and the growth of containers shared by all connections (trio's
  set of tasks, its epoll table, the server's dict of connections): the row "not attributed"
  is tracemalloc's total minus the holders' sum.
- **VmRSS** from /proc, as run.py reads it; inflated here by tracemalloc's own bookkeeping
  unless ``--no-trace``.

Options: ``--count`` (default 2,000), ``--deflate {both,off,only}``, ``--top`` (25),
``--frames`` (tracemalloc's traceback depth, 1: the allocating line; more to group by caller).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import subprocess
import sys
import tracemalloc
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import IO, Any

import trio
import trio.testing

import trio_ws

HOST = "127.0.0.1"
MAX_SIZE = 2 * 2**20  # as run.py's peers
MESSAGE = "0123456789abcdef" * 2  # the idle workload's 32 bytes of text
OPENING_AT_ONCE = 100  # handshakes in flight at once, as in the idle workload
#: ``--deflate``: the compression of each server measured, one process each.
MODES: dict[str, list[str | None]] = {
    "both": [None, "deflate"],
    "off": [None],
    "only": ["deflate"],
}


# -- the client process ------------------------------------------------------------------------


def raise_open_files_limit() -> None:
    """Thousands of sockets a side: take the soft limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def read_line() -> str:
    line: str = await trio.to_thread.run_sync(sys.stdin.readline)
    return line.strip()


def say(line: str) -> None:
    print(line, flush=True)


async def run_client(port: int, count: int, compression: str | None) -> None:
    """Warm up, say READY, wait for GO; open ``count`` connections and echo once on each; say
    HOLDING, wait for RELEASE; close them all."""
    raise_open_files_limit()
    uri = f"ws://{HOST}:{port}/"
    connect = partial(trio_ws.connect, uri, compression=compression, max_size=MAX_SIZE, proxy=None)
    async with connect() as ws:
        await ws.send(MESSAGE)
        await ws.recv()
    say("READY")
    if await read_line() != "GO":
        return
    opening = trio.Semaphore(OPENING_AT_ONCE)
    release = trio.Event()
    opened = 0

    async def one() -> None:
        nonlocal opened
        await opening.acquire()
        async with connect() as ws:
            opening.release()
            await ws.send(MESSAGE)
            await ws.recv()
            opened += 1
            if opened == count:
                say("HOLDING")
            await release.wait()

    async def hold() -> None:
        await read_line()  # RELEASE
        release.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        for _ in range(count):
            nursery.start_soon(one)


# -- the server process: what holds its memory --------------------------------------------------


async def echo(ws: trio_ws.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


def rss_kib() -> int:
    """VmRSS in KiB, as run.py reads it (0 without /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


_MANAGED_DICT = 1 << 4  # CPython 3.11+: the type keeps attributes in an array, not a dict


def sizeof(obj: object) -> int:
    """What ``obj`` occupies: ``sys.getsizeof``, plus its attributes when they are not slots.

    CPython 3.11+ keeps most objects' attributes in an inline array (about 24 bytes and 8 an
    attribute, measured with tracemalloc), not in a dict; reading ``__dict__`` would make one,
    so that array is estimated from the number of attributes. A dict made by other code
    before is undercounted that way.
    """
    size = sys.getsizeof(obj)
    attributes = getattr(obj, "__dict__", None)
    if type(attributes) is not dict or isinstance(obj, type | types.ModuleType):
        return size
    if type(obj).__flags__ & _MANAGED_DICT:
        return size + 24 + 8 * len(attributes)
    return size + sys.getsizeof(attributes)


_CODE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.CodeType)


class Tally:
    """Sizes of the objects reachable from holders, each counted once, in the first holder."""

    def __init__(self, existing: set[int]) -> None:
        self._existing = existing  # ids of the objects that existed before the connections
        self._seen: set[int] = set()
        self.bytes: dict[str, int] = {}
        self.objects: dict[str, int] = {}
        self.types: dict[tuple[str, str], int] = {}  # (holder, type name): bytes

    def add(self, holder: str, roots: Iterable[object], others: set[int]) -> None:
        """Count what ``roots`` reach, stopping at ``others`` (the other holders' roots)."""
        own = {id(root) for root in roots}
        stack = [root for root in roots if root is not None]
        size = objects = 0
        while stack:
            obj = stack.pop()
            key = id(obj)
            if key in self._seen or key in self._existing or isinstance(obj, _CODE):
                continue
            if key in others and key not in own:
                continue
            self._seen.add(key)
            one = sizeof(obj)
            size += one
            objects += 1
            kind = (holder, type(obj).__qualname__)
            self.types[kind] = self.types.get(kind, 0) + one
            stack.extend(gc.get_referents(obj))
            attributes = getattr(obj, "__dict__", None)
            if type(attributes) is dict:
                stack.extend(attributes.values())
        self.bytes[holder] = self.bytes.get(holder, 0) + size
        self.objects[holder] = self.objects.get(holder, 0) + objects


@dataclass
class Holders:
    """One connection's main objects, by holder, in the order they claim what they reach."""

    groups: dict[str, list[object]] = field(default_factory=dict)

    def add(self, holder: str, *objects: object) -> None:
        self.groups.setdefault(holder, []).extend(obj for obj in objects if obj is not None)


def _attr(obj: object, *names: str) -> Any:
    """``obj.a.b...``, or None where one is missing: private attributes may come and go."""
    value: Any = obj
    for name in names:
        value = getattr(value, name, None)
        if value is None:
            return None
    return value


def _coroutines(task: trio.lowlevel.Task) -> list[object]:
    """A task's coroutine and everything it awaits, down to trio's suspension point."""
    chain: list[object] = []
    awaited: Any = task.coro
    while awaited is not None:
        chain.append(awaited)
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    return chain


def _epoll_waiters(sock: Any) -> object:
    """trio's epoll registration of a socket (private: None where trio keeps it elsewhere)."""
    runner = _attr(trio, "_core", "_run", "GLOBAL_RUN_CONTEXT", "runner")
    registered = _attr(runner, "io_manager", "_registered")
    if not isinstance(registered, dict) or sock is None:
        return None
    return registered.get(sock.fileno())


def holders_of(ws: trio_ws.ServerConnection) -> Holders:
    """One open connection's objects, by what holds them (private names read with getattr:
    this script measures whatever shape the connection has)."""
    h = Holders()
    core = _attr(ws, "_core")
    nursery = _attr(core, "tasks")
    tasks: list[trio.lowlevel.Task] = list(_attr(nursery, "child_tasks") or ())
    handler_task = _attr(nursery, "parent_task")
    if handler_task is None:  # no session nursery: the handler task is the one in the server
        handler_task = _attr(core, "task")
    stream = _attr(core, "stream")
    sock = _attr(stream, "socket")
    wsproto = _attr(core, "protocol", "_ws")
    frames = _attr(wsproto, "_proto")
    h.add("handler task: Task object", handler_task)
    h.add("handler task: coroutine frames", *(_coroutines(handler_task) if handler_task else ()))
    for task in tasks:
        h.add(f"{task.name.rsplit('.', 1)[-1]} task: Task object", task)
        h.add(f"{task.name.rsplit('.', 1)[-1]} task: coroutine frames", *_coroutines(task))
    scopes = [_attr(nursery, "cancel_scope"), _attr(core, "reader", "scope")]
    statuses = [_attr(t, "_cancel_status") for t in (handler_task, *tasks)]
    h.add("session nursery", nursery)
    h.add("cancel scopes and statuses", *scopes, *statuses)
    h.add("ServerConnection object (and its addresses)", ws)
    h.add("uuid", _attr(ws, "_id"))
    h.add("handshake leftovers: Request, Response", _attr(ws, "_request"), _attr(ws, "_response"))
    h.add("message lock (StrictFIFOLock)", _attr(ws, "_message_lock"))
    h.add("Core object", core)
    h.add("Inbox", _attr(core, "inbox"))
    h.add("Reader", _attr(core, "reader"))
    h.add("Writer", _attr(core, "writer"))
    h.add("Pings, Ending, closed Event", _attr(core, "pings"), _attr(core, "ending"))
    h.add("Pings, Ending, closed Event", _attr(core, "closed"))
    h.add("keepalive entry (Keepalive, Timed)", _attr(core, "_keepalive"))
    h.add("Protocol (ours)", _attr(core, "protocol"))
    h.add("wsproto Connection (+ its event deque)", wsproto)
    h.add("wsproto FrameProtocol, decoder, buffers", frames)
    h.add("permessage-deflate (Python objects only)", *(_attr(frames, "extensions") or ()))
    h.add("SocketStream", stream)
    h.add("socket (trio's and the stdlib's)", sock, _attr(sock, "_sock"))
    h.add("epoll registration", _epoll_waiters(sock))
    return h


def tally(connections: Iterable[trio_ws.ServerConnection], existing: set[int]) -> Tally:
    result = Tally(existing)
    for ws in connections:
        h = holders_of(ws)
        others = {id(obj) for objects in h.groups.values() for obj in objects}
        for holder, roots in h.groups.items():
            result.add(holder, roots, others)
        result.add("other objects reachable from the connection", [ws], set())
    return result


def existing_objects() -> list[object]:
    """Every object alive now (gc-tracked, and what those refer to): shared, not counted."""
    tracked = gc.get_objects()
    alive: list[object] = list(tracked)
    for obj in tracked:
        alive.extend(gc.get_referents(obj))
    return alive


def compare(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> list[Any]:
    """What was allocated between the snapshots and is still held, biggest first, by traceback;
    this script's own allocations (its lists of objects) left out."""
    ignore = [tracemalloc.Filter(False, __file__), tracemalloc.Filter(False, tracemalloc.__file__)]
    return after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "traceback")


def kib(size: float) -> str:
    return f"{size / 1024:.2f}"


def report(
    title: str,
    count: int,
    top: int,
    before: tracemalloc.Snapshot | None,
    after: tracemalloc.Snapshot | None,
    rss: tuple[int, int],
    holders: Tally,
    detail: bool,
) -> None:
    say(f"\n## {title}: {count:,} idle server connections\n")
    traced = 0.0
    if before is not None and after is not None:
        diff = compare(before, after)
        traced = sum(stat.size_diff for stat in diff) / count
        say(f"tracemalloc: {kib(traced)} KiB per connection")
    say(f"VmRSS: {kib((rss[1] - rss[0]) * 1024 / count)} KiB per connection")
    say("\n| held by (per connection) | bytes | objects |")
    say("|---|--:|--:|")
    attributed = 0.0
    for holder, size in sorted(holders.bytes.items(), key=lambda item: -item[1]):
        attributed += size / count
        objects = holders.objects[holder] / count
        say(f"| {holder} | {size / count:,.0f} | {objects:.1f} |")
    say(f"| **sum** | **{attributed:,.0f}** | |")
    if traced:
        say(f"| not attributed (tracemalloc - sum) | {traced - attributed:,.0f} | |")
    if detail:
        say("\n| held by | type | bytes per connection |")
        say("|---|---|--:|")
        for (holder, kind), size in sorted(holders.types.items(), key=lambda item: -item[1]):
            if size / count >= 16:
                say(f"| {holder} | {kind} | {size / count:,.0f} |")
    if before is None or after is None:
        return
    say(f"\nTop {top} lines by bytes allocated and still held, per connection:\n")
    say("| bytes | blocks | where |")
    say("|--:|--:|---|")
    for stat in diff[:top]:
        frames = reversed(stat.traceback)  # the allocating line first, then its callers
        where = " <- ".join(f"{_short(frame.filename)}:{frame.lineno}" for frame in frames)
        say(f"| {stat.size_diff / count:,.0f} | {stat.count_diff / count:.1f} | {where} |")


def _short(filename: str) -> str:
    for marker in ("site-packages/", "trio_ws/", "lib/python3"):
        if marker in filename:
            return filename[filename.index(marker) :].replace("site-packages/", "")
    return filename


async def read_from(stream: IO[str]) -> str:
    line: str = await trio.to_thread.run_sync(stream.readline)
    return line.strip()


async def settled(trace: bool) -> tuple[tracemalloc.Snapshot | None, int]:
    """Once every task waits and garbage is collected: a tracemalloc snapshot (when tracing)
    and VmRSS in KiB."""
    await trio.testing.wait_all_tasks_blocked(0.1)
    gc.collect()
    return (tracemalloc.take_snapshot() if trace else None), rss_kib()


async def run_server(
    count: int, compression: str | None, top: int, trace: bool, detail: bool
) -> None:
    raise_open_files_limit()
    title = f"compression {'on (permessage-deflate)' if compression else 'off'}"
    async with trio.open_nursery() as nursery:
        server: trio_ws.Server = await nursery.start(
            partial(trio_ws.serve, echo, HOST, 0, compression=compression, max_size=MAX_SIZE)
        )
        command = [sys.executable, __file__, "--role", "client", "--port", str(server.port)]
        command += ["--count", str(count), "--deflate", "only" if compression else "off"]
        start = partial(
            subprocess.Popen, command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        client = await trio.to_thread.run_sync(start)
        assert client.stdin is not None and client.stdout is not None
        client_in, client_out = client.stdin, client.stdout

        def tell(line: str) -> None:
            client_in.write(line + "\n")
            client_in.flush()

        try:
            if await read_from(client_out) != "READY":
                raise RuntimeError("the client failed to warm up")
            before, rss_before = await settled(trace)
            existing = existing_objects()
            tell("GO")
            if await read_from(client_out) != "HOLDING":
                raise RuntimeError("the client failed to open its connections")
            after, rss_after = await settled(trace)
            connections = server.connections
            if len(connections) != count:
                raise RuntimeError(f"{len(connections)} connections open, not {count}")
            holders = tally(connections, {id(obj) for obj in existing})
            del existing
            report(title, count, top, before, after, (rss_before, rss_after), holders, detail)
            tell("RELEASE")
            await trio.to_thread.run_sync(client.wait)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
            nursery.cancel_scope.cancel()


# -- the command ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=2_000, help="connections (default 2,000)")
    parser.add_argument("--deflate", choices=("both", "off", "only"), default="both")
    parser.add_argument("--top", type=int, default=25, help="tracemalloc lines shown (25)")
    parser.add_argument("--frames", type=int, default=1, help="tracemalloc traceback depth (1)")
    parser.add_argument("--no-trace", action="store_true", help="no tracemalloc: RSS and holders")
    parser.add_argument("--detail", action="store_true", help="holders' bytes by type too")
    parser.add_argument("--role", choices=("main", "server", "client"), default="main")
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    modes = MODES[args.deflate]
    run: Callable[..., None] = trio.run
    if args.role == "client":
        run(run_client, args.port, args.count, modes[0])
    elif args.role == "server":
        if not args.no_trace:
            tracemalloc.start(args.frames)
        run(run_server, args.count, modes[0], args.top, not args.no_trace, args.detail)
    else:
        say(f"trio_ws {trio_ws.__version__}, trio {trio.__version__}, {sys.version.split()[0]}")
        for mode in modes:
            command = [sys.executable, __file__, "--role", "server", "--count", str(args.count)]
            command += ["--deflate", "only" if mode else "off", "--top", str(args.top)]
            command += ["--frames", str(args.frames)] + (["--no-trace"] if args.no_trace else [])
            command += ["--detail"] if args.detail else []
            subprocess.run(command, check=True, env={**os.environ, "PYTHONHASHSEED": "0"})


if __name__ == "__main__":
    main()
