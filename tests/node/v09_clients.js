// socket.io-client 0.9.16 clients (Socket.IO protocol 1) for tests/integration/test_v09_clients.py.
//
// stdin:  one JSON command per line, {"id": n, "cmd": "...", ...args}
// stdout: one JSON object per line:
//   {"ready": true}                                   once
//   {"id": n, "ok": result} | {"id": n, "error": "message"}   the answer to command n
//   {"recv": {"client", "event", "args"}}             an event a client listens to arrived
//   {"disconnect": {"client", "reason"}}              a client lost its connection
// A client is one namespace of one connection: "connect" opens a connection (its "/"), "of"
// adds a namespace of an open connection as another client. The process exits when stdin closes.
"use strict";
const { serveCommands } = require("./commands");
const sio09 = require("socket.io-client-v09");

const clients = new Map(); // name -> a socket.io-client 0.9 SocketNamespace
const held = new Map(); // name -> the xhr-polling GET "hold" kept from being sent

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function clientOf(name) {
  const client = clients.get(name);
  if (!client) throw new Error(`no client ${name}`);
  return client;
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function listen(name, client, events) {
  for (const event of events) {
    client.on(event, (...args) => out({ recv: { client: name, event, args } }));
  }
  client.on("disconnect", (reason) => out({ disconnect: { client: name, reason: reason || null } }));
}

// 0.9 deep-merges its options: a transports array shorter than its default one is merged over
// it element by element, the default's tail kept. Padding with the last choice avoids that.
function padded(transports) {
  const missing = Math.max(0, sio09.transports.length - transports.length);
  return transports.concat(Array(missing).fill(transports[transports.length - 1]));
}

function connected(client, what) {
  return withTimeout(
    new Promise((resolve, reject) => {
      client.once("connect", resolve);
      client.once("connect_failed", (reason) => reject(new Error(`connect_failed: ${reason}`)));
      client.once("error", (reason) => reject(new Error(`error: ${reason}`)));
    }),
    10000,
    what,
  );
}

const commands = {
  // Handshake, open the transport, and wait for the "/" connect; the session id.
  async connect({ client, url, transports = ["websocket"], query = "", events = [] }) {
    if (clients.has(client)) throw new Error(`client ${client} exists`);
    const socket = sio09.connect(url, {
      transports: padded(transports),
      query,
      "force new connection": true,
      reconnect: false,
    });
    clients.set(client, socket);
    listen(client, socket, events);
    await connected(socket, `connect ${client}`);
    return { id: socket.socket.sessionid, transport: socket.socket.transport.name };
  },
  // The handshake refused: what the client was told.
  async refused({ url, transports = ["websocket"], query = "" }) {
    const socket = sio09.connect(url, {
      transports: padded(transports),
      query,
      "force new connection": true,
      reconnect: false,
    });
    return withTimeout(
      new Promise((resolve) => {
        socket.once("connect", () => resolve({ connected: true }));
        socket.once("error", (reason) => resolve({ error: String(reason) }));
      }),
      10000,
      "refused",
    );
  },
  // Another namespace of `of`'s connection, as client `client`.
  async of({ client, on, namespace, events = [] }) {
    const ns = clientOf(on).socket.of(namespace);
    clients.set(client, ns);
    listen(client, ns, events);
    await connected(ns, `connect ${client}`);
    return null;
  },
  // Emit with an ack and return the ack's arguments.
  async call({ client, event, args = [] }) {
    const socket = clientOf(client);
    return withTimeout(
      new Promise((resolve) => socket.emit(event, ...args, (...reply) => resolve(reply))),
      10000,
      `ack of ${event}`,
    );
  },
  async emit({ client, event, args = [] }) {
    clientOf(client).emit(event, ...args);
    return null;
  },
  async send({ client, data }) {
    clientOf(client).send(data);
    return null;
  },
  async json({ client, data }) {
    clientOf(client).json.send(data);
    return null;
  },
  // Raw protocol 1 text on the client's transport (a malformed frame, say).
  async raw({ client, text }) {
    clientOf(client).socket.transport.send(text);
    return null;
  },
  // Answer the server's `event` with an ack: the arguments it sent, and `reply`.
  async answer({ client, event, reply }) {
    clientOf(client).on(event, (...args) => {
      const ack = args.pop();
      out({ recv: { client, event, args } });
      ack(reply);
    });
    return null;
  },
  // Keep the client's next xhr-polling GET from being sent: resolves once its transport wants
  // to poll again, so that no GET of it is pending until "release".
  async hold({ client }) {
    const transport = clientOf(client).socket.transport;
    return withTimeout(
      new Promise((resolve) => {
        transport.get = function () {
          delete transport.get; // the prototype's again
          held.set(client, () => transport.get());
          resolve(null);
        };
      }),
      10000,
      `hold ${client}`,
    );
  },
  async release({ client }) {
    const poll = held.get(client);
    held.delete(client);
    poll();
    return null;
  },
  async close({ client }) {
    const socket = clientOf(client);
    clients.delete(client);
    if (socket.name === "") socket.socket.disconnect();
    else socket.disconnect();
    return null;
  },
};

serveCommands(commands, out, () => {
  for (const client of clients.values()) {
    if (client.name === "" && client.socket.connected) client.socket.disconnect();
  }
  process.exit(0);
});
out({ ready: true });
