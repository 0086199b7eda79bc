"""The worker's hand-off site with real sockets: it serves what the master passes, and gives
back, unread, what it had not taken when it stops."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from sio_cluster.wire.handoff import connection_message, source_of
from sio_cluster.workers.client_address import ClientAddress
from sio_cluster.workers.handoff import HandoffSite, close_after_response
from sio_cluster.workers.header_deadline import HeaderDeadline

REQUEST = b"GET /where HTTP/1.1\r\nHost: x\r\n\r\n"


async def where(request: web.Request) -> web.Response:
    return web.Response(text=str(request.remote))


@pytest.fixture
async def site() -> AsyncIterator[tuple[HandoffSite, socket.socket]]:
    """A HandoffSite serving ``GET /where`` (the client's address), and the master's end."""
    addresses = ClientAddress(None, 10.0)
    app = web.Application(middlewares=[addresses.middleware])
    app.router.add_get("/where", where)
    app.on_response_prepare.append(close_after_response)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    master_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    master_end.settimeout(10)  # a hand-back that never comes fails, not hangs
    handoff = HandoffSite(runner, worker_end, HeaderDeadline(10.0, lambda: None), addresses)
    await handoff.start()
    try:
        yield handoff, master_end
    finally:
        await runner.cleanup()
        master_end.close()
        worker_end.close()


def client_connection() -> tuple[socket.socket, socket.socket]:
    """A connected TCP pair on loopback: (client, what the master accepted)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    return client, accepted


async def answer(client: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    client.setblocking(False)
    data = b""
    while chunk := await asyncio.wait_for(loop.sock_recv(client, 65536), 10):
        data += chunk
    return data


async def test_a_passed_connection_is_served_with_its_client_address(
    site: tuple[HandoffSite, socket.socket],
) -> None:
    _, master_end = site
    client, accepted = client_connection()
    with client, accepted:
        client.sendall(REQUEST)
        socket.send_fds(master_end, [connection_message(("203.0.113.7", 5))], [accepted.fileno()])
        accepted.close()  # the worker has its own descriptor now
        answered = await answer(client)  # then closed: one request per connection
        assert b"Connection: close" in answered and answered.endswith(b"\r\n\r\n203.0.113.7")


async def test_what_it_had_not_taken_goes_back_unread_when_it_stops(
    site: tuple[HandoffSite, socket.socket],
) -> None:
    handoff, master_end = site
    pairs = [client_connection() for _ in range(3)]
    for i, (client, accepted) in enumerate(pairs):
        client.sendall(REQUEST)
        socket.send_fds(master_end, [connection_message(("203.0.113.7", i))], [accepted.fileno()])
    await handoff.stop()  # before its reader ran: nothing was taken
    for i, (client, accepted) in enumerate(pairs):
        message, fds, _, _ = socket.recv_fds(master_end, 64, 1)
        assert source_of(message) == ("203.0.113.7", i) and len(fds) == 1
        with socket.socket(fileno=fds[0]) as back:
            assert back.recv(len(REQUEST), socket.MSG_PEEK) == REQUEST  # still unread
        client.close()
        accepted.close()
