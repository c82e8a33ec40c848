"""Server memory per idle TLS connection.

usage: python benchmarks/net/tls_idle.py LOOP [--conns N] [--size BYTES]

Starts ``servers.py LOOP tls`` (a self-signed EC certificate made with the
``openssl`` command), opens N TLS connections from an asyncio client in this
process, echoes SIZE bytes on each, and prints the server's RSS growth per
connection (VmRSS after all are idle, minus after the first).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def make_cert(d: str) -> tuple[str, str]:
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    subprocess.run(
        ["openssl", "req", "-x509", *ec, "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost"],
        check=True,
        capture_output=True,
    )
    return cert, key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def clients(pid: int, port: int, conns: int, size: int) -> float:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    payload = b"x" * size
    opened = []

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        writer.write(payload)
        await reader.readexactly(size)
        opened.append(writer)

    await one()
    await asyncio.sleep(0.3)
    base = rss(pid)
    for _ in range(conns):
        await one()
    await asyncio.sleep(0.5)
    per_conn = (rss(pid) - base) / conns
    for writer in opened:
        writer.close()
    return per_conn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("loop")
    ap.add_argument("--conns", type=int, default=500)
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cert, key = make_cert(d)
        port = free_port()
        env = dict(os.environ, BENCH_TLS_CERT=cert, BENCH_TLS_KEY=key)
        server = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "servers.py"), args.loop, "tls", f"127.0.0.1:{port}"],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        try:
            assert server.stdout is not None
            if "READY" not in server.stdout.readline():
                raise SystemExit("the server did not start")
            per_conn = asyncio.run(clients(server.pid, port, args.conns, args.size))
        finally:
            server.terminate()
            server.wait()
    print(
        f"{args.loop}: {per_conn / 1024:.1f} KiB per idle TLS connection ({args.conns} connections, {args.size} B echo)"
    )


if __name__ == "__main__":
    main()
