"""The one place where ExceptionGroups from trio_ws's own nurseries are unwrapped.

Background tasks never raise (they record the cause, close the connection and return), so a
nursery of ours can only hold the user's exception, Cancelled, or both. Users get that exception
itself, never a bare group; anything else is a bug, reported as such and chained to the group.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import NoReturn

import trio

from .exceptions import WebSocketError


def reraise(exc: BaseException) -> NoReturn:
    """Raise ``exc`` as it was raised first: same traceback, cause and context."""
    cause, context, suppress = exc.__cause__, exc.__context__, exc.__suppress_context__
    try:
        raise exc
    finally:
        exc.__cause__, exc.__context__ = cause, context
        exc.__suppress_context__ = suppress


def unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """Return the one exception a user should see for ``group``.

    Only the body of a nursery of ours may raise anything but Cancelled, so: Cancelled alone gives
    one Cancelled; one other exception (a group the user raised included) gives that exception;
    several others mean a bug in trio_ws.
    """
    others = [exc for exc in group.exceptions if not isinstance(exc, trio.Cancelled)]
    if not others:
        return group.exceptions[0]
    if len(others) == 1:
        return others[0]
    internal = WebSocketError(f"internal error in trio_ws: {len(others)} exceptions at once")
    internal.__cause__ = group
    return internal


async def exit_nursery(
    manager: AbstractAsyncContextManager[trio.Nursery], exc: BaseException | None
) -> None:
    """Leave a nursery entered with ``manager.__aenter__()`` as ``async with open_nursery()``
    would, its block having raised ``exc`` (None: it returned): what comes out is unwrapped.

    For a context manager written as a class, which costs less memory than a generator for as
    long as its body runs (``_core.Session``).
    """
    try:
        if exc is None:
            await manager.__aexit__(None, None, None)
        elif not await manager.__aexit__(type(exc), exc, exc.__traceback__):
            raise exc
    except BaseExceptionGroup as group:
        reraise(unwrap(group))


@asynccontextmanager
async def open_nursery() -> AsyncGenerator[trio.Nursery, None]:
    """A trio nursery whose exceptions come out unwrapped, as :func:`unwrap` says."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        reraise(unwrap(group))
