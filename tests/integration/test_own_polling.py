"""Long-polling on the workers' own connection layer (``workers/conn/polling.py``), request by
request on real connections: what engine.io's own long-polling answered, the layer answers,
on kept-alive connections; what the layer leaves to engine.io (a chunked POST) still reaches
the layer's session."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from engineio import packet as eio_packet

from sio_cluster.workers.eio3 import codec as eio3_codec
from tests.cluster import MasterProcess, op, until
from tests.raw_http import RawHttp
from tests.raw_ws import RawWebsocket

PATH = "/socket.io/?EIO=4&transport=polling"


async def opened(http: RawHttp, headers: str = "") -> str:
    """A new session on ``http`` and its socket.io CONNECT; its engine.io sid."""
    answer = await http.request("GET", PATH, headers=headers)
    assert answer.status == 200 and answer.body[:1] == b"0", answer
    sid: str = json.loads(answer.body[1:])["sid"]
    assert (await http.request("POST", f"{PATH}&sid={sid}", b"40")).text == "OK"
    connect = await http.request("GET", f"{PATH}&sid={sid}")
    assert connect.text.startswith('40{"sid":'), connect
    return sid


async def test_a_session_on_one_kept_alive_connection(
    cluster: MasterProcess, redis_client: aioredis.Redis
) -> None:
    http = await RawHttp.open(cluster.port_of(0))
    try:
        handshake = await http.request("GET", PATH)
        assert "server" not in handshake.headers  # the layer answered, not aiohttp
        assert handshake.headers["content-type"] == "text/plain; charset=UTF-8"
        fields = json.loads(handshake.body[1:])
        assert fields["upgrades"] == ["websocket"]
        assert (fields["pingInterval"], fields["pingTimeout"]) == (25000, 20000)
        sid = fields["sid"]
        session = f"{PATH}&sid={sid}"
        assert (await http.request("POST", session, b"40")).text == "OK"
        assert (await http.request("GET", session)).text.startswith('40{"sid":')
        # two packets in one POST: two events, two acks (the order of python-socketio's tasks)
        both = b'421["join","a"]\x1e422["join","b"]'
        assert (await http.request("POST", session, both)).text == "OK"
        acks: list[str] = []
        while len(acks) < 2:  # each ack is sent when its task ends: one or two answers
            acks += (await http.request("GET", session)).text.split("\x1e")
        assert sorted(ack[:3] for ack in acks) == ["431", "432"]
        # a poll waits for what the cluster routes to the session
        http.send("GET", session)
        await redis_client.publish("ch:news", json.dumps({"to": "a", "data": "hi"}))
        assert (await http.answer()).text == '42["news","hi"]'
        # the client leaves: its session ends
        assert (await http.request("POST", session, b"1")).text == "OK"
        assert (await http.request("GET", session)).status == 400
    finally:
        http.close()


async def test_a_second_poll_takes_over_from_the_first(
    cluster: MasterProcess, redis_client: aioredis.Redis
) -> None:
    first, second = await RawHttp.open(cluster.port_of(1)), await RawHttp.open(cluster.port_of(1))
    try:
        sid = await opened(first)
        session = f"{PATH}&sid={sid}"
        assert (await first.request("POST", session, b'420["join","over"]')).text == "OK"
        assert (await first.request("GET", session)).text == '430[["over"]]'
        first.send("GET", session)
        # a request after it, answered: the first GET was read before (it came first)
        assert (await second.request("POST", session, b"6")).text == "OK"
        second.send("GET", session)
        assert (await first.answer()).text == "6"  # a NOOP ends the first
        await redis_client.publish("ch:news", json.dumps({"to": "over", "data": 1}))
        assert (await second.answer()).text == '42["news",1]'
        assert (await first.request("POST", session, b"1")).text == "OK"
    finally:
        first.close()
        second.close()


async def test_cors_headers_and_a_compressed_answer(
    cluster: MasterProcess, redis_client: aioredis.Redis
) -> None:
    port = cluster.port_of(0)
    origin = "Origin: http://127.0.0.1\r\n"  # the Host RawHttp sends: the same origin
    http = await RawHttp.open(port)
    try:
        handshake = await http.request("GET", PATH, headers=origin)
        assert handshake.status == 200
        sid = json.loads(handshake.body[1:])["sid"]
        session = f"{PATH}&sid={sid}"
        asked = origin + "Accept-Encoding: gzip, deflate\r\n"
        assert (await http.request("POST", session, b"40", asked)).text == "OK"
        connect = await http.request("GET", session, headers=asked)
        assert connect.headers["access-control-allow-origin"] == "http://127.0.0.1"
        assert "content-encoding" not in connect.headers  # under engine.io's 1,024 bytes
        assert (await http.request("POST", session, b'420["join","big"]', asked)).status == 200
        assert (await http.request("GET", session, headers=asked)).text == '430[["big"]]'
        http.send("GET", session, headers=asked)
        await redis_client.publish("ch:large", json.dumps({"to": "big", "data": "z" * 5000}))
        large = await http.answer()
        assert large.headers["content-encoding"] == "gzip"
        assert gzip.decompress(large.body).decode() == '42["large","' + "z" * 5000 + '"]'
    finally:
        http.close()
    # an origin engine.io refuses is engine.io's to answer, as before the layer
    async with aiohttp.ClientSession() as client:
        url = f"http://127.0.0.1:{port}{PATH}"
        async with client.get(url, headers={"Origin": "http://elsewhere.invalid"}) as response:
            assert response.status == 400
            assert "aiohttp" in response.headers["Server"]


async def test_an_oversized_post_ends_its_session_and_is_counted(cluster: MasterProcess) -> None:
    dropped = 'sio_master_bad_clients_dropped{worker="0"}'
    before = cluster.metric(dropped)
    http = await RawHttp.open(cluster.port_of(0))
    try:
        sid = await opened(http)
        # the body is not read; the answer is, not lost to a reset of the connection
        head = f"POST {PATH}&sid={sid} HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n"
        http.writer.write(head.encode() + b"4" * 2_000_000)
        refused = await http.answer()
        assert (refused.status, refused.headers["connection"]) == (400, "close")
        assert await http.reader.read() == b""
    finally:
        http.close()
    await until(lambda: cluster.metric(dropped) == before + 1, what="counted")
    again = await RawHttp.open(cluster.port_of(0))
    try:
        assert (await again.request("GET", f"{PATH}&sid={sid}")).status == 400  # gone
    finally:
        again.close()


async def test_a_chunked_post_reaches_the_layer_s_session_through_engine_io(
    cluster: MasterProcess,
) -> None:
    http = await RawHttp.open(cluster.port_of(0))
    try:
        sid = await opened(http)
        session = f"{PATH}&sid={sid}"

        async def chunks() -> AsyncIterator[bytes]:
            yield b'420["join",'
            yield b'"chunked"]'

        async with aiohttp.ClientSession() as client:
            url = f"http://127.0.0.1:{cluster.port_of(0)}{session}"
            async with client.post(url, data=chunks()) as response:
                assert (response.status, await response.text()) == (200, "OK")
                assert "aiohttp" in response.headers["Server"]  # engine.io answered it
        assert (await http.request("GET", session)).text == '430[["chunked"]]'
        assert (await http.request("POST", session, b"1")).text == "OK"
    finally:
        http.close()


async def test_engine_io_3_clients_on_the_layer(
    start_master: Any, redis_client: aioredis.Redis
) -> None:
    """An Engine.IO 3 client (``--allow-eio3``) on long-polling, its upgrade to a websocket
    and one straight on a websocket: the layer serves each, with the v3 payloads, the
    client's PINGs answered and its binary frames typed."""
    cluster: MasterProcess = await start_master(workers=1, extra=["--allow-eio3"]).ready()
    port = cluster.port_of(0)
    v3 = "/socket.io/?EIO=3&transport=polling"
    http = await RawHttp.open(port)
    try:
        handshake = await http.request("GET", v3)
        assert "server" not in handshake.headers  # the layer's, not aiohttp's
        opening, connect = eio3_codec.decode_payload(handshake.body, "text/plain")
        assert (opening.packet_type, connect.encode()) == (eio_packet.OPEN, "40")
        sid = opening.data["sid"]
        session = f"{v3}&sid={sid}"
        assert (await http.request("POST", session, b"1:2")).text == "OK"
        assert (await http.request("GET", session)).text == "1:3"  # its PING answered
        join = '421["join","three"]'
        body = f"{len(join)}:{join}".encode()
        assert (await http.request("POST", session, body)).text == "OK"
        assert (await http.request("GET", session)).text == '14:431[["three"]]'
        # the upgrade: the same session, now on a websocket of the layer's
        ws = await RawWebsocket.open(port, sid=sid, eio=3)
        try:
            assert b"aiohttp" not in ws.response_head
            ws.text("2probe")
            assert await ws.packet() == "3probe"
            assert (await http.request("GET", session)).text == "1:6"  # the poll ends
            ws.text("5")
            await redis_client.publish("ch:bin", json.dumps({"to": "three", "data": "x"}))
            assert await ws.packet() == '42["bin","x"]'
            ws.text("2")
            assert await ws.packet() == "3"
        finally:
            ws.close()
    finally:
        http.close()
    direct = await RawWebsocket.open(port, eio=3)
    try:
        assert b"aiohttp" not in direct.response_head
        assert b"permessage-deflate" not in direct.response_head
        own = json.loads((await direct.packet())[1:])["sid"]
        assert await direct.packet() == "40"  # in "/" at once, as socket.io 2 expects
        # a binary event of v3 (its attachment's frame starts with its type), echoed back
        spec = {"event": "back", "args": [{"_placeholder": True, "num": 0}], "to": own}
        direct.text("451-1" + json.dumps(["emit", spec]))
        direct.send(b"\x04\x01\x02", 0x2)
        got = sorted([(await direct.frame())[1:] for _ in range(3)])
        assert got == [
            (0x1, b"431[true]"),
            (0x1, b'451-["back",{"_placeholder":true,"num":0}]'),
            (0x2, b"\x04\x01\x02"),
        ]
    finally:
        direct.close()


async def test_pipelined_requests_are_answered_in_turn(cluster: MasterProcess) -> None:
    http = await RawHttp.open(cluster.port_of(0))
    try:
        handshake = await http.request("GET", PATH)
        session = f"{PATH}&sid={json.loads(handshake.body[1:])['sid']}"
        assert (await http.request("POST", session, b"")).text == "OK"  # an empty POST: nothing
        assert (await http.request("POST", session, b"40")).text == "OK"
        # a GET (no body) and a POST in one write: both answered, in order
        http.send("GET", session)
        http.send("POST", session, b'421["join","piped"]')
        assert (await http.answer()).text.startswith('40{"sid":')
        assert (await http.answer()).text == "OK"
        assert (await http.request("GET", session)).text == '431[["piped"]]'
        # a client that waits for "100 Continue" before its body gets it
        http.writer.write(
            f"POST {session} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        assert await http.reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        http.writer.write(b"6")
        assert (await http.answer()).text == "OK"
        assert (await http.request("POST", session, b"1")).text == "OK"
    finally:
        http.close()


async def test_a_takeover_answers_the_poll_pipelined_behind_the_first(
    cluster: MasterProcess,
) -> None:
    """A's poll waits with a second one pipelined behind it; B polls too. B's poll ends A's
    first with a NOOP, then A's second (read next) takes over from B's: every GET answered
    once, and the one still waiting gets what comes."""
    a, b, c = [await RawHttp.open(cluster.port_of(0)) for _ in range(3)]
    try:
        sid = await opened(a)
        session = f"{PATH}&sid={sid}"
        a.send("GET", session)
        a.send("GET", session)
        # a request after them, answered: both of A's were read before (they came first)
        assert (await c.request("POST", session, b"6")).text == "OK"
        b.send("GET", session)
        assert (await a.answer()).text == "6"
        assert (await b.answer()).text == "6"
        assert (await c.request("POST", session, b'421["join","last"]')).text == "OK"
        assert (await a.answer()).text == '431[["last"]]'
        assert (await c.request("POST", session, b"1")).text == "OK"
    finally:
        for http in (a, b, c):
            http.close()


async def test_what_came_over_long_polling_is_handled_before_the_websocket(
    start_master: Any,
) -> None:
    """A client posts its CONNECTs to ``/`` and ``/chat`` and upgrades while the ``/``
    connect handler still runs (socket.io-client multiplexes namespaces and upgrades at
    once): the ``/chat`` CONNECT waiting behind it is handled, before what the websocket
    brings, and both answers come over the websocket."""
    cluster: MasterProcess = await start_master(
        workers=1, app="tests.apps.gated_connect_app:setup"
    ).ready()
    port = cluster.port_of(0)
    http = await RawHttp.open(port)
    try:
        handshake = await http.request("GET", PATH)
        sid = json.loads(handshake.body[1:])["sid"]
        session = f"{PATH}&sid={sid}"
        assert (await http.request("POST", session, b"40\x1e40/chat,")).text == "OK"
        ws = await RawWebsocket.open(port, sid=sid)
        try:
            ws.text("2probe")
            assert await ws.packet() == "3probe"
            ws.text("5")
            # on the websocket, 64 events (reading pauses at 64 waiting): handled after the
            # CONNECTs, and the websocket read again once they are
            for number in range(1, 65):
                ws.text(f'42/chat,{number}["hello"]')
            gate = await RawHttp.open(port)
            try:
                opener = await gate.request("GET", PATH)
                gate_session = f"{PATH}&sid={json.loads(opener.body[1:])['sid']}"
                assert (await gate.request("POST", gate_session, b"40/gate,")).text == "OK"
            finally:
                gate.close()
            answers = [await ws.packet() for _ in range(2 + 64)]
            assert answers[0].startswith('40{"sid":') and answers[1].startswith('40/chat,{"sid":')
            # (before its CONNECT, an event would be dropped; python-socketio runs each
            # event in a task of its own: the acks may come in any order)
            assert sorted(answers[2:]) == sorted(f'43/chat,{n}["hi"]' for n in range(1, 65))
            ws.text('42/chat,65["hello"]')
            assert await ws.packet() == '43/chat,65["hi"]'
            ws.text("1")
            assert await ws.closed_with() == 1000
        finally:
            ws.close()
    finally:
        http.close()


async def test_a_large_answer_arrives_whole(
    start_master: Any, redis_client: aioredis.Redis
) -> None:
    """6 MB for one poll, more than the kernel takes at once: the rest waits in the server's
    buffer for the client to read it (an answer is not taken for answers piling up)."""
    limit = str(8 * 1024 * 1024)
    cluster: MasterProcess = await start_master(
        workers=1, extra=["--max-message-bytes", limit, "--worker-buffer-bytes", limit]
    ).ready()
    http = await RawHttp.open(cluster.port_of(0))
    try:
        sid = await opened(http)
        session = f"{PATH}&sid={sid}"
        assert (await http.request("POST", session, b'421["join","large"]')).text == "OK"
        assert (await http.request("GET", session)).text == '431[["large"]]'
        http.send("GET", session)
        big = "y" * 6_000_000
        await redis_client.publish("ch:big", json.dumps({"to": "large", "data": big}))
        answer = await http.answer(timeout=30)
        assert answer.text == f'42["big","{big}"]'
        assert (await http.request("POST", session, b"1")).text == "OK"
    finally:
        http.close()


async def test_engine_io_s_cookie_option_sets_the_session_s_cookie(start_master: Any) -> None:
    cluster: MasterProcess = await start_master(workers=1, app="tests.apps.cookie_app:sio").ready()
    http = await RawHttp.open(cluster.port_of(0))
    try:
        handshake = await http.request("GET", PATH)
        assert "server" not in handshake.headers  # the layer answered
        sid = json.loads(handshake.body[1:])["sid"]
        assert handshake.headers["set-cookie"] == f"io={sid}; path=/; SameSite=Lax"
        session = f"{PATH}&sid={sid}"
        assert (await http.request("POST", session, b"40")).text == "OK"
        connect = await http.request("GET", session)
        assert connect.text.startswith('40{"sid":') and "set-cookie" not in connect.headers
    finally:
        http.close()


async def test_a_trickled_body_is_held_to_its_deadline(start_master: Any) -> None:
    """A POST body has the header timeout plus a second per 16 KiB, however it trickles in:
    a byte now and then does not keep the connection."""
    cluster: MasterProcess = await start_master(workers=1, extra=["--header-timeout", "1"]).ready()
    late = 'sio_master_header_timeouts{worker="0"}'
    http = await RawHttp.open(cluster.port_of(0))
    try:
        sid = await opened(http)
        head = f"POST {PATH}&sid={sid} HTTP/1.1\r\nHost: x\r\nContent-Length: 16384\r\n\r\n"
        http.writer.write(head.encode())
        started = asyncio.get_running_loop().time()
        # the deadline is 1 + 16384 / 16384 = 2 s: a byte every 0.25 s for up to 6 s
        for _ in range(24):
            http.writer.write(b"4")
            if http.reader.at_eof():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(http.reader.read(1), 0.25)
        assert await http.reader.read() == b""  # closed, unanswered
        assert asyncio.get_running_loop().time() - started < 5  # (it would last past 6 s)
    finally:
        http.close()
    await until(lambda: cluster.metric(late) == 1, what="counted as a late request")


def jsonp_payload(body: str) -> str:
    """The payload in engine.io's JSONP answer ``___eio[0]("<payload, JSON-escaped>");``."""
    assert body.startswith("___eio[0](") and body.endswith(");"), body
    payload: str = json.loads(body[len("___eio[0](") : -2])
    return payload


async def test_a_jsonp_session_is_python_engineio_s_as_published(
    cluster: MasterProcess, redis_client: aioredis.Redis
) -> None:
    """An Engine.IO 4 JSONP session (socket.io-client 2's fallback for pages without CORS) is
    engine.io's own, unpatched: it connects, joins, gets what the cluster routes to it, and
    upgrades to a websocket through engine.io."""
    base = f"http://127.0.0.1:{cluster.port_of(0)}{PATH}&j=0"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    async with aiohttp.ClientSession() as client:

        async def get(url: str) -> str:
            async with client.get(url) as response:
                assert response.status == 200 and "aiohttp" in response.headers["Server"]
                return jsonp_payload(await response.text())

        async def post(url: str, payload: str) -> None:
            async with client.post(url, data={"d": payload}, headers=form) as response:
                assert (response.status, await response.text()) == (200, "OK")

        opening = await get(base)
        assert opening.startswith("0")
        sid = json.loads(opening[1:])["sid"]
        session = f"{base}&sid={sid}"
        await post(session, "40")
        assert (await get(session)).startswith('40{"sid":')
        await post(session, '420["join","jsonp"]')
        assert await get(session) == '430[["jsonp"]]'
        waiting = asyncio.ensure_future(get(session))
        await redis_client.publish("ch:news", json.dumps({"to": "jsonp", "data": "hi"}))
        assert await asyncio.wait_for(waiting, 10) == '42["news","hi"]'
        waiting = asyncio.ensure_future(get(session))
        ws = await RawWebsocket.open(cluster.port_of(0), sid=sid)
        try:
            assert b"aiohttp" in ws.response_head  # engine.io's upgrade, not the layer's
            ws.text("2probe")
            assert await ws.packet() == "3probe"
            assert await asyncio.wait_for(waiting, 10) == "6"  # the poll ends
            ws.text("5")
            await redis_client.publish("ch:news", json.dumps({"to": "jsonp", "data": "ws"}))
            assert await ws.packet() == '42["news","ws"]'
        finally:
            ws.close()


async def test_a_jsonp_session_is_closed_without_waiting_for_its_poll(
    cluster: MasterProcess, clients: Any
) -> None:
    """engine.io's own ``disconnect`` waits for a long-polling client to fetch its CLOSE; the
    worker's does not (``workers/patches/engineio.py``): a cluster operation closing a JSONP
    session with no poll waiting goes on to the next socket, and a POST over ``maxPayload``
    on another is answered 400 at once (engine.io disconnects it from inside that POST)."""
    base = f"http://127.0.0.1:{cluster.port_of(0)}{PATH}&j=0"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    async with aiohttp.ClientSession() as client:

        async def opened() -> str:
            async with client.get(base) as response:
                opening = jsonp_payload(await response.text())
            session = f"{base}&sid={json.loads(opening[1:])['sid']}"
            async with client.post(session, data={"d": "40"}, headers=form) as response:
                assert response.status == 200
            async with client.get(session) as response:
                assert jsonp_payload(await response.text()).startswith('40{"sid":')
            return session

        closing = await opened()
        async with client.post(closing, data={"d": '420["join","closing"]'}, headers=form):
            pass
        async with client.get(closing) as response:
            assert jsonp_payload(await response.text()) == '430[["closing"]]'
        member = await clients(cluster.url(0), "member")
        await member.call("join", "closing")
        asker = await clients(cluster.url(1), "asker")
        assert await op(asker, "disconnect_sockets", to="closing", close=True) == 2
        await until(lambda: not member.client.connected, what="the member disconnected")
        async with client.get(closing) as response:  # the session is gone
            assert response.status == 400

        oversized = await opened()
        body = "d=" + "4" * 1_000_001
        async with client.post(oversized, data=body, headers=form) as response:
            assert response.status == 400
