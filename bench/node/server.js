// The Node.js peer of bench/peers.py: socket.io 4.x with @socket.io/redis-adapter 8.x,
// one process per port, the same tiny app as the other systems (a "join" event). It listens
// on 127.0.0.1 only, as our workers do by default.
// Usage: node server.js PORT REDIS_URL
"use strict";
const { createServer } = require("http");
const { Server } = require("socket.io");
const { createClient } = require("redis");
const { createAdapter } = require("@socket.io/redis-adapter");

async function main() {
  const [port, url] = [Number(process.argv[2]), process.argv[3]];
  const pub = createClient({ url });
  const sub = pub.duplicate();
  for (const client of [pub, sub]) client.on("error", (err) => console.error(`redis: ${err.message}`));
  await Promise.all([pub.connect(), sub.connect()]);
  const http = createServer();
  const io = new Server(http, { transports: ["websocket"], adapter: createAdapter(pub, sub) });
  io.on("connection", (socket) => {
    socket.on("join", (room, ack) => {
      socket.join(room);
      if (typeof ack === "function") ack(true);
    });
  });
  http.listen(port, "127.0.0.1");
  process.on("SIGTERM", () => io.close(() => process.exit(0)));
  console.log("READY");
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
