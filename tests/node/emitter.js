// Publishes with the real @socket.io/redis-emitter 5.x, for tests/test_node_interop.py.
//
// Usage: node emitter.js REDIS_URL ACTIONS_JSON
// ACTIONS_JSON is a list, carried out in order, each one of:
//   {"op": "emit", "nsp"?, "to"?, "except"?, "volatile"?, "event", "args"?}
//   {"op": "socketsJoin" | "socketsLeave", "nsp"?, "to"?, "except"?, "rooms"}
//   {"op": "disconnectSockets", "nsp"?, "to"?, "except"?, "close"?}
//   {"op": "serverSideEmit", "nsp"?, "args"}
// Binary values are written {"$bin": "<hex>"}. Prints "done" once every publish was sent,
// then exits.
"use strict";
const { createClient } = require("redis");
const { Emitter } = require("@socket.io/redis-emitter");
const { decode } = require("./binary");

async function main() {
  const [url, actionsJson] = process.argv.slice(2);
  const client = createClient({ url });
  client.on("error", (err) => console.error(`redis: ${err.message}`));
  await client.connect();
  const root = new Emitter(client);
  for (const action of decode(JSON.parse(actionsJson))) {
    const emitter = action.nsp ? root.of(action.nsp) : root;
    if (action.op === "serverSideEmit") {
      emitter.serverSideEmit(...action.args);
      continue;
    }
    let op = emitter;
    if (action.to !== undefined) op = op.to(action.to);
    if (action.except !== undefined) op = op.except(action.except);
    if (action.volatile) op = op.volatile;
    if (action.op === "emit") op.emit(action.event, ...(action.args || []));
    else if (action.op === "socketsJoin") op.socketsJoin(action.rooms);
    else if (action.op === "socketsLeave") op.socketsLeave(action.rooms);
    else if (action.op === "disconnectSockets") op.disconnectSockets(action.close);
    else throw new Error(`unknown op ${action.op}`);
  }
  await client.quit(); // QUIT is answered after every PUBLISH queued before it
  console.log("done");
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
