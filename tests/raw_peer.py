"""A WebSocket peer made of wsproto and a trio stream, for tests that check what was on the wire.

Not trio_ws: what it reports (did the upgrade happen, which close code came, which messages)
is what the bytes said. As a server it accepts any upgrade and echoes every message; as a
client it upgrades, sends what it is told and records what comes. Both answer pings and the
peer's close frame, and end when the stream ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

__all__ = ["Seen", "run_client", "run_server"]


@dataclass
class Seen:
    """What the raw peer saw on the wire."""

    upgraded: bool = False  # the 101 was sent (server) or received (client)
    close_code: int | None = None  # the peer's close frame's code; None: no close frame came
    messages: list[str | bytes] = field(default_factory=list)
    ended: trio.Event = field(default_factory=trio.Event)

    @property
    def outcome(self) -> str | int:
        """The close code, "no upgrade", or 1006 for a connection dropped after the upgrade."""
        if not self.upgraded:
            return "no upgrade"
        return 1006 if self.close_code is None else self.close_code


class _Peer:
    def __init__(
        self,
        stream: trio.abc.Stream,
        role: ConnectionType,
        seen: Seen,
        upgraded_send: tuple[str | bytes, ...] = (),
    ) -> None:
        self.stream, self.ws, self.seen = stream, WSConnection(role), seen
        self.role = role
        self.upgraded_send = upgraded_send  # a client's messages, sent once upgraded
        self._text: list[str] = []
        self._binary: list[bytes] = []

    async def send(self, event: Event) -> None:
        data = self.ws.send(event)
        if data:
            await self.stream.send_all(data)

    async def run(self, echo: bool) -> None:
        """Read until the stream ends; ``echo`` each message (as a server does)."""
        try:
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    return
                self.ws.receive_data(data)
                for event in self.ws.events():
                    if await self._act_on(event, echo):
                        return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            self.seen.ended.set()
            await trio.aclose_forcefully(self.stream)

    async def _act_on(self, event: Event, echo: bool) -> bool:
        """Act on one event; whether the connection is over."""
        if isinstance(event, Request):
            await self.send(AcceptConnection())
            self.seen.upgraded = True
        elif isinstance(event, AcceptConnection):
            self.seen.upgraded = True
            for message in self.upgraded_send:
                await self.send(_message(message))
        elif isinstance(event, RejectConnection):
            return True
        elif isinstance(event, Ping):
            await self.send(event.response())
        elif isinstance(event, TextMessage | BytesMessage):
            message = self._collect(event)
            if message is not None:
                self.seen.messages.append(message)
                if echo:
                    await self.send(_message(message))
        elif isinstance(event, CloseConnection):
            if self.seen.upgraded:
                self.seen.close_code = event.code
            if self.ws.state is ConnectionState.REMOTE_CLOSING:
                await self.send(event.response())
            # RFC 6455 §7.1.1: the server closes TCP first; a client waits for it.
            return self.role is ConnectionType.SERVER
        return False

    def _collect(self, event: TextMessage | BytesMessage) -> str | bytes | None:
        if isinstance(event, TextMessage):
            self._text.append(event.data)
            if not event.message_finished:
                return None
            text, self._text = "".join(self._text), []
            return text
        self._binary.append(bytes(event.data))
        if not event.message_finished:
            return None
        binary, self._binary = b"".join(self._binary), []
        return binary


def _message(data: str | bytes) -> TextMessage | BytesMessage:
    return TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)


async def run_server(stream: trio.abc.Stream, seen: Seen) -> None:
    """Serve one connection: accept the upgrade, echo every message, answer the close."""
    await _Peer(stream, ConnectionType.SERVER, seen).run(echo=True)


async def run_client(
    stream: trio.abc.Stream,
    seen: Seen,
    messages: tuple[str | bytes, ...] = (),
    *,
    echo: bool = False,
) -> None:
    """Upgrade, send ``messages`` once upgraded, then record what comes (and ``echo`` it)
    until TCP ends."""
    peer = _Peer(stream, ConnectionType.CLIENT, seen, messages)
    try:
        await peer.send(Request(host="test.invalid", target="/"))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        seen.ended.set()
        await trio.aclose_forcefully(stream)
        return
    await peer.run(echo=echo)
