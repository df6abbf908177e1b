// A ws server for tests/test_interop_node.py: trio_ws's client talks to it.
//
// Prints one JSON line {"port": N} once listening on 127.0.0.1 (port 0: a free one), then one
// JSON line per event the test may check ({"event": "close", ...} when a client closes).
// Echoes every message with its type (text or binary), except these text commands:
//   "close:CODE:REASON"  closes the connection with CODE and REASON;
//   "ping:DATA"          sends a ping with DATA, then reports its pong as the text "pong:DATA";
//   "stats"              answers with JSON: the extensions negotiated, the bytes read so far;
//   "bad-utf8"           sends a text message that is not UTF-8 (a protocol error).
// Exits when its stdin closes, so that it never outlives the test that started it.
"use strict";

const { WebSocketServer } = require("ws");

const MAX_PAYLOAD = 4 * 1024 * 1024; // above the tests' 2 MiB message

function report(object) {
  process.stdout.write(JSON.stringify(object) + "\n");
}

const server = new WebSocketServer({
  host: "127.0.0.1",
  port: 0,
  maxPayload: MAX_PAYLOAD,
  // Off by default in ws's server; threshold 0 compresses every message.
  perMessageDeflate: { threshold: 0 },
});

server.on("listening", () => report({ port: server.address().port }));

server.on("connection", (ws, request) => {
  report({
    event: "connection",
    extensions: request.headers["sec-websocket-extensions"] || null,
  });
  ws.on("message", (data, isBinary) => {
    const text = isBinary ? null : data.toString("utf8");
    if (text !== null && text.startsWith("close:")) {
      const [, code, ...reason] = text.split(":");
      ws.close(Number(code), reason.join(":"));
    } else if (text !== null && text.startsWith("ping:")) {
      const payload = text.slice("ping:".length);
      ws.once("pong", (pong) => ws.send("pong:" + pong.toString("utf8")));
      ws.ping(payload);
    } else if (text === "stats") {
      ws.send(
        JSON.stringify({
          extensions: ws.extensions, // the names negotiated, comma-separated
          bytesRead: ws._socket.bytesRead,
        })
      );
    } else if (text === "bad-utf8") {
      ws.send(Buffer.from([0x68, 0x69, 0xff, 0xfe]), { binary: false });
    } else {
      ws.send(data, { binary: isBinary });
    }
  });
  ws.on("close", (code, reason) => {
    report({ event: "close", code, reason: reason.toString("utf8") });
  });
  ws.on("error", (error) => report({ event: "error", message: String(error) }));
});

process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
