"""The recipes of docs/recipes.md, each serving or running something real.

Every recipe runs once on asyncio's own loop and once on ferroloop; the
responses must be the same except for the loop class the app reports
(``type(asyncio.get_running_loop())``), which must be ferroloop's ``Loop`` in
the ferroloop run. Servers listen on 127.0.0.1 only, on port 0 (the server
reports the port it got); child processes are ended by their pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ferroloop
import pytest

httpx = pytest.importorskip("httpx")

LOOP_NAME = {"asyncio": "asyncio.unix_events._UnixSelectorEventLoop", "ferroloop": "ferroloop._loop.Loop"}
START_TIMEOUT = 60.0


def loop_name() -> str:
    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__qualname__}"


# A plain ASGI app: GET answers with the loop class, POST with the body's size
# and digest (read in as many chunks as the server delivers).
ASGI_APP = """\
import asyncio, hashlib

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    digest, size = hashlib.sha256(), 0
    while True:
        event = await receive()
        digest.update(event.get("body", b""))
        size += len(event.get("body", b""))
        if not event.get("more_body"):
            break
    loop = asyncio.get_running_loop()
    text = f"{type(loop).__module__}.{type(loop).__qualname__} {scope['method']} {size} {digest.hexdigest()[:16]}"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": text.encode()})
"""

BODY = bytes(range(256)) * 4096  # 1 MiB


def expected_asgi_answers(impl: str) -> list[str]:
    digest = hashlib.sha256(BODY).hexdigest()[:16]
    empty = hashlib.sha256(b"").hexdigest()[:16]
    return [f"{LOOP_NAME[impl]} GET 0 {empty}"] * 20 + [f"{LOOP_NAME[impl]} POST {len(BODY)} {digest}"]


def asgi_answers(base_url: str) -> list[str]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        answers = []
        for _ in range(20):
            r = client.get("/")
            assert r.status_code == 200
            answers.append(r.text)
        r = client.post("/", content=BODY)
        assert r.status_code == 200
        answers.append(r.text)
    return answers


class ServerProcess:
    """A server in a child process; its output goes to a log file."""

    def __init__(self, argv: list[str], cwd: Path, url_pattern: str, env: dict[str, str] | None = None) -> None:
        self.log_path = cwd / f"server-{time.monotonic_ns()}.log"
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        full_env.update(env or {})
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=full_env)
        deadline = time.monotonic() + START_TIMEOUT
        while not (m := re.search(url_pattern, self.log())):
            assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{self.log()}"
            assert time.monotonic() < deadline, f"did not start:\n{self.log()}"
            time.sleep(0.02)
        self.base_url = m.group(1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, as a service manager stops a server; returns the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(argv: list[str], url_pattern: str, env: dict[str, str] | None = None) -> ServerProcess:
        s = ServerProcess(argv, tmp_path, url_pattern, env)
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()


UVICORN_URL = r"Uvicorn running on (http://127\.0\.0\.1:\d+)"


# --- uvicorn -----------------------------------------------------------------


def test_uvicorn_cli_loop_option(impl, tmp_path, server_process):
    """``uvicorn app:app --loop ferroloop:new_event_loop`` (uvicorn >= 0.36)."""
    pytest.importorskip("uvicorn")
    (tmp_path / "asgi_app.py").write_text(ASGI_APP)
    loop = "asyncio" if impl == "asyncio" else "ferroloop:new_event_loop"
    argv = [sys.executable, "-m", "uvicorn", "asgi_app:app", "--host", "127.0.0.1", "--port", "0", "--loop", loop]
    server = server_process(argv, UVICORN_URL)
    assert asgi_answers(server.base_url) == expected_asgi_answers(impl)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert server.stop() in (0, -signal.SIGTERM), server.log()
    assert "Finished server process" in server.log()
    assert "Traceback" not in server.log(), server.log()


@pytest.mark.parametrize("loop_option", ["none", "asyncio"])
def test_uvicorn_honours_install_only_with_loop_none(loop_option, tmp_path, server_process):
    """``python -m ferroloop -m uvicorn ... --loop none``: uvicorn's other loop options make their own loop."""
    pytest.importorskip("uvicorn")
    (tmp_path / "asgi_app.py").write_text(ASGI_APP)
    argv = [sys.executable, "-m", "ferroloop", "-m", "uvicorn", "asgi_app:app", "--host", "127.0.0.1", "--port", "0"]
    argv += ["--loop", loop_option]
    server = server_process(argv, UVICORN_URL)
    # Any other option makes uvicorn's own loop ("auto" is uvloop where it is installed).
    impl = "ferroloop" if loop_option == "none" else "asyncio"
    assert asgi_answers(server.base_url) == expected_asgi_answers(impl)
    assert server.stop() in (0, -signal.SIGTERM), server.log()


@contextlib.contextmanager
def uvicorn_in_thread(app: Any, impl: str, how: str = "Server.run", **options: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn in this process, on a thread of its own; yields the base URL.

    ``how``: ``"Server.run"`` (``uvicorn.Config(loop=...)``, uvicorn makes the
    loop) or ``"serve"`` (``Server.serve()`` run on a loop made here).
    """
    uvicorn = pytest.importorskip("uvicorn")
    loop = "asyncio" if impl == "asyncio" else "ferroloop:new_event_loop"
    config = uvicorn.Config(app, host="127.0.0.1", port=0, loop=loop, log_level="warning", **options)
    server = uvicorn.Server(config)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            if how == "Server.run":
                server.run()
            elif impl == "asyncio":
                with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
                    runner.run(server.serve())
            elif sys.version_info >= (3, 12):
                asyncio.run(server.serve(), loop_factory=ferroloop.new_event_loop)
            else:
                ferroloop.run(server.serve())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="uvicorn")
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            assert thread.is_alive() and not errors, errors
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert not thread.is_alive(), "uvicorn did not stop"
    assert not errors, errors


@pytest.mark.parametrize("how", ["Server.run", "serve"])
def test_uvicorn_config_in_process(impl, how):
    """``uvicorn.Server(uvicorn.Config(app, loop="ferroloop:new_event_loop")).run()`` and ``Server.serve()``."""
    with uvicorn_in_thread(load_app(ASGI_APP, "asgi_app"), impl, how) as base_url:
        answers = asgi_answers(base_url)
    assert answers == expected_asgi_answers(impl)


# --- hypercorn ---------------------------------------------------------------

HYPERCORN_MAIN = """\
import asyncio, sys
import ferroloop
from hypercorn.asyncio import serve
from hypercorn.config import Config
from asgi_app import app

config = Config()
config.bind = ["127.0.0.1:0"]
if IMPL == "asyncio":
    asyncio.run(serve(app, config))
elif sys.version_info >= (3, 12):
    asyncio.run(serve(app, config), loop_factory=ferroloop.new_event_loop)
else:
    ferroloop.run(serve(app, config))  # asyncio.run has no loop_factory before 3.12
"""


def test_hypercorn_serve(impl, tmp_path, server_process):
    """``asyncio.run(serve(app, config), loop_factory=ferroloop.new_event_loop)``; ``ferroloop.run`` on 3.11."""
    pytest.importorskip("hypercorn")
    (tmp_path / "asgi_app.py").write_text(ASGI_APP)
    (tmp_path / "main.py").write_text(f"IMPL = {impl!r}\n" + HYPERCORN_MAIN)
    server = server_process([sys.executable, "main.py"], r"Running on (http://127\.0\.0\.1:\d+)")
    assert asgi_answers(server.base_url) == expected_asgi_answers(impl)
    # hypercorn's serve() stops on SIGTERM by itself and returns.
    assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log(), server.log()


# --- aiohttp -----------------------------------------------------------------

AIOHTTP_MAIN = """\
import asyncio, hashlib
import ferroloop
from aiohttp import web

def loop_name():
    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__qualname__}"

async def hello(request):
    return web.Response(text=loop_name())

async def upload(request):
    body = await request.read()
    return web.json_response({"size": len(body), "sha256": hashlib.sha256(body).hexdigest(), "loop": loop_name()})

async def ws(request):
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    async for msg in sock:
        await sock.send_str(msg.data[::-1])
    return sock

app = web.Application(client_max_size=8 * 1024 * 1024)
app.router.add_get("/", hello)
app.router.add_post("/upload", upload)
app.router.add_get("/ws", ws)
if IMPL == "asyncio":
    web.run_app(app, host="127.0.0.1", port=0)
else:
    web.run_app(app, host="127.0.0.1", port=0, loop=ferroloop.new_event_loop())
"""


def test_aiohttp_run_app_with_loop(impl, tmp_path, server_process):
    """``web.run_app(app, loop=ferroloop.new_event_loop())``."""
    pytest.importorskip("aiohttp")
    websockets_client = pytest.importorskip("websockets.sync.client")
    (tmp_path / "main.py").write_text(f"IMPL = {impl!r}\n" + AIOHTTP_MAIN)
    server = server_process([sys.executable, "main.py"], r"Running on (http://127\.0\.0\.1:\d+)")
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        hello = [client.get("/").text for _ in range(20)]
        upload = client.post("/upload", content=BODY).json()
    ws_url = server.base_url.replace("http", "ws") + "/ws"
    with websockets_client.connect(ws_url) as ws:
        echoes = []
        for i in range(20):
            ws.send(f"message {i}")
            echoes.append(ws.recv())
    assert hello == [LOOP_NAME[impl]] * 20
    assert upload == {"size": len(BODY), "sha256": hashlib.sha256(BODY).hexdigest(), "loop": LOOP_NAME[impl]}
    assert echoes == [f"message {i}"[::-1] for i in range(20)]
    # run_app turns SIGTERM into a graceful exit.
    assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log(), server.log()


# --- anyio -------------------------------------------------------------------


def test_anyio_backend_options_loop_factory(impl, loop_factory):
    """``anyio.run(main, backend="asyncio", backend_options={"loop_factory": ferroloop.new_event_loop})``."""
    anyio = pytest.importorskip("anyio")
    from anyio.abc import SocketAttribute

    async def handle(client: Any) -> None:
        async with client:
            async for data in client:
                await client.send(data.upper())

    async def main() -> dict[str, Any]:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            echoes = []
            for i in range(20):
                async with await anyio.connect_tcp("127.0.0.1", port) as conn:
                    await conn.send(f"hello {i}".encode())
                    echoes.append(await conn.receive())
            in_thread = await anyio.to_thread.run_sync(
                lambda: threading.current_thread() is not threading.main_thread()
            )
            with anyio.move_on_after(0.05) as scope:
                await anyio.sleep(30)
            send, receive = anyio.create_memory_object_stream[int](5)
            async with send, receive:
                for n in range(5):
                    await send.send(n)
                got = [await receive.receive() for _ in range(5)]
            tg.cancel_scope.cancel()
        await listener.aclose()
        return {
            "loop": loop_name(),
            "echoes": echoes,
            "in_thread": in_thread,
            "timed_out": scope.cancelled_caught,
            "stream": got,
        }

    result = anyio.run(main, backend="asyncio", backend_options={"loop_factory": loop_factory})
    assert result == {
        "loop": LOOP_NAME[impl],
        "echoes": [f"HELLO {i}".encode() for i in range(20)],
        "in_thread": True,
        "timed_out": True,
        "stream": [0, 1, 2, 3, 4],
    }


# --- Starlette and FastAPI through uvicorn -----------------------------------


def starlette_app() -> tuple[Any, dict[str, Any]]:
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.routing import Route, WebSocketRoute

    state: dict[str, Any] = {"background": []}

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        state["startup"] = loop_name()
        yield
        state["shutdown"] = loop_name()

    async def home(request: Any) -> Any:
        return JSONResponse({"loop": loop_name(), "query": dict(request.query_params)})

    async def stream(request: Any) -> Any:
        async def chunks() -> Any:
            for i in range(50):
                yield f"chunk {i}\n".encode()
                await asyncio.sleep(0)

        return StreamingResponse(chunks(), media_type="text/plain")

    async def later(request: Any) -> Any:
        return PlainTextResponse("accepted", background=BackgroundTask(state["background"].append, loop_name()))

    async def echo(websocket: Any) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(text[::-1])

    routes = [
        Route("/", home),
        Route("/stream", stream),
        Route("/later", later),
        WebSocketRoute("/ws", echo),
    ]
    return Starlette(routes=routes, lifespan=lifespan), state


def test_starlette_through_uvicorn(impl):
    pytest.importorskip("starlette")
    websockets_client = pytest.importorskip("websockets.sync.client")
    app, state = starlette_app()
    with uvicorn_in_thread(app, impl) as base_url:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            home = client.get("/", params={"a": "1"}).json()
            stream = client.get("/stream").text
            later = client.get("/later").text
            missing = client.get("/missing").status_code
        with websockets_client.connect(base_url.replace("http", "ws") + "/ws") as ws:
            echoes = []
            for i in range(20):
                ws.send(f"frame {i}")
                echoes.append(ws.recv())
    assert home == {"loop": LOOP_NAME[impl], "query": {"a": "1"}}
    assert stream == "".join(f"chunk {i}\n" for i in range(50))
    assert later == "accepted"
    assert missing == 404
    assert echoes == [f"frame {i}"[::-1] for i in range(20)]
    assert state == {"startup": LOOP_NAME[impl], "shutdown": LOOP_NAME[impl], "background": [LOOP_NAME[impl]]}


# Source text, run without ``from __future__ import annotations``: FastAPI
# reads the endpoints' annotations as objects.
FASTAPI_APP = """\
import asyncio, threading
from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel

def loop_name():
    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__qualname__}"

class Item(BaseModel):
    name: str
    qty: int

app = FastAPI()

async def offset(q: int = 0) -> int:
    return q

@app.post("/items")
async def create(item: Item, extra: int = Depends(offset)):
    await asyncio.sleep(0)
    return {"name": item.name, "total": item.qty * 2 + extra, "loop": loop_name()}

@app.get("/items/{item_id}")
async def read(item_id: int):
    if item_id != 1:
        raise HTTPException(status_code=404, detail="no such item")
    return {"id": item_id}

@app.get("/sync")
def blocking():
    # A plain def endpoint runs in a worker thread, off the loop's thread.
    return {"off_loop": threading.current_thread().name != "uvicorn"}
"""


def load_app(source: str, name: str) -> Any:
    namespace: dict[str, Any] = {"__name__": name}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    return namespace["app"]


def test_fastapi_through_uvicorn(impl):
    pytest.importorskip("fastapi")
    with (
        uvicorn_in_thread(load_app(FASTAPI_APP, "fastapi_app"), impl) as base_url,
        httpx.Client(base_url=base_url, timeout=30) as client,
    ):
        created = [client.post("/items", params={"q": i}, json={"name": "bolt", "qty": i}).json() for i in range(10)]
        found = client.get("/items/1").json()
        missing = client.get("/items/2")
        invalid = client.post("/items", json={"name": "bolt", "qty": "many"})
        blocking = client.get("/sync").json()
    assert created == [{"name": "bolt", "total": 3 * i, "loop": LOOP_NAME[impl]} for i in range(10)]
    assert found == {"id": 1}
    assert (missing.status_code, missing.json()) == (404, {"detail": "no such item"})
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"] == ["body", "qty"]
    assert blocking == {"off_loop": True}


# --- Django's ASGI handler through uvicorn -----------------------------------

DJANGO_APP = """\
import asyncio, threading
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="recipe-test-only",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["127.0.0.1"],
    INSTALLED_APPS=[],
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    DATABASES={},
)

import django
django.setup()

from django.core.asgi import get_asgi_application
from django.http import JsonResponse
from django.urls import path

async def async_view(request):
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    return JsonResponse({"loop": f"{type(loop).__module__}.{type(loop).__qualname__}", "q": request.GET.get("q")})

def sync_view(request, n):
    # Django runs a sync view in a thread (asgiref's sync_to_async).
    return JsonResponse({"square": n * n, "off_main_thread": threading.current_thread() is not threading.main_thread()})

urlpatterns = [path("", async_view), path("square/<int:n>", sync_view)]
application = get_asgi_application()
"""


def test_django_asgi_through_uvicorn(impl, tmp_path, server_process):
    pytest.importorskip("django")
    pytest.importorskip("uvicorn")
    (tmp_path / "django_app.py").write_text(DJANGO_APP)
    loop = "asyncio" if impl == "asyncio" else "ferroloop:new_event_loop"
    argv = [sys.executable, "-m", "uvicorn", "django_app:application", "--host", "127.0.0.1", "--port", "0"]
    argv += ["--loop", loop, "--lifespan", "off"]
    server = server_process(argv, UVICORN_URL)
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        home = [client.get("/", params={"q": str(i)}).json() for i in range(10)]
        squares = [client.get(f"/square/{i}").json() for i in range(10)]
        missing = client.get("/nowhere").status_code
    assert home == [{"loop": LOOP_NAME[impl], "q": str(i)} for i in range(10)]
    assert squares == [{"square": i * i, "off_main_thread": True} for i in range(10)]
    assert missing == 404
    assert server.stop() in (0, -signal.SIGTERM), server.log()
    assert "Traceback" not in server.log(), server.log()


def test_recipes_doc_matches_the_tests():
    """docs/recipes.md shows the commands and calls these tests run."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "recipes.md").read_text()
    for snippet in [
        "--loop ferroloop:new_event_loop",
        'uvicorn.Config(app, loop="ferroloop:new_event_loop"',
        "asyncio.run(serve(app, config), loop_factory=ferroloop.new_event_loop)",
        "ferroloop.run(serve(app, config))",
        "web.run_app(app, loop=ferroloop.new_event_loop())",
        'backend_options={"loop_factory": ferroloop.new_event_loop}',
        "gunicorn -k ferroloop.workers.UvicornWorker",
        "gunicorn -k ferroloop.workers.AiohttpWorker",
        "reuse_port=True",
        "python -m ferroloop -m uvicorn",
        "--loop none",
    ]:
        assert snippet in doc, snippet
