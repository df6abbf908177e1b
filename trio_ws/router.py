"""Routing by path: :func:`route` serves a werkzeug :class:`~werkzeug.routing.Map` of endpoints.

How this works: a :class:`Router` wraps the map. Its :meth:`~Router.process_request` runs as
serve()'s ``process_request`` hook, before the upgrade: it matches the request's path (and,
for a map with ``host_matching``, its host) and either answers with an HTTP error or redirect,
or records the endpoint and its parameters on the connection. Its :meth:`~Router.handler`,
serve()'s handler, then calls ``endpoint(connection, **params)``. :func:`route` is
:func:`~trio_ws.server.serve` with a Router plugged into both places. Matching is werkzeug's;
nothing here parses a URL pattern.

werkzeug is an optional dependency (``pip install trio-ws[router]``), so the package face does
not import this module: ``from trio_ws.router import route``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Unpack, cast
from urllib.parse import unquote, urlsplit

import trio

from .http import Request, Response
from .server import ProcessRequest, ServeOptions, Server, ServerConnection, serve

try:
    import werkzeug.routing
    from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
    from werkzeug.routing import RequestRedirect, WebsocketMismatch
except ImportError as _missing:  # pragma: no cover - tests/test_router.py runs it in a subprocess
    raise ImportError(
        "trio_ws.router needs werkzeug, an optional dependency: pip install trio-ws[router]"
    ) from _missing

__all__ = ["Endpoint", "Router", "route"]

#: What a rule's endpoint must be: an async function called as ``endpoint(connection,
#: **params)``, with the :class:`~trio_ws.server.ServerConnection` and the values the rule's
#: converters captured (``/user/<int:uid>`` gives ``uid=42``).
Endpoint = Callable[..., Awaitable[None]]

# werkzeug strips these from the Host, as it does for a WSGI request (werkzeug.sansio.utils).
_DEFAULT_PORTS = {"ws": ":80", "wss": ":443"}


@dataclass(frozen=True)
class _Match:
    """What process_request matched, kept in ``ServerConnection._routed`` for the handler."""

    endpoint: Endpoint
    params: dict[str, Any]


class Router:
    """Match each opening handshake against a werkzeug :class:`~werkzeug.routing.Map`.

    For servers started with :func:`~trio_ws.server.serve` or
    :func:`~trio_ws.server.unix_serve` directly (:func:`route` does this for you)::

        router = Router(url_map)
        server = await nursery.start(
            partial(trio_ws.serve, router.handler, "127.0.0.1", 8765,
                    process_request=router.process_request)
        )

    Every rule's endpoint must be an :data:`Endpoint`: an async function taking
    ``(connection, **params)``. Rules match whatever their ``websocket`` flag says: every
    request a trio_ws server routes is a WebSocket handshake.

    Args:
        url_map: the rules, read at each request (rules added later route too).
        server_name: the server's name as clients see it (``"example.com"``, with a port if
            not the default one): what ``host_matching`` rules match and where redirects
            point. None: the request's Host header, less a default port (80 for ws, 443 for
            wss), as werkzeug does for HTTP. Set it behind a proxy that rewrites Host.
        url_scheme: ``"ws"``, or ``"wss"`` when clients connect with TLS (behind a proxy that
            terminates TLS too): the scheme of redirect URLs.

    Raises:
        TypeError: ``url_map`` is no werkzeug Map, or a rule's endpoint is not callable; the
            message names the rule.
        ValueError: ``url_scheme`` is neither "ws" nor "wss".
    """

    __slots__ = ("_server_name", "_url_map", "_url_scheme")

    def __init__(
        self,
        url_map: werkzeug.routing.Map,
        *,
        server_name: str | None = None,
        url_scheme: str = "ws",
    ) -> None:
        if not isinstance(url_map, werkzeug.routing.Map):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"url_map must be a werkzeug.routing.Map, not {url_map!r}")
        if server_name is not None and not isinstance(server_name, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"server_name must be a str or None, not {server_name!r}")
        if url_scheme not in _DEFAULT_PORTS:
            raise ValueError(f'url_scheme must be "ws" or "wss", not {url_scheme!r}')
        for rule in url_map.iter_rules():
            _check_endpoint(rule.rule, rule.endpoint)
        self._url_map = url_map
        self._server_name = server_name
        self._url_scheme = url_scheme

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Match ``request``; serve()'s ``process_request`` hook. Never blocks.

        Returns None when a rule matched (its endpoint and parameters are kept on
        ``connection`` for :meth:`handler`), or the response to send instead of upgrading:
        404 when no rule matches, 308 with a Location header when werkzeug redirects (a
        missing trailing slash, ``redirect_to``), and the status of any other werkzeug
        :exc:`~werkzeug.exceptions.HTTPException` (405 for a rule limited to other methods,
        400 for a Host it cannot use). The path is matched percent-decoded, without its
        query string, which stays in ``connection.request.path``.

        Raises:
            TypeError: the matched rule's endpoint is not callable (a rule added after the
                Router was made); serve() answers 500 and logs it.
        """
        path, query = _split_target(request.path)
        try:
            adapter = self._url_map.bind(self._host(request), url_scheme=self._url_scheme)
            try:
                rule, params = adapter.match(
                    path, "GET", return_rule=True, query_args=query, websocket=False
                )
            except (NotFound, WebsocketMismatch):
                # werkzeug takes a rule only if its websocket flag is the one asked for, and
                # none of its errors says "try the other flag" reliably (a missing slash on a
                # websocket=True rule is NotFound here). Every request routed here is a
                # WebSocket handshake, whatever the flag: ask for the other kind too.
                rule, params = adapter.match(
                    path, "GET", return_rule=True, query_args=query, websocket=True
                )
        except RequestRedirect as redirect:
            response = connection.respond(redirect.code or 308, f"moved to {redirect.new_url}\n")
            response.headers.add("Location", redirect.new_url)
            return response
        except HTTPException as error:
            response = connection.respond(error.code or 500, f"{error.name}\n")
            if isinstance(error, MethodNotAllowed) and error.valid_methods:
                response.headers.add("Allow", ", ".join(error.valid_methods))
            return response
        endpoint = _check_endpoint(rule.rule, rule.endpoint)
        connection._routed = _Match(endpoint, dict(params))  # pyright: ignore[reportPrivateUsage]
        return None

    async def handler(self, connection: ServerConnection) -> None:
        """Call ``endpoint(connection, **params)`` for what :meth:`process_request` matched.

        serve()'s handler: it returns when the endpoint does, and raises what it raises (the
        server then closes the connection with 1011 and logs it).

        Raises:
            RuntimeError: :meth:`process_request` did not run for this connection: pass it to
                serve() as ``process_request``.
            TypeError: the endpoint returned something that cannot be awaited: it is no async
                function.
        """
        matched = connection._routed  # pyright: ignore[reportPrivateUsage]
        if not isinstance(matched, _Match):
            raise RuntimeError(
                "nothing was routed for this connection: pass the Router's process_request "
                "to serve() as process_request"
            )
        result: object = matched.endpoint(connection, **matched.params)
        if not inspect.isawaitable(result):
            raise TypeError(
                f"endpoint {matched.endpoint!r} returned {result!r}, not an awaitable: "
                "endpoints must be async functions taking (connection, **params)"
            )
        await result

    def _host(self, request: Request) -> str:
        if self._server_name is not None:
            return self._server_name
        # serve() refuses a request without Host (400) before its hooks run.
        host = next(iter(request.headers.get_all("Host")), "")
        return host.removesuffix(_DEFAULT_PORTS[self._url_scheme])


def _split_target(target: str) -> tuple[str, str]:
    """The request target's path, percent-decoded as WSGI's PATH_INFO is, and its query."""
    if target.startswith("/"):
        path, _, query = target.partition("?")
    else:  # absolute-form (RFC 9112 §3.2.2) or something odd: werkzeug will not match it
        parts = urlsplit(target)
        path, query = parts.path or "/", parts.query
    return unquote(path, errors="replace"), query


def _check_endpoint(rule: str, endpoint: object) -> Endpoint:
    if not callable(endpoint):
        raise TypeError(
            f"rule {rule!r} has the endpoint {endpoint!r}, which is not callable: endpoints "
            "must be async functions taking (connection, **params)"
        )
    return cast("Endpoint", endpoint)


def _chain(first: ProcessRequest, router: Router) -> ProcessRequest:
    """A process_request hook that runs ``first``, then, unless it answered, the router."""

    async def process_request(connection: ServerConnection, request: Request) -> Response | None:
        response = first(connection, request)
        if inspect.isawaitable(response):
            response = await response
        else:
            await trio.lowlevel.checkpoint()
        if response is not None:
            return response
        return router.process_request(connection, request)

    return process_request


async def route(
    url_map: werkzeug.routing.Map,
    host: str | Sequence[str] | None = None,
    port: int = 0,
    *,
    server_name: str | None = None,
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]] | None = None,
    reuse_port: bool = False,
    backlog: int | None = None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
    **options: Unpack[ServeOptions],
) -> None:
    """Serve on ``host``:``port``, running each connection's endpoint from ``url_map``.

    ::

        async def chat(ws, room): ...
        async def user(ws, uid): ...

        url_map = Map([
            Rule("/chat/<room>", endpoint=chat),
            Rule("/user/<int:uid>", endpoint=user),
        ])
        server = await nursery.start(route, url_map, "127.0.0.1", 8765)

    :func:`~trio_ws.server.serve` with a :class:`Router` as its handler and
    ``process_request``: it reports a :class:`~trio_ws.server.Server` through ``task_status``
    once listening and runs until stopped, exactly as serve() does. Each opening handshake
    is matched before the upgrade: no rule gets the client a 404, a redirect (a missing
    trailing slash) a 308 with a Location header; a match runs ``endpoint(connection,
    **params)`` once the connection is open. A ``process_request`` of yours runs first: if
    it returns a response, that is sent and nothing is routed.

    Args:
        url_map: the rules; every endpoint must be an async function taking
            ``(connection, **params)``.
        host, port, listeners, reuse_port, backlog: where to listen, as for serve().
        server_name: the server's name as clients see it, for ``host_matching`` rules and
            redirects; None: each request's Host header. See :class:`Router`.
        task_status: given by :meth:`trio.Nursery.start`.
        options: any other option of serve(). With ``ssl``, redirects point to ``wss://``.

    Raises:
        TypeError: a rule's endpoint is not callable (the message names the rule), or an
            option has the wrong type; nothing listens then.
        ValueError, OSError: as for serve().
    """
    url_scheme = "ws" if options.get("ssl") is None else "wss"
    router = Router(url_map, server_name=server_name, url_scheme=url_scheme)
    first = options.pop("process_request", None)
    if first is None:
        options["process_request"] = router.process_request
    elif callable(first):
        options["process_request"] = _chain(first, router)
    else:
        raise TypeError(f"process_request must be a function or None, not {first!r}")
    await serve(
        router.handler,
        host,
        port,
        listeners=listeners,
        reuse_port=reuse_port,
        backlog=backlog,
        task_status=task_status,
        **options,
    )
