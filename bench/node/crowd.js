// The clients of bench/ten_thousand.py: thousands of websocket clients speaking engine.io v4
// frames (as loadgen.js), which, unlike loadgen.js's, reconnect by themselves and account for
// every numbered broadcast and probe they get.
//
// This process holds clients first .. first+count-1 of the whole crowd. Client i connects to
// ports[i % ports.length] from the loopback source address sources[floor(i / ports.length) %
// sources.length] (the kernel's ephemeral ports are per source address once a client binds
// one) and joins room r{i % rooms}; it is "joined" once the join is acknowledged.
//
// Reconnection is socket.io-client's (its Manager and Backoff, default options): after a
// connection drops, or an attempt fails, the next attempt waits min(1000 * 2^n, 5000) ms, the
// product spread by +-50% at random (n: attempts since the last drop, 0 first), so the first
// reconnection comes 0.5-1.5 s after the drop; an attempt not joined within timeoutMs (20 s,
// socket.io-client's `timeout`) is aborted and counts as failed. The first connection of
// every client is made at once (no delay), at most `window` clients being on their first
// connection at any moment.
//
// Messages it understands (the first argument of an event):
//   {"b": n, "t": ms}  broadcast n of TRACK's count; now - t (ms since the epoch, the
//                      publisher's clock, which is this machine's) is its latency
//   {"p": i}           a probe addressed to client i (by its sid): marks i as routed
// Commands on stdin, one per line; each answers one JSON line on stdout:
//   CONNECT    start connecting every client                     -> {}
//   STATUS     joined, on their first connection, failed attempts by reason, drops, times
//   TRACK n    expect broadcasts 0..n-1 from now (counters reset) -> {}
//   COUNT      {distinct, duplicates, unknown}
//   BROADCASTS the counts, every first-arrival latency (ms) and each broadcast's largest
//   CONNECTS   [ms, ...]: each joined client's first connection, from its first attempt to
//              its join acknowledged (failed attempts and their backoff included)
//   MARK       start a reconnect storm: drops are recorded from now  -> {at}
//   DROP       every joined client drops its connection at once (a storm made by the clients:
//              each then reconnects with the backoff, as after a network blip) -> {dropped}
//   STORM      {dropped, down, routed, misrouted, failures, fresh: [[i, sid], ...] joined again
//              and routed_new: [i, ...] probed, both since the last call}
//   STORMLOG   [[i, port, downAt, rejoinedAt, routedAt, attempts, lastAttemptAt], ...] of every
//              dropped client (lastAttemptAt: the start of the attempt that joined it again)
//   QUIT       close every client and exit
// Usage: node crowd.js '{"ports":[...],"first":0,"count":5000,"rooms":20,"sources":[...],
//                        "window":500,"timeoutMs":20000}'
"use strict";
const WebSocket = require("ws");
const readline = require("readline");
const { performance } = require("perf_hooks");

const config = JSON.parse(process.argv[2]);
const BACKOFF = { min: 1000, max: 5000, jitter: 0.5 };
const now = () => performance.timeOrigin + performance.now();

function backoff(attempt) {
  let ms = BACKOFF.min * 2 ** attempt;
  const rand = Math.random();
  const deviation = Math.floor(rand * BACKOFF.jitter * ms);
  ms = (Math.floor(rand * 10) & 1) === 0 ? ms - deviation : ms + deviation;
  return Math.min(ms, BACKOFF.max) | 0;
}

const state = {
  quitting: false,
  startedAt: 0,
  lastFirstJoinAt: 0,
  firstPending: 0, // clients on their first connection
  waiting: [], // clients whose first connection has not started (the window is full)
  failures: {}, // failed attempts by reason
  drops: 0, // joined connections that dropped
  // broadcasts (TRACK)
  tracked: 0,
  counts: new Uint8Array(0),
  latencies: new Float64Array(0),
  latencyCount: 0,
  slowest: new Float64Array(0),
  duplicates: 0,
  unknown: 0,
  // reconnect storm (MARK)
  marked: false,
  dropped: new Set(),
  fresh: [],
  routed: 0,
  routedNew: [],
  misrouted: 0,
};

class Client {
  constructor(i) {
    this.i = i;
    this.index = i - config.first;
    this.port = config.ports[i % config.ports.length];
    this.source = config.sources[Math.floor(i / config.ports.length) % config.sources.length];
    this.room = `r${i % config.rooms}`;
    this.ws = null;
    this.sid = null;
    this.joined = false;
    this.everJoined = false;
    this.attempts = 0;
    this.openedAt = 0; // the last attempt's start
    this.firstOpenAt = 0;
    this.firstJoinMs = -1;
    this.reason = null;
    this.downAt = 0;
    this.rejoinedAt = 0;
    this.routedAt = 0;
    this.stormAttempts = 0;
  }

  open() {
    if (state.quitting) return;
    this.stormAttempts++;
    this.openedAt = now();
    if (!this.firstOpenAt) this.firstOpenAt = this.openedAt;
    this.reason = null;
    const ws = new WebSocket(`ws://127.0.0.1:${this.port}/socket.io/?EIO=4&transport=websocket`, {
      perMessageDeflate: false,
      localAddress: this.source,
      handshakeTimeout: config.timeoutMs,
    });
    this.ws = ws;
    const guard = setTimeout(() => {
      this.reason = "timeout";
      ws.terminate();
    }, config.timeoutMs);
    ws.on("error", (err) => {
      this.reason = this.reason || err.code || err.message;
    });
    ws.on("message", (data) => {
      if (ws === this.ws) this.onMessage(ws, data.toString(), guard);
    });
    ws.on("close", () => {
      clearTimeout(guard);
      if (ws === this.ws) this.onClose();
    });
  }

  onMessage(ws, text, guard) {
    if (text.startsWith("42")) {
      this.onEvent(JSON.parse(text.slice(2))[1]);
    } else if (text === "2") {
      ws.send("3");
    } else if (text.startsWith("0")) {
      ws.send("40");
    } else if (text.startsWith("40")) {
      this.sid = JSON.parse(text.slice(2)).sid;
      ws.send(`420["join","${this.room}"]`);
    } else if (text.startsWith("430")) {
      clearTimeout(guard);
      this.onJoined();
    } else if (text.startsWith("44")) {
      this.reason = "connect_error";
      ws.terminate();
    }
  }

  onJoined() {
    this.joined = true;
    const at = now();
    if (!this.everJoined) {
      this.everJoined = true;
      this.firstJoinMs = at - this.firstOpenAt;
      state.lastFirstJoinAt = at;
      state.firstPending--;
      startWaiting();
    }
    if (state.marked && state.dropped.has(this.i)) {
      this.rejoinedAt = at;
      state.fresh.push([this.i, this.sid]);
    }
  }

  onClose() {
    const wasJoined = this.joined;
    this.ws = null;
    this.sid = null;
    this.joined = false;
    if (state.quitting) return;
    if (wasJoined) {
      state.drops++;
      this.attempts = 0;
      if (state.marked) {
        if (this.routedAt) state.routed--;
        state.dropped.add(this.i);
        this.downAt = now();
        this.rejoinedAt = 0;
        this.routedAt = 0;
        this.stormAttempts = 0;
      }
    } else {
      const reason = this.reason || "closed";
      state.failures[reason] = (state.failures[reason] || 0) + 1;
    }
    setTimeout(() => this.open(), backoff(this.attempts++));
  }

  onEvent(data) {
    if (data === null || typeof data !== "object") return;
    if (data.b !== undefined) {
      const b = data.b;
      if (!Number.isInteger(b) || b < 0 || b >= state.tracked) {
        state.unknown++;
        return;
      }
      const slot = this.index * state.tracked + b;
      if (state.counts[slot]++ > 0) {
        state.duplicates++;
        if (state.counts[slot] === 0) state.counts[slot] = 255; // stays counted as seen
        return;
      }
      const latency = now() - data.t;
      state.latencies[state.latencyCount++] = latency;
      if (latency > state.slowest[b]) state.slowest[b] = latency;
    } else if (data.p !== undefined) {
      if (data.p !== this.i) {
        state.misrouted++;
      } else if (state.marked && state.dropped.has(this.i) && !this.routedAt && this.joined) {
        this.routedAt = now();
        state.routed++;
        state.routedNew.push(this.i);
      }
    }
  }
}

const clients = [];
for (let i = config.first; i < config.first + config.count; i++) clients.push(new Client(i));

function startWaiting() {
  while (state.waiting.length && state.firstPending < config.window) {
    state.firstPending++;
    state.waiting.pop().open();
  }
}

const commands = {
  CONNECT() {
    state.startedAt = now();
    state.waiting = clients.slice().reverse();
    startWaiting();
    return {};
  },
  STATUS() {
    let joined = 0;
    for (const c of clients) if (c.joined) joined++;
    return {
      clients: clients.length,
      joined,
      first_pending: state.firstPending + state.waiting.length,
      failures: state.failures,
      drops: state.drops,
      started_at: state.startedAt,
      last_first_join_at: state.lastFirstJoinAt,
    };
  },
  TRACK(n) {
    state.tracked = n;
    state.counts = new Uint8Array(clients.length * n);
    state.latencies = new Float64Array(clients.length * n);
    state.latencyCount = 0;
    state.slowest = new Float64Array(n);
    state.duplicates = 0;
    state.unknown = 0;
    return {};
  },
  COUNT() {
    return { distinct: state.latencyCount, duplicates: state.duplicates, unknown: state.unknown };
  },
  BROADCASTS() {
    const latencies = Array.from(state.latencies.subarray(0, state.latencyCount), (v) =>
      Math.round(v * 100) / 100,
    );
    return {
      ...commands.COUNT(),
      latencies_ms: latencies,
      slowest_ms: Array.from(state.slowest, (v) => Math.round(v * 100) / 100),
    };
  },
  CONNECTS() {
    return clients.filter((c) => c.everJoined).map((c) => Math.round(c.firstJoinMs * 100) / 100);
  },
  DROP() {
    let dropped = 0;
    for (const c of clients) {
      if (c.joined && c.ws) {
        c.ws.terminate();
        dropped++;
      }
    }
    return { dropped };
  },
  MARK() {
    state.marked = true;
    state.dropped.clear();
    state.fresh = [];
    state.routed = 0;
    state.routedNew = [];
    state.misrouted = 0;
    return { at: now() };
  },
  STORM() {
    let down = 0;
    for (const c of clients) if (!c.joined) down++;
    const answer = {
      dropped: state.dropped.size,
      down,
      routed: state.routed,
      misrouted: state.misrouted,
      failures: state.failures,
      fresh: state.fresh,
      routed_new: state.routedNew,
    };
    state.fresh = [];
    state.routedNew = [];
    return answer;
  },
  STORMLOG() {
    return [...state.dropped].map((i) => {
      const c = clients[i - config.first];
      return [i, c.port, c.downAt, c.rejoinedAt, c.routedAt, c.stormAttempts, c.openedAt];
    });
  },
  QUIT() {
    state.quitting = true;
    for (const c of clients) if (c.ws) c.ws.terminate();
    process.exit(0);
  },
};

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const [name, arg] = line.trim().split(" ");
  const command = commands[name];
  const answer = command ? command(Number(arg)) : { error: `unknown command ${name}` };
  process.stdout.write(JSON.stringify(answer) + "\n");
});
process.stdin.on("end", () => commands.QUIT());
