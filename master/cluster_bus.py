"""Masters of several hosts form one cluster through Redis, in the redis-adapter format.

- A worker's broadcast is published once (``[uid, packet, opts]``); every other
  master delivers it to its own sockets; our own echo is dropped by uid before
  decoding. Room channels for rooms we hold no socket of are skipped undecoded.
- Cross-host operations go out as adapter requests and come back as responses;
  a master answers as ONE server, combining its workers
  (:class:`master.host_ops.HostOperations`).
- Outbound messages wait in a bounded buffer while Redis is unreachable and are
  published on recovery; what overflows is counted (oldest dropped first).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from socketio import packet as sio_packet

from master.adapter_wire import (
    AdapterFormatError,
    Channels,
    RequestType,
    broadcast_channel,
    decode_broadcast,
    decode_request,
    encode_broadcast,
    encode_json,
    pack,
)
from master.host_ops import HostOperations
from master.metrics import Metrics
from master.ratelimit import RateLimitedLogger
from master.router import RoutingTable
from wire.frames import Kind, encode_frame

log = logging.getLogger(__name__)

REQUESTS_TIMEOUT = 5.0  # the Node adapter's default requestsTimeout
PUBLISH_BATCH = 500
SendToWorkers = Callable[[list[int], bytes], None]


@dataclass
class Pending:
    """A request we sent, waiting for answers from other servers."""

    kind: str
    expected: int
    future: asyncio.Future[Any]
    answers: list[Any] = field(default_factory=list)


def decode_parts(parts: list[Any]) -> tuple[str, list[Any]]:
    """Namespace and ``[event, *args]`` of an encoded Socket.IO packet (with attachments)."""
    pkt = sio_packet.Packet(encoded_packet=parts[0])
    for attachment in parts[1:]:
        pkt.add_attachment(attachment)
    return pkt.namespace or "/", pkt.data


def encode_parts(namespace: str, data: list[Any]) -> list[str | bytes]:
    """The Socket.IO encoding of an event, binary attachments split out."""
    encoded = sio_packet.Packet(sio_packet.EVENT, data=data, namespace=namespace).encode()
    return encoded if isinstance(encoded, list) else [encoded]


class ClusterBus:
    """This master's side of the cross-host protocol."""

    def __init__(
        self,
        redis: aioredis.Redis,
        channels: Channels,
        table: RoutingTable,
        operations: HostOperations,
        send_to_workers: SendToWorkers,
        metrics: Metrics,
        buffer_bytes: int,
    ) -> None:
        self.uid = secrets.token_hex(4)
        self.redis = redis
        self.channels = channels
        self.table = table
        self.operations = operations
        self._send_to_workers = send_to_workers
        self.metrics = metrics
        self._buffer_bytes = buffer_bytes
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._outbox_size = 0
        self._wakeup = asyncio.Event()
        self._pending: dict[str, Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._echo_prefix = b"\x93" + pack(self.uid)
        self._limiter = RateLimitedLogger(log)
        operations.remote = self

    def subscriptions(self, namespaces: list[str]) -> list[str]:
        """The exact channels to SUBSCRIBE for ``namespaces`` (requests and responses)."""
        names = []
        for namespace in namespaces:
            names += [
                self.channels.request(namespace),
                self.channels.response(namespace),
                self.channels.response(namespace, self.uid),
            ]
        return names

    # ---- publishing, with the outage buffer -------------------------------------

    def publish(self, channel: str, body: bytes) -> None:
        """Queue a publish; never blocks. Over the bound the oldest are dropped."""
        self._outbox.append((channel, body))
        self._outbox_size += len(body)
        while self._outbox_size > self._buffer_bytes and len(self._outbox) > 1:
            _, dropped = self._outbox.popleft()
            self._outbox_size -= len(dropped)
            self.metrics.redis_buffer_dropped.inc()
        self.metrics.redis_outbox.set(len(self._outbox))
        self._wakeup.set()

    async def run_publisher(self) -> None:
        """Publish queued messages in pipelined batches; hold them while Redis is away."""
        outage = False
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._outbox:
                batch = [self._outbox[i] for i in range(min(PUBLISH_BATCH, len(self._outbox)))]
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for channel, body in batch:
                            pipe.publish(channel, body)
                        await pipe.execute()
                except (RedisError, OSError) as exc:
                    if not outage:
                        log.error("publishing to Redis failed (%s); buffering", exc)
                        outage = True
                    await asyncio.sleep(0.5)
                    continue
                if outage:
                    log.warning("publishing to Redis again (%d buffered)", len(self._outbox))
                    outage = False
                for _ in batch:
                    if self._outbox:
                        _, body = self._outbox.popleft()
                        self._outbox_size -= len(body)
                self.metrics.redis_outbox.set(len(self._outbox))

    # ---- broadcasts -----------------------------------------------------------

    def relay_worker_broadcast(
        self, rooms: list[Any] | None, exclude: list[Any], parts: list[Any]
    ) -> None:
        """Publish a worker's broadcast for the other hosts."""
        namespace, data = decode_parts(parts)
        body = encode_broadcast(self.uid, namespace, data, rooms, exclude)
        self.publish(broadcast_channel(self.channels, namespace, rooms), body)

    def on_broadcast(self, channel: str, body: bytes) -> None:
        """A broadcast from another server or an emitter: deliver to our sockets."""
        if body.startswith(self._echo_prefix):
            return
        parsed = self.channels.parse_broadcast(channel)
        if parsed is None:
            return
        namespace, room = parsed
        if room and not self.table.route(namespace, [room]):
            return  # no socket of that room here: not worth decoding
        try:
            message = decode_broadcast(body)
        except AdapterFormatError as exc:
            self._unreadable(channel, exc)
            return
        if message.uid == self.uid or message.namespace != namespace:
            return
        rooms: list[Any] | None = message.rooms or None
        exclude = list(message.exclude)
        if room and rooms and len(rooms) > 1 and room in rooms:
            # old emitters publish one copy per room, each with all rooms: this copy is
            # for ``room`` only, minus the rooms listed before it, so nobody gets two
            exclude += rooms[: rooms.index(room)]
            rooms = [room]
        targets = self.table.route(namespace, rooms, exclude)
        if targets:
            parts = encode_parts(namespace, message.data)
            self._send_to_workers(
                targets, encode_frame(Kind.BROADCAST, namespace, rooms, exclude, parts)
            )

    def _unreadable(self, channel: str, exc: AdapterFormatError) -> None:
        """Count and log (rate-limited) an adapter message we cannot read."""
        self.metrics.rejected.labels(reason="bad_adapter_message").inc()
        self._limiter.log(logging.WARNING, channel, "unreadable message on %r: %s", channel, exc)

    # ---- requests to other hosts ------------------------------------------------

    async def _other_servers(self, namespace: str) -> int:
        counts = await self.redis.pubsub_numsub(self.channels.request(namespace))
        return max(int(counts[0][1]) - 1, 0) if counts else 0

    async def _ask(
        self, namespace: str, kind: str, request: dict[str, Any], expected: int, timeout: float
    ) -> list[Any]:
        request_id = secrets.token_hex(6)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        pending = Pending(kind, expected, future)
        self._pending[request_id] = pending
        body = {"uid": self.uid, "requestId": request_id, **request}
        raw = pack(body) if request.get("type") == RequestType.BROADCAST else encode_json(body)
        self.publish(self.channels.request(namespace), raw)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            log.debug("request %s: %d of %d answers", kind, len(pending.answers), expected)
        finally:
            self._pending.pop(request_id, None)
        return pending.answers

    async def request(self, operation: str, args: dict[str, Any]) -> Any:
        """Carry out ``operation`` on the other hosts; the answer combines theirs."""
        namespace = args["namespace"]
        others = await self._other_servers(namespace)
        if others == 0:
            return [] if operation == "fetch" else 0
        opts = {"rooms": args.get("rooms") or [], "except": args.get("exclude") or []}
        if operation in ("join", "leave", "disconnect"):
            kind = {
                "join": RequestType.REMOTE_JOIN,
                "leave": RequestType.REMOTE_LEAVE,
                "disconnect": RequestType.REMOTE_DISCONNECT,
            }[operation]
            if args.get("single_sid"):
                return await self._ask_for_sid(namespace, kind, args)
            request: dict[str, Any] = {"type": kind, "opts": opts}
            if operation == "disconnect":
                request["close"] = bool(args.get("close"))
            else:
                request["rooms"] = args["targets"]
            answers = await self._ask(namespace, "count", request, others, REQUESTS_TIMEOUT)
            return sum(int(a.get("count", 0)) for a in answers)
        if operation == "fetch":
            request = {"type": RequestType.REMOTE_FETCH, "opts": opts}
            answers = await self._ask(namespace, "fetch", request, others, REQUESTS_TIMEOUT)
            return [
                {"id": s.get("id"), "rooms": s.get("rooms", [])}
                for a in answers
                for s in a.get("sockets", [])
                if isinstance(s, dict)
            ]
        if operation == "emit_ack":
            request = {
                "type": RequestType.BROADCAST,
                "packet": {"type": 2, "data": args["data"], "nsp": namespace},
                "opts": {
                    "rooms": [args["sid"]],
                    "except": [],
                    "flags": {"timeout": int(float(args["ack_timeout"]) * 1000)},
                },
            }
            answers = await self._ask(namespace, "ack", request, 1, float(args["ack_timeout"]))
            if not answers:
                raise TimeoutError(f"no ack from {args['sid']!r}")
            return answers[0]
        if operation == "server_emit":
            request = {"type": RequestType.SERVER_SIDE_EMIT, "data": [args["event"], *args["args"]]}
            self.publish(
                self.channels.request(namespace), encode_json({"uid": self.uid, **request})
            )
            return others
        raise ValueError(f"unknown operation {operation!r}")

    async def _ask_for_sid(self, namespace: str, kind: RequestType, args: dict[str, Any]) -> int:
        """The Node adapter's per-socket form: only the owner answers."""
        sid = args["rooms"][0]
        if kind == RequestType.REMOTE_DISCONNECT:
            requests = [{"type": kind, "sid": sid, "close": bool(args.get("close"))}]
        else:
            requests = [{"type": kind, "sid": sid, "room": room} for room in args["targets"]]
        answers = await asyncio.gather(
            *(self._ask(namespace, "count", r, 1, REQUESTS_TIMEOUT) for r in requests)
        )
        return 1 if all(answers) else 0

    # ---- requests from other servers, and their responses -----------------------

    def on_request_or_response(self, channel: str, body: bytes) -> None:
        parsed = self.channels.parse_request_or_response(channel)
        if parsed is None:
            return
        kind, namespace = parsed
        try:
            message = decode_request(body)
        except AdapterFormatError as exc:
            self._unreadable(channel, exc)
            return
        if kind == "response":
            self._on_response(message)
        elif message.get("uid") != self.uid:
            task = asyncio.create_task(self._answer(namespace, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _on_response(self, message: dict[str, Any]) -> None:
        pending = self._pending.get(str(message.get("requestId")))
        if pending is None:
            return
        if pending.kind == "ack":
            if message.get("type") == RequestType.BROADCAST_ACK:
                args = message.get("args")
                pending.answers.append(args if isinstance(args, list) else [message.get("packet")])
        elif message.get("type") in (
            None,
            RequestType.REMOTE_FETCH,
            RequestType.REMOTE_JOIN,
            RequestType.REMOTE_LEAVE,
            RequestType.REMOTE_DISCONNECT,
        ):
            pending.answers.append(message)
        if len(pending.answers) >= pending.expected and not pending.future.done():
            pending.future.set_result(None)

    def _respond(self, namespace: str, body: bytes) -> None:
        self.publish(self.channels.response(namespace), body)

    async def _answer(self, namespace: str, request: dict[str, Any]) -> None:
        try:
            await self._answer_unsafe(namespace, request)
        except Exception:  # a bad request costs its answer, never the master
            log.exception("could not answer a request of type %r", request.get("type"))

    async def _answer_unsafe(self, namespace: str, request: dict[str, Any]) -> None:
        kind = request.get("type")
        request_id = request.get("requestId")
        opts = request.get("opts") if isinstance(request.get("opts"), dict) else None
        selector = {
            "namespace": namespace,
            "rooms": (opts.get("rooms") or None) if opts else None,
            "exclude": (opts.get("except") or []) if opts else [],
        }
        ops = self.operations
        if kind in (
            RequestType.REMOTE_JOIN,
            RequestType.REMOTE_LEAVE,
            RequestType.REMOTE_DISCONNECT,
        ):
            operation = {
                RequestType.REMOTE_JOIN: "join",
                RequestType.REMOTE_LEAVE: "leave",
                RequestType.REMOTE_DISCONNECT: "disconnect",
            }[RequestType(kind)]
            if opts is None:  # per-socket form: answer only if the socket is ours
                selector["rooms"] = [request.get("sid")]
                targets = [request.get("room")]
            else:
                targets = request.get("rooms") or []
            count = await ops.on_workers(
                operation, {**selector, "targets": targets, "close": bool(request.get("close"))}
            )
            if request_id is not None and (opts is not None or count):
                self._respond(namespace, encode_json({"requestId": request_id, "count": count}))
        elif kind == RequestType.REMOTE_FETCH:
            sockets = await ops.on_workers("fetch", selector)
            self._respond(
                namespace,
                encode_json(
                    {
                        "requestId": request_id,
                        "sockets": [
                            {"id": s["id"], "handshake": {}, "rooms": s["rooms"], "data": {}}
                            for s in sockets
                        ],
                    }
                ),
            )
        elif kind == RequestType.SOCKETS:
            sockets = await ops.on_workers(
                "fetch", {**selector, "rooms": request.get("rooms") or None}
            )
            self._respond(
                namespace,
                encode_json({"requestId": request_id, "sockets": [s["id"] for s in sockets]}),
            )
        elif kind == RequestType.SERVER_SIDE_EMIT:
            data = request.get("data")
            if isinstance(data, list) and data and isinstance(data[0], str):
                await ops.server_emit_here(namespace, data[0], data[1:])
            if request_id is not None:
                self._respond(
                    namespace,
                    encode_json(
                        {
                            "type": RequestType.SERVER_SIDE_EMIT,
                            "requestId": request_id,
                            "data": None,
                        }
                    ),
                )
        elif kind == RequestType.BROADCAST:
            await self._answer_broadcast_with_ack(namespace, request, selector)

    async def _answer_broadcast_with_ack(
        self, namespace: str, request: dict[str, Any], selector: dict[str, Any]
    ) -> None:
        packet = request.get("packet") or {}
        data = packet.get("data")
        if not isinstance(data, list) or not data:
            return
        flags = (request.get("opts") or {}).get("flags") or {}
        timeout = float(flags.get("timeout") or REQUESTS_TIMEOUT * 1000) / 1000
        sockets = await self.operations.on_workers("fetch", selector)
        request_id = request.get("requestId")
        self._respond(
            namespace,
            encode_json(
                {
                    "type": RequestType.BROADCAST_CLIENT_COUNT,
                    "requestId": request_id,
                    "clientCount": len(sockets),
                }
            ),
        )

        async def one(sid: str) -> None:
            try:
                ack = await self.operations.emit_ack_here(namespace, sid, data, timeout)
            except Exception as exc:  # no ack from that client: nothing to answer
                log.debug("no ack from %s: %s", sid, exc)
                return
            self._respond(
                namespace,
                pack(
                    {
                        "type": RequestType.BROADCAST_ACK,
                        "requestId": request_id,
                        "packet": ack[0] if ack else None,
                        "args": ack,
                    }
                ),
            )

        await asyncio.gather(*(one(s["id"]) for s in sockets))
