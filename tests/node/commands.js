// The command loop of the Node scripts driven by tests/node_peer.py: one JSON command per line
// on stdin, {"id": n, "cmd": "...", ...args}, answered on stdout by `out` as
// {"id": n, "ok": result} or {"id": n, "error": "message"}; `onClose` runs when stdin closes.
"use strict";
const readline = require("readline");

function serveCommands(commands, out, onClose, prepare = (args) => args) {
  const lines = readline.createInterface({ input: process.stdin });
  lines.on("line", async (line) => {
    if (!line.trim()) return;
    let id = null;
    try {
      const { id: requestId, cmd, ...args } = JSON.parse(line);
      id = requestId;
      const command = commands[cmd];
      if (!command) throw new Error(`unknown command ${cmd}`);
      out({ id, ok: (await command(prepare(args))) ?? null });
    } catch (err) {
      out({ id, error: String((err && err.message) || err) });
    }
  });
  lines.on("close", onClose);
}

module.exports = { serveCommands };
