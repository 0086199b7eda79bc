// A real Node.js member of the cluster for tests/test_node_interop.py: socket.io 4.8 with
// @socket.io/redis-adapter 8.3 (node-redis v4 clients, as the adapter's docs show), plus
// socket.io-client clients, all driven from Python over a line protocol.
//
// Usage: node peer.js PORT REDIS_URL [REQUESTS_TIMEOUT_MS] [ADAPTER]
// ADAPTER: "classic" (createAdapter, the default) or "sharded[:MODE]" (createShardedAdapter,
// Redis >= 7, node-redis clients as the adapter's docs show; MODE is its subscriptionMode).
//
// stdin:  one JSON command per line, {"id": n, "cmd": "...", ...args}
// stdout: one JSON object per line:
//   {"ready": {"port", "uids": {nsp: adapter uid}}}   once, when every subscription is active
//   {"id": n, "ok": result} | {"id": n, "error": "message"}   the answer to command n
//   {"recv": {"client", "nsp", "event", "args"}}      an event a client received
//   {"disconnect": {"client", "nsp", "reason"}}       a client was disconnected
//   {"server_event": {"nsp", "event", "args"}}        a serverSideEmit this server received
// Binary values travel as {"$bin": "<hex>"} both ways. Logs go to stderr.
// The process exits when stdin closes or its parent dies.
"use strict";
const http = require("http");
const { serveCommands } = require("./commands");
const { Server } = require("socket.io");
const { io: connectClient } = require("socket.io-client");
const { createClient, createCluster } = require("redis");
const { Cluster } = require("ioredis");
const { createAdapter, createShardedAdapter } = require("@socket.io/redis-adapter");
const { encode, decode } = require("./binary");

const NAMESPACES = ["/", "/chat"];
const SUB_NAME = `sio-node-peer-${process.pid}-sub`;

function out(obj) {
  process.stdout.write(JSON.stringify(encode(obj)) + "\n");
}

function describeSocket(socket) {
  // a local Socket or a RemoteSocket (fetched from another server): the same fields
  const { sessionStore, ...handshake } = socket.handshake || {};
  const parsed = handshake && typeof handshake.time === "string" ? Date.parse(handshake.time) : NaN;
  return {
    id: socket.id,
    local: !!socket.server,
    rooms: [...socket.rooms],
    handshake,
    data: socket.data,
    timeParsedMs: Number.isNaN(parsed) ? null : parsed,
  };
}

// One Redis (node-redis), or a Redis Cluster named "redis+cluster://host:port,..." (ioredis
// Cluster, which the adapter counts servers on over every node). clientLists() gives the
// CLIENT LIST of every node, to see when the adapter's subscriptions are active.
async function connectRedis(url) {
  if (url.startsWith("redis+cluster://")) {
    const seeds = url.slice("redis+cluster://".length).split(",").map((hostPort) => {
      const [host, port] = hostPort.split(":");
      return { host, port: Number(port) };
    });
    const pub = new Cluster(seeds);
    const sub = new Cluster(seeds, { redisOptions: { connectionName: SUB_NAME } });
    for (const c of [pub, sub]) c.on("error", (err) => console.error(`redis: ${err.message}`));
    await Promise.all([pub, sub].map((c) => new Promise((r) => c.once("ready", r))));
    const clientLists = () => Promise.all(pub.nodes("all").map((n) => n.call("CLIENT", "LIST")));
    return { pub, sub, clientLists };
  }
  const pub = createClient({ url });
  const sub = createClient({ url, name: SUB_NAME });
  for (const c of [pub, sub]) c.on("error", (err) => console.error(`redis: ${err.message}`));
  await Promise.all([pub.connect(), sub.connect()]);
  return { pub, sub, clientLists: async () => [await pub.sendCommand(["CLIENT", "LIST"])] };
}

// The sharded adapter on node-redis: one client, or a cluster (createCluster, which sends
// each SSUBSCRIBE to the node owning the channel's slot). Every SSUBSCRIBE the adapter
// starts is kept, so readiness (and a join's own room channel) can be awaited.
async function connectSharded(url) {
  const cluster = url.startsWith("redis+cluster://");
  const rootNodes = url
    .slice("redis+cluster://".length)
    .split(",")
    .map((hostPort) => ({ url: `redis://${hostPort}` }));
  const pub = cluster ? createCluster({ rootNodes }) : createClient({ url });
  const sub = cluster ? createCluster({ rootNodes }) : createClient({ url, name: SUB_NAME });
  for (const c of [pub, sub]) c.on("error", (err) => console.error(`redis: ${err.message}`));
  await Promise.all([pub.connect(), sub.connect()]);
  const subscribing = [];
  const sSubscribe = sub.sSubscribe.bind(sub);
  sub.sSubscribe = (...args) => {
    const done = sSubscribe(...args);
    subscribing.push(done);
    return done;
  };
  const settled = () => Promise.all(subscribing.splice(0));
  return { pub, sub, settled };
}

async function main() {
  const port = Number(process.argv[2]);
  const url = process.argv[3];
  const requestsTimeout = Number(process.argv[4] || 5000);
  const [form, subscriptionMode = "dynamic"] = (process.argv[5] || "classic").split(":");
  let adapter;
  let ready;
  let settled = async () => {};
  if (form === "sharded") {
    const sharded = await connectSharded(url);
    adapter = createShardedAdapter(sharded.pub, sharded.sub, { subscriptionMode });
    settled = sharded.settled;
    ready = settled;
  } else {
    const { pub, sub, clientLists } = await connectRedis(url);
    adapter = createAdapter(pub, sub, { requestsTimeout });
    ready = () => classicSubscriptions(clientLists);
  }

  const httpServer = http.createServer();
  const io = new Server(httpServer, { transports: ["websocket"], adapter });
  const clients = new Map(); // name -> {socket, nsp}: a socket.io-client socket of one namespace

  for (const name of NAMESPACES) {
    const nsp = io.of(name);
    nsp.on("connection", (socket) => {
      socket.data = { peer: "node", nsp: name };
    });
    nsp.on("announce", (...args) => {
      const ack = typeof args[args.length - 1] === "function" ? args.pop() : null;
      out({ server_event: { nsp: name, event: "announce", args } });
      if (ack) ack({ from: "node", args });
    });
  }

  const serverSocket = (client) => {
    const c = clients.get(client);
    return (c && c.socket.id && io.of(c.nsp).sockets.get(c.socket.id)) || null;
  };
  const socketOf = (client) => {
    const socket = serverSocket(client);
    if (!socket) throw new Error(`no server socket for client ${client}`);
    return socket;
  };
  const target = (nsp, to, except) => {
    let op = io.of(nsp);
    if (to !== undefined && to !== null) op = op.to(to);
    if (except !== undefined && except !== null) op = op.except(except);
    return op;
  };

  const commands = {
    async connect({ client, nsp = "/", url: serverUrl, auth, query, headers }) {
      if (clients.has(client)) throw new Error(`client ${client} exists`);
      const base = serverUrl || `http://127.0.0.1:${port}`;
      const socket = connectClient(base + nsp, {
        transports: ["websocket"],
        forceNew: true,
        reconnection: false,
        auth,
        query,
        extraHeaders: headers,
      });
      clients.set(client, { socket, nsp });
      socket.onAny((event, ...args) => {
        const ack = typeof args[args.length - 1] === "function" ? args.pop() : null;
        out({ recv: { client, nsp, event, args } });
        if (ack) ack({ client, event, args });
      });
      socket.on("disconnect", (reason) => out({ disconnect: { client, nsp, reason } }));
      await new Promise((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("connect_error", reject);
      });
      return { id: socket.id };
    },
    async clientEmit({ client, event, args = [] }) {
      // an event a socket.io-client client sends to its server (the Admin UI's actions)
      const c = clients.get(client);
      if (!c) throw new Error(`no client ${client}`);
      c.socket.emit(event, ...args);
      return null;
    },
    async reset() {
      // disconnect every client and wait until this server has no socket left
      for (const { socket } of clients.values()) socket.disconnect();
      clients.clear();
      const deadline = Date.now() + 5000;
      while (NAMESPACES.some((n) => io.of(n).sockets.size > 0)) {
        if (Date.now() > deadline) throw new Error("sockets still connected after reset");
        await new Promise((r) => setTimeout(r, 5));
      }
      return true;
    },
    async join({ client, room }) {
      const socket = socketOf(client);
      socket.join(room);
      await settled(); // the sharded adapter's SSUBSCRIBE of the room's channel
      return [...socket.rooms];
    },
    async leave({ client, room }) {
      const socket = socketOf(client);
      socket.leave(room);
      return [...socket.rooms];
    },
    async rooms({ client }) {
      // the client's rooms on this server, null once it is disconnected
      const socket = serverSocket(client);
      return socket ? [...socket.rooms] : null;
    },
    async localRooms({ nsp = "/" }) {
      return [...io.of(nsp).adapter.rooms.keys()];
    },
    async emit({ nsp = "/", to, except, event, args = [], flags = {} }) {
      let op = target(nsp, to, except);
      if (flags.volatile) op = op.volatile;
      if (flags.compress !== undefined) op = op.compress(flags.compress);
      return op.emit(event, ...args);
    },
    async emitWithAck({ nsp = "/", to, except, event, args = [], ackTimeout = 2000 }) {
      try {
        return { responses: await target(nsp, to, except).timeout(ackTimeout).emitWithAck(event, ...args) };
      } catch (err) {
        return { error: err.message, responses: err.responses };
      }
    },
    async fetchSockets({ nsp = "/", to, except }) {
      const sockets = await target(nsp, to, except).fetchSockets();
      return sockets.map(describeSocket);
    },
    async allRooms({ nsp = "/" }) {
      return [...(await io.of(nsp).adapter.allRooms())];
    },
    async socketsJoin({ nsp = "/", to, except, rooms }) {
      target(nsp, to, except).socketsJoin(rooms);
      return null;
    },
    async socketsLeave({ nsp = "/", to, except, rooms }) {
      target(nsp, to, except).socketsLeave(rooms);
      return null;
    },
    async disconnectSockets({ nsp = "/", to, except, close = false }) {
      target(nsp, to, except).disconnectSockets(close);
      return null;
    },
    async serverSideEmit({ nsp = "/", event, args = [] }) {
      return io.of(nsp).serverSideEmit(event, ...args);
    },
    async serverSideEmitWithAck({ nsp = "/", event, args = [] }) {
      try {
        return { responses: await io.of(nsp).serverSideEmitWithAck(event, ...args) };
      } catch (err) {
        return { error: err.message, responses: err.responses };
      }
    },
    async serverCount({ nsp = "/" }) {
      return io.of(nsp).adapter.serverCount();
    },
  };

  serveCommands(commands, out, () => process.exit(0), decode);
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) process.exit(1);
  }, 200).unref();

  await new Promise((resolve) => httpServer.listen(port, "127.0.0.1", resolve));
  await ready();
  const uids = {};
  for (const name of NAMESPACES) uids[name] = io.of(name).adapter.uid;
  out({ ready: { port, uids } });
}

// The classic adapter subscribes without telling when it is done: ready once its
// subscriptions show in CLIENT LIST, 1 pattern and 3 channels per namespace.
async function classicSubscriptions(clientLists) {
  for (;;) {
    const lists = await clientLists();
    const line = lists
      .flatMap((list) => list.split("\n"))
      .find((l) => l.includes(SUB_NAME) && / flags=P /.test(l)); // ioredis adds a prefix
    const psub = line && Number(/ psub=(\d+)/.exec(line)[1]);
    const chans = line && Number(/ sub=(\d+)/.exec(line)[1]);
    if (psub === NAMESPACES.length && chans === 3 * NAMESPACES.length) return;
    await new Promise((r) => setTimeout(r, 10));
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
