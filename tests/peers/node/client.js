// A ws client for tests/test_interop_node.py: it talks to a trio_ws server that echoes.
//
//   node client.js URL [CLOSE_CODE [REASON]]
//
// Sends a scripted series of messages, each after the echo of the one before; pings; then
// closes with CLOSE_CODE and REASON if given, else waits for the server to close. Prints one
// JSON line per event: "open" (the response's Sec-WebSocket-Extensions), "sent" and "echo"
// (type, length and SHA-256 of each message), "pong", "ping" (the server's pings), "close"
// (code and reason received), "error". Exits when done, or when its stdin closes.
"use strict";

const crypto = require("crypto");
const WebSocket = require("ws");

const MAX_PAYLOAD = 4 * 1024 * 1024; // above the 2 MiB message

function report(object) {
  process.stdout.write(JSON.stringify(object) + "\n");
}

function describe(data, isBinary) {
  const buffer = Buffer.isBuffer(data) ? data : Buffer.from(data, "utf8");
  return {
    binary: isBinary,
    length: buffer.length,
    sha256: crypto.createHash("sha256").update(buffer).digest("hex"),
  };
}

const MESSAGES = [
  ["hello, trio_ws", false],
  [Buffer.from(Array.from({ length: 256 }, (_, i) => i)), true],
  ["é☃𝄞".repeat(1000), false],
  // Compressible: the server counts the bytes it read for it.
  ["trio_ws and ws agree on permessage-deflate. ".repeat(24000), false],
  [crypto.randomBytes(2 * 1024 * 1024), true],
];

const [url, closeCode, closeReason] = process.argv.slice(2);
const ws = new WebSocket(url, { maxPayload: MAX_PAYLOAD, perMessageDeflate: true });

ws.on("upgrade", (response) => {
  report({ event: "open", extensions: response.headers["sec-websocket-extensions"] || null });
});
ws.on("ping", (data) => report({ event: "ping", data: data.toString("utf8") }));
ws.on("close", (code, reason) => {
  report({ event: "close", code, reason: reason.toString("utf8") });
  process.exit(0);
});
ws.on("error", (error) => {
  report({ event: "error", message: String(error) });
  process.exit(1);
});

function nextMessage() {
  return new Promise((resolve) => ws.once("message", (data, isBinary) => resolve([data, isBinary])));
}

ws.on("open", async () => {
  for (const [message, isBinary] of MESSAGES) {
    report({ event: "sent", ...describe(message, isBinary) });
    const reply = nextMessage();
    ws.send(message, { binary: isBinary });
    const [data, replyBinary] = await reply;
    report({ event: "echo", ...describe(data, replyBinary) });
  }
  const pong = new Promise((resolve) => ws.once("pong", resolve));
  ws.ping("from node");
  report({ event: "pong", data: (await pong).toString("utf8") });
  if (closeCode !== undefined) {
    ws.close(Number(closeCode), closeReason || "");
  } else {
    ws.send("done");
  }
});

process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
