"""Prometheus metrics for a trio_ws server, served on the WebSocket port at ``/metrics``.

The server already counts what an operator watches: ``server.stats``, a ``trio_ws.Stats``.
A custom collector turns those counters into Prometheus metrics when Prometheus scrapes, and
only then: no work per message or per connection, nothing to keep in step. ``process_request``
answers ``GET /metrics`` on the trio thread, so the counters are read between two trio steps,
never while a connection updates them.

Needs ``prometheus_client`` (``pip install prometheus-client``). Run it with
``python examples/prometheus_metrics.py``: it serves on a free port, echoes two messages for a
client, prints a scrape of ``/metrics``, then stops.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import trio_ws


class StatsCollector(Collector):
    """Read a trio_ws.Stats whenever the registry is collected: on each scrape, only then."""

    def __init__(self, stats: trio_ws.Stats, prefix: str = "trio_ws") -> None:
        self._stats = stats
        self._prefix = prefix

    def collect(self) -> Iterator[Metric]:
        stats, p = self._stats, self._prefix
        yield GaugeMetricFamily(
            f"{p}_connections_open", "WebSocket connections open now.", stats.connections_open
        )
        # A counter's samples get the "_total" suffix: trio_ws_connections_total...
        yield CounterMetricFamily(
            f"{p}_connections", "WebSocket connections opened.", stats.connections_total
        )
        refused = CounterMetricFamily(
            f"{p}_handshakes_refused",
            "Opening handshakes that led to no connection, by status or reason.",
            labels=["reason"],
        )
        for reason, count in sorted(stats.handshakes_refused.items()):
            refused.add_metric([reason], count)
        yield refused
        closed = CounterMetricFamily(
            f"{p}_connections_closed",
            "Closed connections, by the peer's close code (1006: none came).",
            labels=["code"],
        )
        for code, count in sorted(stats.close_codes.items()):
            closed.add_metric([str(code)], count)
        yield closed
        for name, value, text in [
            ("messages_received", stats.messages_in, "Data messages received."),
            ("messages_sent", stats.messages_out, "Data messages sent."),
            ("received_bytes", stats.bytes_in, "Bytes read from WebSocket connections."),
            ("sent_bytes", stats.bytes_out, "Bytes written to WebSocket connections."),
            ("broadcast_drops", stats.broadcast_drops, "Broadcast messages skipped."),
            ("keepalive_failures", stats.keepalive_failures, "Connections lost to keepalive."),
        ]:
            yield CounterMetricFamily(f"{p}_{name}", text, value)


def metrics_endpoint(
    registry: CollectorRegistry, path: str = "/metrics"
) -> trio_ws.server.ProcessRequest:
    """A ``process_request`` hook that answers ``GET path`` with the registry's metrics."""

    def process_request(
        connection: trio_ws.ServerConnection, request: trio_ws.Request
    ) -> trio_ws.Response | None:
        if request.path != path:
            return None
        headers = trio_ws.Headers([("Content-Type", CONTENT_TYPE_LATEST)])
        return trio_ws.Response(200, "OK", headers, generate_latest(registry))

    return process_request


async def handler(ws: trio_ws.ServerConnection) -> None:
    """Send every message back to the client that sent it."""
    async for message in ws:
        await ws.send(message)


async def scrape(port: int, path: str = "/metrics") -> str:
    """What Prometheus does: GET the metrics, read until the server closes; the body."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        response = bytearray()
        while chunk := await stream.receive_some(65536):
            response += chunk
    head, _, body = bytes(response).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(f"scrape failed: {head!r}")
    return body.decode()


async def main() -> None:
    registry = CollectorRegistry()
    async with trio.open_nursery() as nursery:
        serve = partial(trio_ws.serve, process_request=metrics_endpoint(registry))
        server = await nursery.start(serve, handler, "127.0.0.1", 0)
        registry.register(StatsCollector(server.stats))
        async with trio_ws.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            for message in ("hello", "world"):
                await ws.send(message)
                await ws.recv()
        for line in (await scrape(server.port)).splitlines():
            if line.startswith("trio_ws_"):
                print(line)
        await server.aclose()
    print("server stopped")


if __name__ == "__main__":
    trio.run(main)
