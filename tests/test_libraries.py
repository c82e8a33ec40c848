"""Real libraries on both loops: aiohttp (server, client, websockets),
uvicorn under httpx, and the websockets library.

Each test runs on asyncio and on ferroloop and checks what the library's
users would: bodies arrive whole, messages in order, close handshakes
complete.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402


async def start_app(app):
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, port


def test_aiohttp_10_mib_upload_and_download(loop):
    body = os.urandom(10 * 1024 * 1024)

    async def upload(request):
        h = hashlib.sha256()
        n = 0
        async for chunk in request.content.iter_chunked(65536):
            h.update(chunk)
            n += len(chunk)
        return web.json_response({"sha256": h.hexdigest(), "size": n})

    async def download(request):
        return web.Response(body=body)

    async def main():
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/upload", upload)
        app.router.add_get("/download", download)
        runner, port = await start_app(app)
        try:
            async with aiohttp.ClientSession() as s:
                async with s.post(f"http://127.0.0.1:{port}/upload", data=io.BytesIO(body)) as r:
                    up = await r.json()
                async with s.get(f"http://127.0.0.1:{port}/download") as r:
                    down = await r.read()
        finally:
            await runner.cleanup()
        return up, down

    up, down = loop.run_until_complete(main())
    assert up == {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
    assert down == body


def test_aiohttp_websocket_echo_with_close_handshake(loop):
    async def ws_handler(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        return ws

    async def main():
        app = web.Application()
        app.router.add_get("/ws", ws_handler)
        runner, port = await start_app(app)
        got = []
        try:
            async with aiohttp.ClientSession() as s, s.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                for i in range(100):
                    await ws.send_str(f"m{i}")
                    got.append((await ws.receive()).data)
                await ws.send_bytes(b"abc" * 10000)
                got.append((await ws.receive()).data)
                await ws.close()
                code = ws.close_code
        finally:
            await runner.cleanup()
        return got, code

    got, code = loop.run_until_complete(main())
    assert got[:100] == [f"echo:m{i}" for i in range(100)]
    assert got[100] == (b"abc" * 10000)[::-1]
    assert code == 1000


def test_websockets_library_echo(loop):
    websockets = pytest.importorskip("websockets")
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async def main():
        async with serve(echo, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}") as ws:
                out = []
                for i in range(50):
                    await ws.send(f"hello {i}")
                    out.append(await ws.recv())
                await ws.send(b"\x00" * 200_000)
                big = await ws.recv()
            return out, big, ws.close_code

    out, big, close_code = loop.run_until_complete(main())
    assert out == [f"hello {i}" for i in range(50)]
    assert big == b"\x00" * 200_000
    assert close_code == 1000
    del websockets


UVICORN_APP = textwrap.dedent(
    """
    import asyncio

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        loop = asyncio.get_running_loop()
        text = f"{type(loop).__module__}.{type(loop).__name__} {len(body)}".encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": text})
    """
)


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_uvicorn_cli_with_loop_option_under_httpx(impl, tmp_path, http):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    (tmp_path / "asgi_app.py").write_text(UVICORN_APP)
    sock_path = str(tmp_path / "uvicorn.sock")
    loop_arg = "asyncio" if impl == "asyncio" else "ferroloop:new_event_loop"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "asgi_app:app",
            "--uds",
            sock_path,
            "--loop",
            loop_arg,
            "--http",
            http,
            "--no-access-log",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock_path):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        transport = httpx.HTTPTransport(uds=sock_path)
        with httpx.Client(transport=transport, base_url="http://test") as client:
            answers = [client.get("/").text for _ in range(100)]
            big = client.post("/", content=b"x" * (1024 * 1024)).text
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    expected_loop = "asyncio.unix_events._UnixSelectorEventLoop" if impl == "asyncio" else "ferroloop._loop.Loop"
    assert answers == [f"{expected_loop} 0"] * 100
    assert big == f"{expected_loop} {1024 * 1024}"
    assert "Traceback" not in out, out
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert "Finished server process" in out, out
    assert proc.returncode in (0, -15), out


def test_asyncio_streams_server_and_client(loop):
    async def handle(reader, writer):
        while line := await reader.readline():
            writer.write(line.upper())
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        out = []
        for i in range(200):
            writer.write(f"line {i}\n".encode())
            await writer.drain()
            out.append(await reader.readline())
        writer.write_eof()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return out

    out = loop.run_until_complete(main())
    assert out == [f"LINE {i}\n".encode() for i in range(200)]


def test_server_close_clients_and_abort_clients(loop):
    if not hasattr(asyncio.Server, "close_clients"):
        pytest.skip("Server.close_clients is new in 3.13")

    async def main():
        lost = []

        class P(asyncio.Protocol):
            def connection_lost(self, exc):
                lost.append(exc)

        server = await loop.create_server(P, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        while len(server._clients) < 3:
            await asyncio.sleep(0.01)
        server.close()
        server.close_clients()
        await server.wait_closed()
        for s in socks:
            s.close()
        return lost

    assert loop.run_until_complete(main()) == [None, None, None]
