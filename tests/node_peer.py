"""Real Node.js peers for the interop tests: a socket.io server with the redis adapter.

``tests/node/peer.js`` runs socket.io 4.8 + @socket.io/redis-adapter 8.3 and its own
socket.io-client clients; :class:`NodePeer` drives it over a JSON line protocol on
stdin/stdout (commands answered by id; what its clients receive is pushed and
recorded here). ``tests/node/emitter.js`` publishes with @socket.io/redis-emitter 5.x.
The peer exits when its stdin closes or its parent dies, and :meth:`NodePeer.close`
kills it if it has not.

Also here: :func:`setup_app`, the probe app plus a ``save_session`` handler, which the
masters of the interop tests run (a Node ``fetchSockets()`` reports ``socket.data``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import signal
import subprocess
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Self

import socketio

from sio_cluster.master.embedded_redis import EmbeddedRedis, free_port
from tests import probe_app
from tests.cluster import until

NODE_DIR = Path(__file__).resolve().parent / "node"


class NodePeerError(RuntimeError):
    """A command the Node peer answered with an error (its message is kept)."""


def missing_tools() -> str | None:
    """Why the Node tests cannot run here, or None."""
    absent = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    return f"{' and '.join(absent)} not installed" if absent else None


def ensure_node_modules() -> None:
    """``npm ci`` in tests/node when node_modules is missing or older than the lock file."""
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_DIR,
        check=True,
        timeout=600,
    )


def to_wire(value: Any) -> Any:
    """Python value -> the peer's JSON (bytes as ``{"$bin": hex}``)."""
    if isinstance(value, bytes | bytearray):
        return {"$bin": bytes(value).hex()}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    return value


def from_wire(value: Any) -> Any:
    """The peer's JSON -> Python value (``{"$bin": hex}`` as bytes)."""
    if isinstance(value, list):
        return [from_wire(v) for v in value]
    if isinstance(value, dict):
        if list(value) == ["$bin"]:
            return bytes.fromhex(value["$bin"])
        return {k: from_wire(v) for k, v in value.items()}
    return value


class NodeScript:
    """One ``node tests/node/<script>`` driven over the JSON line protocol: commands on its
    stdin answered by id, and what it pushes handed to :meth:`on_message`."""

    def __init__(self, script: str, *args: str) -> None:
        self.args = ["node", str(NODE_DIR / script), *args]
        self.proc: subprocess.Popen[str] | None = None
        self.stderr: list[str] = []
        self.received: list[dict[str, Any]] = []  # {"client", "event", "args", ...}
        self._replies: dict[int, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()
        self._ready = threading.Event()

    def start(self, timeout: float = 30.0) -> Self:
        self.proc = subprocess.Popen(
            self.args,
            cwd=NODE_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        if not self._ready.wait(timeout):
            self.close()
            raise RuntimeError(f"{self.args[1]} not ready:\n" + "\n".join(self.stderr[-30:]))
        return self

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def on_message(self, message: dict[str, Any]) -> None:
        """What the script pushed (not an answer nor an event): ``{"ready": ...}`` included."""

    def got(self, client: str, event: str) -> list[list[Any]]:
        """The argument lists of every ``event`` that ``client`` received, in order."""
        return [
            r["args"] for r in list(self.received) if r["client"] == client and r["event"] == event
        ]

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            message = from_wire(json.loads(line))
            if "id" in message:
                self._replies[message["id"]] = message
            elif "recv" in message:
                self.received.append(message["recv"])
            else:
                self.on_message(message)
            if "ready" in message:
                self._ready.set()
        self._ready.set()  # the process ended: let a waiting start() fail at once

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))

    async def cmd(self, name: str, timeout: float = 10.0, **args: Any) -> Any:
        """Run command ``name`` in the script and return its result; raise its error.

        A trailing underscore is dropped from argument names (``except_`` is ``except``).
        """
        assert self.proc is not None and self.proc.stdin is not None
        request_id = next(self._ids)
        args = {key.removesuffix("_"): value for key, value in args.items()}
        line = json.dumps({"id": request_id, "cmd": name, **to_wire(args)}) + "\n"
        with self._write_lock:
            self.proc.stdin.write(line)
            self.proc.stdin.flush()
        try:
            await until(lambda: request_id in self._replies, timeout, f"node {name!r}")
        except AssertionError:
            raise AssertionError(
                f"node did not answer {name!r} in {timeout} s; stderr:\n"
                + "\n".join(self.stderr[-20:])
            ) from None
        reply = self._replies.pop(request_id)
        if "error" in reply:
            raise NodePeerError(f"{name}: {reply['error']}")
        return reply["ok"]

    def close(self) -> None:
        """End the script: close its stdin, then kill it if it is still there."""
        if self.proc is None:
            return
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class NodePeer(NodeScript):
    """One ``node peer.js`` process on a free loopback port, connected to ``redis_url``."""

    def __init__(
        self, redis_url: str, requests_timeout_ms: int = 5000, adapter: str = "classic"
    ) -> None:
        """``adapter``: "classic", or "sharded[:subscriptionMode]" (createShardedAdapter)."""
        self.port = free_port()
        super().__init__("peer.js", str(self.port), redis_url, str(requests_timeout_ms), adapter)
        self.uids: dict[str, str] = {}  # namespace -> the adapter's uid
        self.disconnects: list[dict[str, Any]] = []  # {"client", "nsp", "reason"}
        self.server_events: list[dict[str, Any]] = []  # {"nsp", "event", "args"}

    def on_message(self, message: dict[str, Any]) -> None:
        if "disconnect" in message:
            self.disconnects.append(message["disconnect"])
        elif "server_event" in message:
            self.server_events.append(message["server_event"])
        elif "ready" in message:
            self.uids = message["ready"]["uids"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def connect(self, client: str, nsp: str = "/", **options: Any) -> str:
        """Connect a socket.io-client client named ``client``; return its socket id."""
        result = await self.cmd("connect", client=client, nsp=nsp, **options)
        return str(result["id"])

    async def wait_count(self, client: str, event: str, count: int, timeout: float = 10.0) -> None:
        await until(
            lambda: len(self.got(client, event)) >= count,
            timeout,
            f"{count} x {event!r} at node client {client}",
        )

    def disconnected(self, client: str) -> bool:
        return any(d["client"] == client for d in list(self.disconnects))

    async def reset(self) -> None:
        """Disconnect every client of the peer and forget what they received."""
        await self.cmd("reset")
        self.received.clear()
        self.disconnects.clear()
        self.server_events.clear()


class RecoveringClients(NodeScript):
    """socket.io-client 4.8 clients that reconnect and recover by themselves
    (``tests/node/recovering.js``), recording every connection and event."""

    def __init__(self) -> None:
        super().__init__("recovering.js")
        self.connects: list[dict[str, Any]] = []  # {"client", "id", "recovered"}
        self.disconnects: list[dict[str, Any]] = []  # {"client", "reason"}

    def on_message(self, message: dict[str, Any]) -> None:
        if "connect" in message:
            self.connects.append(message["connect"])
        elif "disconnect" in message:
            self.disconnects.append(message["disconnect"])

    def connections(self, client: str) -> list[dict[str, Any]]:
        return [c for c in list(self.connects) if c["client"] == client]


async def run_emitter(redis_url: str, actions: list[dict[str, Any]], timeout: float = 20.0) -> None:
    """Run ``tests/node/emitter.js`` with ``actions``; return once it published them all."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / "emitter.js"),
        redis_url,
        json.dumps(to_wire(actions)),
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0 or out.decode().strip() != "done":
        raise NodePeerError(f"emitter.js failed ({proc.returncode}): {err.decode()}")


def setup_app(sio: socketio.AsyncServer) -> None:
    """The probe app, plus ``save_session`` (python-socketio's closest to ``socket.data``)."""
    probe_app.setup(sio)
    for namespace in probe_app.NAMESPACES:
        _register_session(sio, namespace)


def _register_session(sio: socketio.AsyncServer, namespace: str) -> None:
    @sio.on("save_session", namespace=namespace)
    async def save_session(sid: str, session: dict[str, Any]) -> bool:
        await sio.save_session(sid, session, namespace=namespace)
        return True


class NodeClients(NodeScript):
    """A script of old clients (each named by the test), recording the events each listens
    to and each disconnect; shared by a module's tests, one test at a time."""

    def __init__(self, script: str) -> None:
        super().__init__(script)
        self.disconnects: list[dict[str, Any]] = []  # {"client", "reason"}

    def on_message(self, message: dict[str, Any]) -> None:
        if "disconnect" in message:
            self.disconnects.append(message["disconnect"])

    @contextlib.asynccontextmanager
    async def for_one_test(self) -> AsyncIterator[Self]:
        """This process for one test: the clients it connects are closed after it, and what
        they received is forgotten, so the next test starts with none."""
        opened: list[str] = []
        original = self.cmd

        async def cmd(name: str, timeout: float = 10.0, **args: Any) -> Any:
            result = await original(name, timeout, **args)
            if name == "connect":
                opened.append(args["client"])
            return result

        self.cmd = cmd  # type: ignore[method-assign]
        try:
            yield self
        finally:
            self.cmd = original  # type: ignore[method-assign]
            for client in opened:
                with contextlib.suppress(NodePeerError):  # the test closed it already
                    await original("close", client=client)
            self.received.clear()
            self.disconnects.clear()


class LegacyClients(NodeClients):
    """socket.io-client 2.5.0 and 1.7.4 clients (Engine.IO 3, ``tests/node/legacy.js``); also
    engine.io 6's own v3 payload codec."""

    def __init__(self) -> None:
        super().__init__("legacy.js")


class V09Clients(NodeClients):
    """socket.io-client 0.9.16 clients (Socket.IO protocol 1, ``tests/node/v09_clients.js``)."""

    def __init__(self) -> None:
        super().__init__("v09_clients.js")


class V09Server(NodeScript):
    """One ``node v09_server.js``: a socket.io 0.9.19 server on RedisStore (the Redis at
    ``redis_server``) and its own socket.io-client 0.9.16 clients."""

    def __init__(self, redis_server: EmbeddedRedis) -> None:
        self.port = free_port()
        super().__init__("v09_server.js", str(self.port), str(redis_server.port))

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
