// Binary values across the JSON line protocol between the Python tests and the Node
// scripts: a Buffer travels as {"$bin": "<hex>"}.
"use strict";

function encode(value) {
  if (Buffer.isBuffer(value)) return { $bin: value.toString("hex") };
  if (ArrayBuffer.isView(value)) {
    return { $bin: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("hex") };
  }
  if (value instanceof ArrayBuffer) return { $bin: Buffer.from(value).toString("hex") };
  if (value instanceof Set) return [...value].map(encode);
  if (Array.isArray(value)) return value.map(encode);
  if (value && typeof value === "object" && !(value instanceof Date)) {
    const copy = {};
    for (const [k, v] of Object.entries(value)) copy[k] = encode(v);
    return copy;
  }
  return value;
}

function decode(value) {
  if (Array.isArray(value)) return value.map(decode);
  if (value && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$bin") return Buffer.from(value.$bin, "hex");
    const copy = {};
    for (const [k, v] of Object.entries(value)) copy[k] = decode(v);
    return copy;
  }
  return value;
}

module.exports = { encode, decode };
