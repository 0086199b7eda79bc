// socket.io 0.9's two protocol 1 parsers (the server's and the client's), for the codec tests:
// reads one JSON request on stdin, {encode: [packet objects], decode: [strings],
// encodePayload: [[strings]], decodePayload: [strings]}, and writes, for each parser, what it
// makes of every item: {server: {...}, client: {...}}.
'use strict';
const server = require('socket.io-v09/lib/parser');
const client = require('socket.io-client-v09').parser;

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  const request = JSON.parse(input);
  const run = (parser) => ({
    encode: request.encode.map((p) => parser.encodePacket(p)),
    decode: request.decode.map((s) => parser.decodePacket(s)),
    encodePayload: request.encodePayload.map((list) => parser.encodePayload(list)),
    decodePayload: request.decodePayload.map((s) => parser.decodePayload(s)),
  });
  process.stdout.write(JSON.stringify({ server: run(server), client: run(client) }));
});
