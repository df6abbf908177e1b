"""Several worker processes on one port: :func:`supervise` starts, restarts and drains them.

::

    async with trio.open_nursery() as nursery:
        supervisor = await nursery.start(
            functools.partial(trio_ws.workers.supervise, "app:handler", workers=4, port=8765)
        )
        ...
        await supervisor.aclose()  # every client gets 1001; supervise() returns

How this works. Each worker is a child process running ``python -m trio_ws serve
MODULE:HANDLER`` in worker mode: its own ``trio.run`` and its own :func:`~trio_ws.serve`. The
supervisor runs one task per worker slot, in a nursery of its own; the task starts the worker,
reads its readiness line, waits for it to exit, and starts it again after a backoff. Three
pipes tie a worker to the supervisor:

- a readiness pipe (``--worker-ready-fd``): the worker writes ``READY <port>`` once it
  listens, then closes it; end of file before that means it failed to start;
- its stdin, which the supervisor holds open and never writes: at end of file (the supervisor
  died, even by SIGKILL) the worker closes its connections with 1001 and exits, so no worker
  outlives its supervisor;
- in the inherited-socket mode, the listening sockets themselves (``--listen-fd``).

Two ways to share the port. With ``reuse_port=True`` every worker binds its own socket with
``SO_REUSEPORT`` and Linux spreads new connections among them by a hash of the addresses: even
shares, one accept queue per worker, no worker woken for another's connection. Worker 0 starts
first and reports the port (the one chosen, for port 0), which the others and every restart
then bind. With ``reuse_port=False`` the supervisor binds once and every worker inherits those
sockets and accepts from the one shared queue: the port stays bound while a worker restarts
(connections wait in the queue instead of being refused), and it works where SO_REUSEPORT
does not spread connections (macOS, the BSDs), but which worker wins a connection is up to
the scheduler, so shares can be uneven. The default is ``reuse_port=True`` on Linux, the
inherited socket elsewhere.

Stopping. Cancelling supervise() (or :meth:`Supervisor.aclose`, which cancels its scope) sends
SIGTERM to every worker at once; each closes its connections with 1001 and gives its handlers
half of ``drain_timeout`` to return; any worker still running at ``drain_timeout`` gets
SIGKILL. That cleanup is shielded and bounded by ``drain_timeout`` (plus the few seconds a
killed process takes to be reaped).

Restarts. A worker that dies after it listened is started again after ``restart_backoff``
seconds, doubled at each death up to ``max_restart_backoff``, and back to ``restart_backoff``
once a worker has lived ``max_restart_backoff`` seconds; each death is logged at WARNING on
``logging.getLogger("trio_ws.workers")`` with its exit status. A worker that exits before it
listens failed at start-up: with status 2 (its handler cannot be imported, or bad arguments)
nothing is retried; otherwise (a port in use...) supervise() gives up after
``start_attempts`` such failures in a row. Either way it stops every other worker and raises
:exc:`WorkerStartError`.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys

import trio

from . import _groups
from ._listening import open_tcp_listeners, port_of

__all__ = ["Supervisor", "WorkerStartError", "supervise"]

_logger = logging.getLogger("trio_ws.workers")

_USAGE = 2  # a worker's exit status when its handler cannot be loaded: retrying cannot help
_READY = b"READY "
_READY_LINE_LIMIT = 64  # bytes: "READY 65535\n" and more than enough room
_KILL_WAIT = 5.0  # seconds for a SIGKILLed process to be reaped: bounded, never expected


class WorkerStartError(RuntimeError):
    """A worker could not start: its handler cannot be loaded, or it failed repeatedly.

    Attributes:
        index: the worker slot, from 0.
        exit_status: the last attempt's exit status (negative: killed by that signal), or
            None if it did not listen within ``start_timeout`` and was killed.
    """

    def __init__(self, message: str, *, index: int, exit_status: int | None) -> None:
        super().__init__(message)
        self.index = index
        self.exit_status = exit_status


class Supervisor:
    """Running worker processes, as :func:`supervise` reports them through ``task_status``.

    Stop them gracefully with :meth:`aclose` (or by cancelling supervise()), at once with
    :meth:`kill`. Only :func:`supervise` creates a Supervisor.
    """

    def __init__(
        self,
        target: str,
        *,
        workers: int,
        host: str | None,
        port: int,
        reuse_port: bool,
        drain_timeout: float,
        restart_backoff: float,
        max_restart_backoff: float,
        start_attempts: int,
        start_timeout: float,
        python: str,
    ) -> None:
        self._target = target
        self._workers = workers
        self._host = host
        self._requested_port = port
        self._reuse_port = reuse_port
        self._drain_timeout = drain_timeout
        self._restart_backoff = restart_backoff
        self._max_restart_backoff = max_restart_backoff
        self._start_attempts = start_attempts
        self._start_timeout = start_timeout
        self._python = python
        self._port = port
        self._listen_fds: tuple[int, ...] = ()
        self._processes: dict[int, trio.Process] = {}  # by slot, while running
        self._listening: set[int] = set()  # slots whose first worker reported ready
        self._first_ready = trio.Event()
        self._all_ready = trio.Event()
        self._cancel_scope = trio.CancelScope()
        self._deadline: float | None = None  # when draining workers get SIGKILL, once stopping
        self._failure: WorkerStartError | None = None
        self._stopped = trio.Event()

    @property
    def port(self) -> int:
        """The TCP port every worker listens on (the one chosen, when given 0)."""
        return self._port

    @property
    def pids(self) -> list[int]:
        """The process ids of the workers running now, by slot (a restarting slot is absent)."""
        return [self._processes[slot].pid for slot in sorted(self._processes)]

    @property
    def reuse_port(self) -> bool:
        """True if each worker binds with SO_REUSEPORT; False if they share inherited sockets."""
        return self._reuse_port

    async def aclose(self) -> None:
        """Stop gracefully: SIGTERM to every worker, SIGKILL at ``drain_timeout``.

        Each worker closes its connections with 1001 and exits. Returns once supervise() has
        returned, within ``drain_timeout`` seconds (plus the reaping of killed workers).
        """
        self._cancel_scope.cancel()
        await self._stopped.wait()

    def kill(self) -> None:
        """Send SIGKILL to every worker now; supervise() returns once they are reaped.

        Their clients see the connections drop (1006), with no close frame.
        """
        self._deadline = -math.inf
        self._cancel_scope.cancel()
        for process in self._processes.values():
            if process.returncode is None:
                process.kill()

    # -- the slots -------------------------------------------------------------------------

    async def _run(self, task_status: trio.TaskStatus[Supervisor]) -> None:
        listeners: list[trio.SocketListener] = []
        try:
            if not self._reuse_port:
                # Bound here, before any worker, so that a bind error is ours to raise.
                listeners = await open_tcp_listeners(self._host, self._requested_port)
                self._port = port_of(listeners[0])
                self._listen_fds = tuple(listener.socket.fileno() for listener in listeners)
            with self._cancel_scope:
                async with _groups.open_nursery() as nursery:
                    # Worker 0 alone first: it reports the port for the others (reuse_port
                    # with port 0), and a handler that cannot be loaded fails once, not N times.
                    nursery.start_soon(self._run_slot, 0)
                    await self._first_ready.wait()
                    for slot in range(1, self._workers):
                        nursery.start_soon(self._run_slot, slot)
                    await self._all_ready.wait()
                    for slot in sorted(self._processes):
                        _logger.info(
                            "worker %d (pid %d) listening on port %d",
                            slot,
                            self._processes[slot].pid,
                            self._port,
                        )
                    task_status.started(self)
        finally:
            for listener in listeners:
                listener.socket.close()
            self._stopped.set()
        if self._failure is not None:
            raise self._failure

    def _fail(self, failure: WorkerStartError) -> None:
        """Record the first start-up failure and stop every worker; supervise() raises it."""
        if self._failure is None:
            self._failure = failure
        self._cancel_scope.cancel()

    async def _run_slot(self, slot: int) -> None:
        """Run worker ``slot`` again and again until cancelled. Never raises but Cancelled."""
        failures = 0  # start-up failures in a row
        backoff = self._restart_backoff
        while True:
            started = trio.current_time()
            pid, listened, status = await self._run_worker(slot)
            if listened:
                failures = 0
                if trio.current_time() - started >= self._max_restart_backoff:
                    backoff = self._restart_backoff
                what = f"exited with {_describe(status)}"
            else:
                failures += 1
                what = f"exited with {_describe(status)} before listening"
                if status is None:
                    what = f"was not listening after {self._start_timeout:g} s: killed"
                if status == _USAGE:
                    self._fail(
                        WorkerStartError(
                            f"worker {slot} (pid {pid}) {what}: its handler "
                            f"{self._target!r} cannot be loaded (see its error above); "
                            "not restarting",
                            index=slot,
                            exit_status=status,
                        )
                    )
                    return
                if failures >= self._start_attempts:
                    self._fail(
                        WorkerStartError(
                            f"worker {slot} (pid {pid}) {what}, {failures} times in a row; "
                            "giving up",
                            index=slot,
                            exit_status=status,
                        )
                    )
                    return
            _logger.warning("worker %d (pid %d) %s; restarting in %g s", slot, pid, what, backoff)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, self._max_restart_backoff)

    def _command(self, slot: int, ready_fd: int) -> list[str]:
        command = [self._python, "-m", "trio_ws", "serve", self._target, "--workers", "1"]
        command += ["--worker-ready-fd", str(ready_fd)]
        # Half the drain deadline for the handlers: then the closing handshakes of those
        # cancelled get the rest, before SIGKILL.
        command += ["--close-timeout", repr(self._drain_timeout / 2)]
        if self._reuse_port:
            # Until worker 0 listens, the port asked for (maybe 0); then the one it bound.
            command += ["--host", self._host or "", "--port", str(self._port), "--reuse-port"]
        else:
            for fd in self._listen_fds:
                command += ["--listen-fd", str(fd)]
        return command

    async def _run_worker(self, slot: int) -> tuple[int, bool, int | None]:
        """Start worker ``slot``, wait for its readiness and its exit.

        Returns its pid, whether it listened, and its exit status (None if it did not listen
        within ``start_timeout`` and was killed). Cancelled, it drains the worker (shielded,
        bounded by ``drain_timeout``) before Cancelled propagates.
        """
        read_fd, write_fd = os.pipe()
        try:
            process = await trio.lowlevel.open_process(
                self._command(slot, write_fd),
                stdin=subprocess.PIPE,  # the lifeline: never written, closed when we go
                pass_fds=(write_fd, *self._listen_fds),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # the worker's copy is the only one: its exit means EOF
        self._processes[slot] = process
        listened = False
        try:
            line = b""
            async with trio.lowlevel.FdStream(read_fd) as ready_pipe:
                with trio.move_on_after(self._start_timeout) as starting:
                    line = await _read_line(ready_pipe)
                if line.startswith(_READY):
                    listened = True
                    self._listening_now(slot, int(line[len(_READY) :]))
            if starting.cancelled_caught:
                process.kill()
                with trio.move_on_after(_KILL_WAIT, shield=True):
                    await process.wait()
                return process.pid, False, None
            return process.pid, listened, await process.wait()
        finally:
            del self._processes[slot]
            await self._stop(slot, process)

    def _listening_now(self, slot: int, port: int) -> None:
        if not self._listening:
            self._port = port
            self._first_ready.set()
        self._listening.add(slot)
        if self._all_ready.is_set():
            _logger.info("worker %d (pid %d) listening on port %d", slot, self._pid(slot), port)
        elif len(self._listening) == self._workers:
            self._all_ready.set()

    def _pid(self, slot: int) -> int:
        return self._processes[slot].pid

    async def _stop(self, slot: int, process: trio.Process) -> None:
        """SIGTERM, wait until the drain deadline, SIGKILL; close the lifeline. Bounded."""
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                if self._deadline is None:  # the first worker to stop sets it for all
                    self._deadline = trio.current_time() + self._drain_timeout
                process.send_signal(signal.SIGTERM)
                with trio.move_on_at(self._deadline):
                    await process.wait()
                if process.returncode is None:
                    _logger.warning(
                        "worker %d (pid %d) still running after %g s: killing it",
                        slot,
                        process.pid,
                        self._drain_timeout,
                    )
                    process.kill()
                    with trio.move_on_after(_KILL_WAIT):
                        await process.wait()
            if process.stdin is not None:
                await trio.aclose_forcefully(process.stdin)


def _describe(status: int | None) -> str:
    if status is not None and status < 0:
        try:
            return f"signal {signal.Signals(-status).name}"
        except ValueError:
            return f"signal {-status}"
    return f"status {status}"


async def _read_line(stream: trio.lowlevel.FdStream) -> bytes:
    """The first line on ``stream``, without its newline; what came before EOF if none."""
    data = b""
    while b"\n" not in data and len(data) < _READY_LINE_LIMIT:
        chunk = await stream.receive_some(_READY_LINE_LIMIT)
        if not chunk:
            return data
        data += chunk
    return data.partition(b"\n")[0]


def _check_target(target: object) -> None:
    if not isinstance(target, str):
        raise TypeError(f"target must be a str, not {target!r}")
    if ":" not in target:
        raise ValueError(f"target must be 'MODULE:HANDLER', not {target!r}")


def _check_positive(name: str, value: object, *, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise TypeError(f"{name} must be {'an int' if integer else 'a number'}, not {value!r}")
    if not (value >= 1 if integer else 0 <= value < math.inf):
        raise ValueError(f"{name}={value!r} is out of range")


async def supervise(
    target: str,
    *,
    workers: int,
    host: str | None = "localhost",
    port: int = 8765,
    reuse_port: bool | None = None,
    drain_timeout: float = 10.0,
    restart_backoff: float = 0.5,
    max_restart_backoff: float = 30.0,
    start_attempts: int = 3,
    start_timeout: float = 30.0,
    python: str = sys.executable,
    task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``target`` from ``workers`` child processes sharing one port, until cancelled.

    Start it with ``nursery.start``: it reports a :class:`Supervisor` once every worker
    listens, so that ``supervisor.port`` accepts connections from then on.

    Each worker runs ``python -m trio_ws serve TARGET`` with ``python``, in this process's
    working directory and environment (TARGET is imported there, as the CLI does). Its stdout
    and stderr are this process's.

    Args:
        target: ``MODULE:HANDLER``, as for ``python -m trio_ws serve``.
        workers: how many worker processes, at least 1.
        host: the address to listen on; None or "" for every interface.
        port: the TCP port; 0 picks one (then :attr:`Supervisor.port` says which).
        reuse_port: True: each worker binds with SO_REUSEPORT, and the kernel spreads
            connections (Linux). False: this process binds and the workers inherit the
            sockets. None (default): True on Linux, False elsewhere.
        drain_timeout: seconds a stopping worker gets before SIGKILL; its handlers get half.
        restart_backoff: seconds before a dead worker starts again; doubled at each death.
        max_restart_backoff: the backoff's ceiling, and how long a worker must live for the
            backoff to start again from ``restart_backoff``.
        start_attempts: start-up failures in a row (exits before listening) after which
            supervise() gives up.
        start_timeout: seconds a worker may take to listen; past it, it is killed and counts
            as a start-up failure.
        python: the interpreter that runs the workers.

    Raises:
        WorkerStartError: a worker exited with status 2 before listening (its handler cannot
            be loaded), or failed at start-up ``start_attempts`` times in a row. Every other
            worker has been stopped (drained) by then.
        OSError: with ``reuse_port=False``, binding failed (the message names the address).
        TypeError, ValueError: an argument has the wrong type or is out of range.

    Cancelled (or after :meth:`Supervisor.aclose`), it drains every worker as described above,
    shielded and bounded by ``drain_timeout``, then re-raises Cancelled (or returns).
    """
    _check_target(target)
    _check_positive("workers", workers, integer=True)
    _check_positive("start_attempts", start_attempts, integer=True)
    for name, value in (
        ("drain_timeout", drain_timeout),
        ("restart_backoff", restart_backoff),
        ("max_restart_backoff", max_restart_backoff),
        ("start_timeout", start_timeout),
    ):
        _check_positive(name, value)
    if reuse_port is None:
        reuse_port = sys.platform == "linux"
    if reuse_port and not hasattr(trio.socket, "SO_REUSEPORT"):
        raise ValueError(f"reuse_port=True: SO_REUSEPORT is not available on {sys.platform}")
    supervisor = Supervisor(
        target,
        workers=workers,
        host=host,
        port=port,
        reuse_port=reuse_port,
        drain_timeout=drain_timeout,
        restart_backoff=restart_backoff,
        max_restart_backoff=max_restart_backoff,
        start_attempts=start_attempts,
        start_timeout=start_timeout,
        python=python,
    )
    await supervisor._run(task_status)  # pyright: ignore[reportPrivateUsage]
