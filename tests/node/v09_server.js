// A real socket.io 0.9.19 server on RedisStore, with socket.io-client 0.9.16 clients of its
// own, for tests/integration/test_store_09.py: a member of the 0.9 fleet our master joins.
//
// Usage: node v09_server.js PORT REDIS_PORT
// Namespaces: '' (io.sockets) and '/chat'. The store's three Redis clients are node-redis 0.7
// (socket.io 0.9's own dependency), packing with JSON (no msgpack module installed).
//
// stdin:  one JSON command per line, {"id": n, "cmd": "...", ...args}
// stdout: one JSON object per line:
//   {"ready": {"port", "nodeId"}}                       once every store channel is subscribed
//   {"id": n, "ok": result} | {"id": n, "error": "message"}   the answer to command n
//   {"recv": {"client", "event", "args"}}               an event a client received
// Logs go to stderr. The process exits when stdin closes.
"use strict";
const http = require("http");
const { serveCommands } = require("./commands");
const sio = require("socket.io-v09");
const redis = require("socket.io-v09/node_modules/redis");
const clientLib = require("socket.io-client-v09");

const [port, redisPort] = process.argv.slice(2).map(Number);
const CHANNELS = 13; // every channel Manager.initStore subscribes

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const server = http.createServer();
const io = sio.listen(server, { "log level": 1 });
const clients = [redis.createClient(redisPort, "127.0.0.1"), null, null];
clients[1] = redis.createClient(redisPort, "127.0.0.1");
clients[2] = redis.createClient(redisPort, "127.0.0.1");
for (const c of clients) c.on("error", (err) => console.error(`redis: ${err.message}`));
const store = new sio.RedisStore({
  redis,
  redisPub: clients[0],
  redisSub: clients[1],
  redisClient: clients[2],
});
clients[1].on("subscribe", (channel, count) => {
  if (count === CHANNELS) {
    server.listen(port, "127.0.0.1", () => out({ ready: { port, nodeId: store.nodeId } }));
  }
});
io.set("store", store);
io.set("transports", ["websocket"]);
io.of("/chat"); // served, so our sockets' /chat dispatches have a namespace here

const sockets = new Map(); // client name -> socket.io-client SocketNamespace

function nsp(name) {
  return name === "/" || !name ? io.sockets : io.of(name);
}

function socketOf(client) {
  const socket = sockets.get(client);
  if (!socket) throw new Error(`no client ${client}`);
  return socket;
}

function serverSocket(client, namespace) {
  const id = socketOf(client).socket.sessionid;
  const socket = nsp(namespace).sockets[id];
  if (!socket) throw new Error(`no server socket for ${client}`);
  return socket;
}

const commands = {
  // a 0.9 client of this server in `nsp`, listening to `events`; answers its session id
  connect: ({ client, nsp: namespace = "/", events = [] }) =>
    new Promise((resolve, reject) => {
      const path = namespace === "/" ? "" : namespace;
      const socket = clientLib.connect(`http://127.0.0.1:${port}${path}`, {
        "force new connection": true,
        transports: ["websocket"],
        reconnect: false,
      });
      for (const event of events) {
        socket.on(event, (...args) => out({ recv: { client, event, args } }));
      }
      socket.on("connect", () => {
        sockets.set(client, socket);
        resolve(socket.socket.sessionid);
      });
      socket.on("error", (err) => reject(new Error(String(err))));
    }),
  close: ({ client }) => {
    socketOf(client).socket.disconnect();
    sockets.delete(client);
  },
  join: ({ client, nsp: namespace = "/", room }) => {
    serverSocket(client, namespace).join(room);
  },
  leave: ({ client, nsp: namespace = "/", room }) => {
    serverSocket(client, namespace).leave(room);
  },
  // io.of(nsp).in(room).except(...).emit(event, ...args); room null: the whole namespace
  emit: ({ nsp: namespace = "/", room = null, except = [], event, args = [], volatile = false }) => {
    let target = nsp(namespace);
    if (volatile) target = target.volatile;
    if (room !== null) target = target.in(room);
    for (const id of except) target = target.except(id);
    target.emit(event, ...args);
  },
  // socket.broadcast.to(room).emit(...) from a client's server-side socket
  broadcast_from: ({ client, nsp: namespace = "/", room = "", event, args = [] }) => {
    serverSocket(client, namespace).broadcast.to(room).emit(event, ...args);
  },
  // io.of(nsp).socket(id).emit(...): any socket id, held here or not
  emit_socket: ({ nsp: namespace = "/", sid, event, args = [] }) => {
    nsp(namespace).socket(sid).emit(event, ...args);
  },
  // the ids io.of(nsp).clients(room) lists (room null: the namespace)
  clients: ({ nsp: namespace = "/", room = null }) =>
    nsp(namespace)
      .clients(room === null ? undefined : room)
      .map((socket) => socket.id)
      .sort(),
};

serveCommands(commands, out, () => process.exit(0));
process.on("disconnect", () => process.exit(0));
