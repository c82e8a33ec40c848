"""Real libraries over TLS on both loops: aiohttp over HTTPS (server and
client on the loop under test) and asyncpg with ``ssl=`` against a
PostgreSQL server the tests start with TLS on.

Certificates come from ``ssl_support``: the server presents the certificate
for ``localhost``/``127.0.0.1``, clients trust the test CA and check the
hostname (verify-full). Everything binds to 127.0.0.1 or a unix socket in a
temporary directory.

PostgreSQL: the ``postgres`` fixture finds the server's binaries (Debian's
``/usr/lib/postgresql/*/bin``, else ``pg_config --bindir``, else ``PATH``);
if there are none and we are root with ``apt-get``, it installs
``postgresql``; else the asyncpg tests are skipped. It runs ``initdb`` into a
temporary directory (as the system user ``ferroloop-pg`` when we are root:
PostgreSQL refuses to run as root), turns TLS on with the test certificate,
accepts only ``hostssl`` connections from 127.0.0.1 with a SCRAM password,
starts the server with ``pg_ctl -w`` and stops it at the end of the session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import glob
import hashlib
import io
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from ssl_support import (
    HOST,
    HOSTNAME,
    Certs,
    certs_fixture,  # noqa: F401  (the certs fixture)
    check_accept_failures,
    client_context,
    pattern,
    server_context,
)

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402

MIB = 1024 * 1024


# ----- aiohttp over HTTPS


async def start_https(app: Any, ctx: ssl.SSLContext) -> tuple[Any, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0, ssl_context=ctx)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


def https_app() -> Any:
    async def hello(request: Any) -> Any:
        tls = request.transport.get_extra_info("ssl_object")
        return web.json_response({"scheme": request.scheme, "secure": request.secure, "version": tls.version()})

    async def echo(request: Any) -> Any:
        return web.Response(body=await request.read(), content_type="application/octet-stream")

    async def digest(request: Any) -> Any:
        h = hashlib.sha256()
        n = 0
        async for chunk in request.content.iter_chunked(65536):
            h.update(chunk)
            n += len(chunk)
        return web.json_response({"sha256": h.hexdigest(), "size": n})

    app = web.Application(client_max_size=64 * MIB)
    app.router.add_get("/hello", hello)
    app.router.add_post("/echo", echo)
    app.router.add_post("/sha256", digest)
    return app


def test_aiohttp_https_get_and_10_mib_upload(loop, certs):
    body = pattern(10 * MIB, seed=6)

    async def main():
        runner, port = await start_https(https_app(), server_context(certs))
        base = f"https://{HOSTNAME}:{port}"
        try:
            async with aiohttp.ClientSession() as s:
                ctx = client_context(certs)
                async with s.get(f"{base}/hello", ssl=ctx) as r:
                    hello = (r.status, await r.json())
                async with s.post(f"{base}/sha256", data=io.BytesIO(body), ssl=ctx) as r:
                    digest = await r.json()
                async with s.post(f"{base}/echo", data=io.BytesIO(body), ssl=ctx) as r:
                    # The connection is the response's until its 10 MiB are read.
                    tls = r.connection.transport.get_extra_info("ssl_object")
                    peer = (tls.version(), tls.getpeercert()["subjectAltName"])
                    echoed = (r.status, await r.read())
        finally:
            await runner.cleanup()
        return hello, peer, digest, echoed

    hello, peer, digest, echoed = loop.run_until_complete(main())
    assert hello == (200, {"scheme": "https", "secure": True, "version": "TLSv1.3"})
    assert peer == ("TLSv1.3", (("DNS", HOSTNAME), ("IP Address", HOST)))
    assert digest == {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
    assert echoed[0] == 200
    assert len(echoed[1]) == len(body) and echoed[1] == body


def test_aiohttp_wss_echo_with_clean_close(loop, certs):
    server_side: dict[str, Any] = {}

    async def ws_handler(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        server_side["close_code"] = ws.close_code
        server_side["closed"] = ws.closed
        return ws

    big = pattern(MIB, seed=7)

    async def main():
        app = web.Application()
        app.router.add_get("/ws", ws_handler)
        runner, port = await start_https(app, server_context(certs))
        got = []
        try:
            async with (
                aiohttp.ClientSession() as s,
                s.ws_connect(f"wss://{HOSTNAME}:{port}/ws", ssl=client_context(certs), max_msg_size=4 * MIB) as ws,
            ):
                tls = ws.get_extra_info("ssl_object")
                peer = (tls.version(), tls.getpeercert()["subject"])
                for i in range(100):
                    await ws.send_str(f"m{i}")
                    got.append((await ws.receive()).data)
                await ws.send_bytes(big)
                got.append((await ws.receive()).data)
                assert await ws.close()
                client_close = (ws.close_code, ws.closed)
        finally:
            await runner.cleanup()
        return peer, got, client_close

    peer, got, client_close = loop.run_until_complete(main())
    assert peer == ("TLSv1.3", ((("commonName", HOSTNAME),),))
    assert got[:100] == [f"echo:m{i}" for i in range(100)]
    assert got[100] == big[::-1]
    assert client_close == (1000, True)
    assert server_side == {"close_code": 1000, "closed": True}


@pytest.mark.parametrize(
    ("case", "code", "detail"),
    [
        ("wrong-hostname", 62, "Hostname mismatch, certificate is not valid for 'wrong.example'."),
        ("untrusted-ca", 20, "unable to get local issuer certificate"),
    ],
)
def test_aiohttp_certificate_error(loop, loop_errors, certs, case, code, detail):
    """A certificate the client rejects: aiohttp raises
    ``ClientConnectorCertificateError`` around asyncio's
    ``SSLCertVerificationError``; the request never reaches the handler."""
    handled = []

    async def hello(request):
        handled.append(request.path)
        return web.Response(text="hello")

    async def main():
        app = web.Application()
        app.router.add_get("/hello", hello)
        which = "server" if case == "wrong-hostname" else "rogue_server"
        runner, port = await start_https(app, server_context(certs, which=which))
        kw = {"server_hostname": "wrong.example"} if case == "wrong-hostname" else {}
        try:
            async with aiohttp.ClientSession() as s:
                with pytest.raises(aiohttp.ClientError) as ei:
                    await s.get(f"https://{HOST}:{port}/hello", ssl=client_context(certs), **kw)
                # Let the server's side of the failed handshake finish.
                await asyncio.sleep(0.1)
        finally:
            await runner.cleanup()
        return ei.value

    exc = loop.run_until_complete(main())
    assert type(exc) is aiohttp.ClientConnectorCertificateError, repr(exc)
    cert_error = exc.certificate_error
    assert type(cert_error) is ssl.SSLCertVerificationError, repr(cert_error)
    assert (cert_error.verify_code, cert_error.verify_message) == (code, detail)
    assert cert_error.reason == "CERTIFICATE_VERIFY_FAILED"
    assert handled == []
    check_accept_failures(loop, loop_errors)


# ----- PostgreSQL with TLS, for asyncpg

PG_USER = "ferroloop"
PG_PASSWORD = "ferroloop-tls-test"
PG_SYSTEM_USER = "ferroloop-pg"
# Installing PostgreSQL (first use on a fresh CI machine) can take minutes.
PG_TIMEOUT = pytest.mark.timeout(300)


#: What `make memcheck` sets for the AddressSanitizer runtime (scripts/memcheck.sh).
SANITIZER_ENV = ("LD_PRELOAD", "ASAN_OPTIONS", "LSAN_OPTIONS")


@dataclasses.dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    database: str


def _has_server(bindir: str) -> bool:
    return all(os.access(os.path.join(bindir, b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres"))


def _pg_bindir() -> str | None:
    """Debian's newest /usr/lib/postgresql/N/bin, else ``pg_config --bindir``, else pg_ctl's on PATH."""
    debian = glob.glob("/usr/lib/postgresql/*/bin")
    debian.sort(key=lambda p: [int(x) for x in p.split("/")[-2].split(".") if x.isdigit()])
    candidates = debian[::-1]
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        res = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=30)
        candidates.append(res.stdout.strip())
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is not None:
        candidates.append(os.path.dirname(pg_ctl))
    return next((d for d in candidates if d and _has_server(d)), None)


def _install_postgres() -> str:
    """``apt-get install postgresql`` (as root, where there is apt-get): "" or why it could not."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "PostgreSQL is not installed (and installing it needs root and apt-get)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"]
    res = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    if res.returncode != 0:
        # A fresh image may have no package lists yet.
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=300)
        res = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    if res.returncode != 0:
        return f"PostgreSQL is not installed and apt-get failed: {res.stderr.strip()[-500:]}"
    return ""


def _system_user() -> pwd.struct_passwd | None:
    """The unprivileged user the server runs as when we are root (created if missing)."""
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        pass
    if shutil.which("useradd") is not None:
        # --user-group: a group of its own. A concurrent session may win the race.
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
            capture_output=True, timeout=60,
        )  # fmt: skip
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        pass
    try:
        return pwd.getpwnam("postgres")  # the distribution's own
    except KeyError:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class _Cluster:
    """A PostgreSQL data directory under ``base``, run as ``owner`` (None: as ourselves)."""

    def __init__(self, bindir: str, base: str, owner: pwd.struct_passwd | None) -> None:
        self.bindir = bindir
        self.base = base
        self.data = os.path.join(base, "data")
        self.sockdir = os.path.join(base, "sock")
        self.log = os.path.join(base, "server.log")
        self.owner = owner
        # Not the memory checker's runtime either (`make memcheck` preloads it
        # into every child): PostgreSQL is not what it checks, and initdb
        # under it did not finish in 90 seconds.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k not in SANITIZER_ENV}
        self.env.update(HOME=base, LC_ALL="C", LANG="C")

    def chown(self, path: str) -> None:
        if self.owner is not None:
            os.chown(path, self.owner.pw_uid, self.owner.pw_gid)

    def run(self, *argv: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        kw: dict[str, Any] = {}
        if self.owner is not None:
            kw = {"user": self.owner.pw_uid, "group": self.owner.pw_gid, "extra_groups": []}
        cmd = [os.path.join(self.bindir, argv[0]), *argv[1:]]
        return subprocess.run(cmd, cwd=self.base, env=self.env, capture_output=True, text=True, timeout=timeout, **kw)

    def write(self, name: str, text: str, mode: int = 0o600, append: bool = False) -> None:
        path = os.path.join(self.data, name)
        with open(path, "a" if append else "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, mode)
        self.chown(path)

    def init(self, certs: Certs) -> None:
        os.makedirs(self.sockdir, mode=0o700)
        for path in (self.base, self.sockdir):
            self.chown(path)
        pwfile = os.path.join(self.base, "pwfile")
        with open(pwfile, "w", encoding="utf-8") as f:
            f.write(PG_PASSWORD + "\n")
        self.chown(pwfile)
        res = self.run("initdb", "-D", self.data, "-U", PG_USER, "--pwfile", pwfile, "-E", "UTF8",
                       "--locale", "C", "--auth-local", "trust", "--auth-host", "scram-sha-256", "--no-sync")  # fmt: skip
        assert res.returncode == 0, f"initdb failed: {res.stdout}\n{res.stderr}"
        # The key must be the server user's own, mode 0600, or the server refuses it.
        with open(certs.server_cert, encoding="ascii") as f:
            self.write("server.crt", f.read(), 0o644)
        with open(certs.server_key, encoding="ascii") as f:
            self.write("server.key", f.read(), 0o600)
        self.write(
            "pg_hba.conf",
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhost all all 0.0.0.0/0 reject\n",
        )

    def start(self) -> int:
        """Start on a free port (a few tries: the port may be taken meanwhile); return it."""
        for _ in range(3):
            port = _free_port()
            settings = {
                "listen_addresses": f"'{HOST}'",
                "port": str(port),
                "unix_socket_directories": f"'{self.sockdir}'",
                "ssl": "on",
                "ssl_cert_file": "'server.crt'",
                "ssl_key_file": "'server.key'",
                "max_connections": "30",
                "shared_buffers": "16MB",
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
            }
            conf = "".join(f"{k} = {v}\n" for k, v in settings.items())
            self.write("postgresql.conf", "\n# ferroloop tests\n" + conf, append=True)
            res = self.run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "start")
            if res.returncode == 0:
                return port
        with open(self.log, encoding="utf-8", errors="replace") as f:
            log = f.read()[-3000:]
        raise AssertionError(f"pg_ctl start failed: {res.stdout}\n{res.stderr}\n{log}")

    def stop(self) -> None:
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            res = self.run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "30", "stop")
            if res.returncode != 0:
                self.run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")


@pytest.fixture(scope="session")
def postgres(certs: Certs) -> Iterator[Postgres]:
    """A PostgreSQL server with TLS on 127.0.0.1, for the session."""
    bindir = _pg_bindir()
    if bindir is None:
        why = _install_postgres()
        bindir = _pg_bindir()
        if bindir is None:
            pytest.skip(why or "PostgreSQL's binaries were not found after installing it")
    owner = None
    if os.geteuid() == 0:
        owner = _system_user()
        if owner is None:
            pytest.skip("running as root and no unprivileged user could be made for PostgreSQL")
    # Not under pytest's basetemp: that is private to us, and the server user must reach it.
    cluster = _Cluster(bindir, tempfile.mkdtemp(prefix="fl-pg-"), owner)
    try:
        cluster.init(certs)
        port = cluster.start()
        yield Postgres(host=HOSTNAME, port=port, user=PG_USER, password=PG_PASSWORD, database="postgres")
    finally:
        cluster.stop()
        shutil.rmtree(cluster.base, ignore_errors=True)


@pytest.fixture
def asyncpg() -> Any:
    return pytest.importorskip("asyncpg")


def pg_connect(asyncpg: Any, pg: Postgres, ctx: ssl.SSLContext) -> Any:
    return asyncpg.connect(
        host=pg.host, port=pg.port, user=pg.user, password=pg.password, database=pg.database, ssl=ctx, timeout=15
    )


TLS_QUERY = "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


@PG_TIMEOUT
def test_asyncpg_tls_queries_transaction_and_copy(asyncpg, loop, certs, postgres):
    rows_in = b"".join(f"{i}\t{pattern(48, seed=i).hex()}\n".encode() for i in range(10_000))  # ~1 MB

    async def main():
        conn = await pg_connect(asyncpg, postgres, client_context(certs))
        try:
            tls_obj = conn._transport.get_extra_info("ssl_object")
            client_tls = (conn._protocol.is_ssl, tls_obj.version(), tls_obj.getpeercert()["subject"])
            server_tls = tuple(await conn.fetchrow(TLS_QUERY))
            one = await conn.fetchval("SELECT 1 + 1")
            stmt = await conn.prepare("SELECT $1::int * 3, $2::text || '!'")
            prepared = [tuple(await stmt.fetchrow(i, f"s{i}")) for i in range(20)]

            await conn.execute("CREATE TEMP TABLE t (id int PRIMARY KEY, payload text NOT NULL)")
            async with conn.transaction():
                await conn.execute("INSERT INTO t VALUES (1, 'kept')")
            with pytest.raises(ZeroDivisionError):
                async with conn.transaction():
                    await conn.execute("INSERT INTO t VALUES (2, 'rolled back')")
                    1 / 0  # noqa: B018
            after_tx = [tuple(r) for r in await conn.fetch("SELECT id, payload FROM t ORDER BY id")]
            await conn.execute("TRUNCATE t")

            copied_in = await conn.copy_to_table("t", source=io.BytesIO(rows_in), format="text")
            out = io.BytesIO()
            copied_out = await conn.copy_from_table("t", output=out, format="text")
            stats = tuple(await conn.fetchrow("SELECT count(*), sum(id), sum(length(payload)) FROM t"))
        finally:
            await conn.close()
        return client_tls, server_tls, one, prepared, after_tx, copied_in, copied_out, out.getvalue(), stats

    client_tls, server_tls, one, prepared, after_tx, copied_in, copied_out, rows_out, stats = loop.run_until_complete(
        main()
    )
    assert client_tls == (True, "TLSv1.3", ((("commonName", HOSTNAME),),))
    assert server_tls == (True, "TLSv1.3")
    assert one == 2
    assert prepared == [(i * 3, f"s{i}!") for i in range(20)]
    assert after_tx == [(1, "kept")]
    assert (copied_in, copied_out) == ("COPY 10000", "COPY 10000")
    assert len(rows_in) > 1_000_000
    assert rows_out == rows_in
    assert stats == (10_000, sum(range(10_000)), 96 * 10_000)


@PG_TIMEOUT
def test_asyncpg_rejects_a_server_of_an_untrusted_ca(asyncpg, loop, certs, postgres):
    """A context that does not trust the test CA: asyncpg passes the loop's
    ``SSLCertVerificationError`` from ``start_tls`` through unwrapped."""

    async def main():
        with pytest.raises(Exception) as ei:
            await pg_connect(asyncpg, postgres, ssl.create_default_context(cafile=certs.rogue_ca))
        return ei.value

    exc = loop.run_until_complete(main())
    assert type(exc) is ssl.SSLCertVerificationError, repr(exc)
    assert (exc.verify_code, exc.verify_message) == (20, "unable to get local issuer certificate")
    assert exc.reason == "CERTIFICATE_VERIFY_FAILED"


@PG_TIMEOUT
def test_asyncpg_pool_of_5_runs_50_concurrent_queries(asyncpg, loop, certs, postgres):
    async def query(pool, i):
        async with pool.acquire() as conn:
            # Every connection of the pool is busy at once for a moment.
            return tuple(await conn.fetchrow("SELECT $1::int * 2, pg_backend_pid(), pg_sleep(0.02)::text", i))

    async def main():
        pool = await asyncpg.create_pool(
            host=postgres.host,
            port=postgres.port,
            user=postgres.user,
            password=postgres.password,
            database=postgres.database,
            ssl=client_context(certs),
            min_size=5,
            max_size=5,
            timeout=15,
        )
        try:
            results = await asyncio.wait_for(asyncio.gather(*(query(pool, i) for i in range(50))), 30)
            pids = sorted({pid for _, pid, _ in results})
            tls = await pool.fetch("SELECT pid, ssl FROM pg_stat_ssl WHERE pid = ANY($1::int[])", pids)
        finally:
            await asyncio.wait_for(pool.close(), 15)
        return results, pids, sorted(tuple(r) for r in tls)

    results, pids, tls = loop.run_until_complete(main())
    assert [r[0] for r in results] == [i * 2 for i in range(50)]
    assert len(pids) == 5
    assert tls == [(pid, True) for pid in pids]
