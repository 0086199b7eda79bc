// socket.io-client 2.5.0 and 1.7.4 (Engine.IO 3) clients for tests/test_eio3.py, and Node's
// own Engine.IO 3 payload codec (engine.io 6's parser-v3, what socket.io 4 serves v3 clients
// with) for the codec's cross-check.
//
// stdin:  one JSON command per line, {"id": n, "cmd": "...", ...args}
// stdout: one JSON object per line:
//   {"ready": true}                                   once
//   {"id": n, "ok": result} | {"id": n, "error": "message"}   the answer to command n
//   {"recv": {"client", "event", "args"}}             an event a client listens to arrived
//   {"disconnect": {"client", "reason"}}              a client lost its connection
// Binary values travel as {"$bin": "<hex>"}. The process exits when stdin closes.
"use strict";
const { serveCommands } = require("./commands");
const path = require("path");
const { encode, decode } = require("./binary");

// engine.io's v3 parser, from the engine.io that socket.io itself uses (not in its exports)
const engineIo = require.resolve("engine.io", { paths: [path.dirname(require.resolve("socket.io"))] });
const parserV3 = require(path.join(path.dirname(engineIo), "parser-v3"));

const libraries = {
  2: require("socket.io-client-v2"),
  1: require("socket.io-client-v1"),
};
const sockets = new Map(); // name -> socket.io-client Socket

function out(obj) {
  process.stdout.write(JSON.stringify(encode(obj)) + "\n");
}

function socketOf(client) {
  const socket = sockets.get(client);
  if (!socket) throw new Error(`no client ${client}`);
  return socket;
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const commands = {
  // Connect and wait for the namespace's CONNECT (or its error packet).
  async connect({ client, url, version = 2, transports = ["polling", "websocket"], query, events = [], forceBase64 = false }) {
    if (sockets.has(client)) throw new Error(`client ${client} exists`);
    const socket = libraries[version](url, {
      transports,
      query,
      forceNew: true,
      forceBase64,
      reconnection: false,
    });
    sockets.set(client, socket);
    for (const event of events) {
      socket.on(event, (...args) => out({ recv: { client, event, args } }));
    }
    socket.on("disconnect", (reason) => out({ disconnect: { client, reason } }));
    await withTimeout(
      new Promise((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("error", (err) => reject(new Error(`error packet: ${JSON.stringify(err)}`)));
        socket.once("connect_error", (err) => reject(new Error(`connect_error: ${err && err.message}`)));
      }),
      10000,
      "connect",
    );
    return { id: socket.id, engineId: socket.io.engine.id };
  },
  // Connect expecting the server to refuse: what the client was told.
  async refused({ client, url, version = 2, transports = ["polling"], query }) {
    const socket = libraries[version](url, { transports, query, forceNew: true, reconnection: false });
    try {
      return await withTimeout(
        new Promise((resolve) => {
          socket.once("connect", () => resolve({ connected: true }));
          socket.once("error", (err) => resolve({ error: err }));
          socket.once("connect_error", (err) => resolve({ connectError: String(err && (err.description || err.message)) }));
        }),
        10000,
        `refused ${client}`,
      );
    } finally {
      socket.close();
    }
  },
  async transport({ client }) {
    return socketOf(client).io.engine.transport.name;
  },
  // Emit with an ack and return the ack's arguments.
  async call({ client, event, args = [] }) {
    const socket = socketOf(client);
    return withTimeout(
      new Promise((resolve) => socket.emit(event, ...args, (...reply) => resolve(reply))),
      10000,
      `ack of ${event}`,
    );
  },
  // Answer the server's `event` with an ack: the arguments it sent, and `reply`.
  async answer({ client, event, reply }) {
    socketOf(client).on(event, (...args) => {
      const ack = args.pop();
      out({ recv: { client, event, args } });
      ack(reply);
    });
    return null;
  },
  async close({ client }) {
    socketOf(client).close();
    sockets.delete(client);
    return null;
  },
  // engine.io 6's parser-v3: packets -> payload (base64 of the bytes, and whether binary)
  async encodePayload({ packets, supportsBinary }) {
    return new Promise((resolve) =>
      parserV3.encodePayload(packets, supportsBinary, (data) =>
        resolve(
          typeof data === "string"
            ? { binary: false, base64: Buffer.from(data, "utf8").toString("base64") }
            : { binary: true, base64: data.toString("base64") },
        ),
      ),
    );
  },
  // ... and payload -> packets (null if the parser reports an error)
  async decodePayload({ base64, binary }) {
    const bytes = Buffer.from(base64, "base64");
    const packets = [];
    let failed = false;
    parserV3.decodePayload(binary ? bytes : bytes.toString("utf8"), (packet) => {
      if (packet.type === "error") failed = true;
      else packets.push(packet);
    });
    return failed ? null : packets;
  },
};

serveCommands(
  commands,
  out,
  () => {
    for (const socket of sockets.values()) socket.close();
    process.exit(0);
  },
  decode,
);
out({ ready: true });
