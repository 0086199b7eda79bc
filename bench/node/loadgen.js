// The load generator of bench/peers.py: C websocket clients speaking engine.io v4 frames
// directly (about twice as light as socket.io-client), spread over the given ports; client i
// joins room r{i % rooms} and waits for the ack. Prints "READY <json sids>" once all joined.
// Commands on stdin, one per line:
//   STATS -> prints one JSON line {received, latencies_ms} and resets both
//   QUIT  -> closes every client and exits
// A received event whose first argument has "t" (ms since the epoch, as a float) adds
// now - t to the latencies (the publisher and this process share the machine's clock).
// With "eio": 3 the clients speak Engine.IO 3 as socket.io-client 2.x does (the server puts
// them in "/" unasked; they ping every pingInterval), for a server run with --allow-eio3.
// With "eio": 1 they speak socket.io 0.9's protocol 1 as socket.io-client 0.9 does over its
// websocket (GET /socket.io/1/ handshake, then /socket.io/1/websocket/<sid>; heartbeats
// echoed), for a server run with --allow-v09.
// Usage: node loadgen.js '{"ports":[8000,8001],"clients":200,"rooms":20}'
"use strict";
const WebSocket = require("ws");
const http = require("http");
const readline = require("readline");
const { performance } = require("perf_hooks");

const config = JSON.parse(process.argv[2]);
const eio = config.eio || 4;
const now = () => performance.timeOrigin + performance.now();
let received = 0;
let latencies = [];
const sockets = [];

function handshake(port) {
  return new Promise((resolve, reject) => {
    http
      .get(`http://127.0.0.1:${port}/socket.io/1/?t=${Date.now()}`, (res) => {
        let body = "";
        res.on("data", (chunk) => (body += chunk));
        res.on("end", () => (res.statusCode === 200 ? resolve(body.split(":")[0]) : reject(new Error(body))));
      })
      .on("error", reject);
  });
}

// A protocol 1 (socket.io 0.9) client: the handshake, its websocket, the join with an ack.
async function connectV09(i) {
  const port = config.ports[i % config.ports.length];
  const sid = await handshake(port);
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/socket.io/1/websocket/${sid}`, {
      perMessageDeflate: false,
    });
    ws.on("error", reject);
    ws.on("message", (buffer) => {
      const text = buffer.toString();
      if (text.startsWith("5:")) {
        received++;
        const at = text.indexOf('"t":');
        if (at > 0) latencies.push(now() - parseFloat(text.slice(at + 4)));
      } else if (text === "2::") {
        ws.send("2::");
      } else if (text === "1::") {
        ws.send(`5:1+::{"name":"join","args":["r${i % config.rooms}"]}`);
      } else if (text.startsWith("6:::1")) {
        resolve(sid);
      }
    });
    sockets.push(ws);
  });
}

function connect(i) {
  if (eio === 1) return connectV09(i);
  return new Promise((resolve, reject) => {
    const port = config.ports[i % config.ports.length];
    const ws = new WebSocket(`ws://127.0.0.1:${port}/socket.io/?EIO=${eio}&transport=websocket`, {
      perMessageDeflate: false,
    });
    let sid = null;
    let engineId = null;
    ws.on("error", reject);
    ws.on("message", (buffer) => {
      const text = buffer.toString();
      if (text.startsWith("42")) {
        received++;
        const at = text.indexOf('"t":');
        if (at > 0) latencies.push(now() - parseFloat(text.slice(at + 4)));
      } else if (text === "2") {
        ws.send("3");
      } else if (text.startsWith("0")) {
        const open = JSON.parse(text.slice(1));
        engineId = open.sid;
        if (eio === 3) {
          const pinger = setInterval(() => ws.send("2"), open.pingInterval);
          pinger.unref();
          ws.on("close", () => clearInterval(pinger));
        } else {
          ws.send("40");
        }
      } else if (text.startsWith("40")) {
        sid = eio === 3 ? engineId : JSON.parse(text.slice(2)).sid; // v3: the engine.io id
        ws.send(`421["join","r${i % config.rooms}"]`);
      } else if (text.startsWith("431")) {
        resolve(sid);
      }
    });
    sockets.push(ws);
  });
}

async function main() {
  const sids = [];
  for (let start = 0; start < config.clients; start += 50) {
    const batch = [];
    for (let i = start; i < Math.min(start + 50, config.clients); i++) batch.push(connect(i));
    sids.push(...(await Promise.all(batch)));
  }
  console.log("READY " + JSON.stringify(sids));
  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    if (line === "STATS") {
      console.log(JSON.stringify({ received, latencies_ms: latencies }));
      received = 0;
      latencies = [];
    } else if (line === "QUIT") {
      for (const ws of sockets) ws.terminate();
      process.exit(0);
    }
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
