// socket.io-client 4.8 clients for tests/test_recovery.py: they reconnect by themselves and
// recover their socket (connection state recovery), as a browser's would.
//
// stdin:  one JSON command per line, {"id": n, "cmd": "...", ...args}
// stdout: one JSON object per line:
//   {"ready": true}                                   once
//   {"id": n, "ok": result} | {"id": n, "error": "message"}   the answer to command n
//   {"connect": {"client", "id", "recovered"}}        every (re)connection
//   {"recv": {"client", "event", "args"}}             an event a client received
//   {"disconnect": {"client", "reason"}}              a client lost its connection
// The process exits when stdin closes.
"use strict";
const { serveCommands } = require("./commands");
const { io } = require("socket.io-client");

const sockets = new Map(); // name -> socket.io-client Socket

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function socketOf(client) {
  const socket = sockets.get(client);
  if (!socket) throw new Error(`no client ${client}`);
  return socket;
}

const commands = {
  async connect({ client, url, transports = ["websocket"], auth }) {
    if (sockets.has(client)) throw new Error(`client ${client} exists`);
    const socket = io(url, {
      transports,
      forceNew: true,
      auth,
      reconnectionDelay: 100, // reconnect promptly; the tests measure recovery, not backoff
      reconnectionDelayMax: 300,
      randomizationFactor: 0,
    });
    sockets.set(client, socket);
    socket.on("connect", () => out({ connect: { client, id: socket.id, recovered: !!socket.recovered } }));
    socket.on("disconnect", (reason) => out({ disconnect: { client, reason } }));
    socket.onAny((event, ...args) => out({ recv: { client, event, args } }));
    await new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", reject);
    });
    return { id: socket.id, recovered: !!socket.recovered };
  },
  async call({ client, event, args = [] }) {
    return socketOf(client).timeout(5000).emitWithAck(event, ...args);
  },
  async blip({ client }) {
    // the transport closes under the socket (a network blip): the manager reconnects
    socketOf(client).io.engine.close();
    return null;
  },
  async retarget({ client, url }) {
    // where the next reconnection goes, as a balancer may send it elsewhere
    socketOf(client).io.uri = url;
    return null;
  },
  async close({ client }) {
    socketOf(client).disconnect();
    sockets.delete(client);
    return null;
  },
};

serveCommands(
  commands,
  out,
  () => {
    for (const socket of sockets.values()) socket.disconnect();
    process.exit(0);
  },
);
out({ ready: true });
