"""The network group: one server per (workload, loop), driven by the compiled netbench client.

For every pair, interleaved across loops and repeated (medians reported): the
server (benchmarks/net/servers.py on the loop, or netbench's pure-Rust server
for the "limit" column) starts pinned to one CPU and prints READY; the client
runs pinned to another; the server's CPU time (utime + stime from
/proc/PID/stat) is read when the client's measured window opens and when it
closes; the server is stopped. Reported: requests per second, and the server's
CPU time per request, which does not depend on how fast the load generator is.
The UDP rows count datagram round trips (one datagram in flight per client
socket) and report the datagrams netbench gave up on after its timeout.
The idle row reads the server's VmRSS before and after `netbench client idle`
holds its connections open. The TLS rows use a self-signed EC P-256 certificate
for localhost made for the run (the openssl CLI, else Python's cryptography);
netbench's rustls client verifies it; their limit server drives the system's OpenSSL 3 (CPython's _ssl
library) through memory BIOs from Rust, with no Python. See benchmarks/README.md.

usage: python benchmarks/net/run.py [--repeat N] [--scale F] [--rows a,b] [--loops a,b]
                                    [--http-client auto|netbench|wrk] [--fresh-malloc] [--out DIR]
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import functools
import importlib.util
import json
import os
import platform
import re
import resource
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
NETBENCH = os.environ.get("NETBENCH", os.path.join(ROOT, "target", "netbench", "release", "netbench"))
SERVERS = os.path.join(HERE, "servers.py")

ALL_LOOPS = ["ferroloop", "asyncio", "uvloop", "rloop", "veloxloop"]
LIMIT = "limit"  # netbench's pure-Rust reference server
# The TLS rows' reference servers (netbench server ...). "limit" runs the first that
# can: OpenSSL 3 (the library CPython's _ssl uses) behind memory BIOs, as ssl.SSLObject
# has it, when libssl.so.3 loads, else rustls. The others can be asked for as extra
# columns with --loops (TLS rows only).
TLS_LIMITS = {
    "limit-openssl-mem": ["tls-openssl", "--bio", "mem"],
    "limit-openssl-fd": ["tls-openssl", "--bio", "fd"],
    "limit-openssl-socket": ["tls-openssl", "--bio", "socket"],
    "limit-rustls": ["tls"],
}
TLS_LIMIT_NAMES = {
    "limit-openssl-mem": "OpenSSL 3 through memory BIOs, as ssl.SSLObject",
    "limit-openssl-fd": "OpenSSL 3 on the socket itself",
    "limit-openssl-socket": "OpenSSL 3 reading the socket, writing through a memory BIO",
    "limit-rustls": "rustls",
}
RATIO_PEERS = ["asyncio", "uvloop", "rloop"]

# At --scale 1; --scale multiplies all three.
DURATION = 1.0  # seconds of measured window per sample
WARMUP = 0.5  # seconds of the same load before it (this machine's CPUs take ~0.3 s to ramp up)
IDLE_CONNS = 10_000
CONNS = 10
UNSUPPORTED = 3  # servers.py's exit status when the loop lacks a feature
UDP_TIMEOUT = 0.1  # seconds netbench waits for a datagram's echo before giving up on it and sending the next

CLK_TCK = os.sysconf("SC_CLK_TCK")


TLS_KINDS = ("tls", "tls-handshake")
TLS_NOT_SPOKEN = "does not speak TLS"  # netbench's error when the server answers in plaintext


@dataclass(frozen=True)
class Row:
    id: str
    label: str
    kind: str  # echo | udp | tls | tls-handshake | http | idle
    flavour: str  # servers.py FLAVOUR
    size: int = 0  # echo message (udp: datagram) size in bytes; tls-handshake: the one echo per connection

    @property
    def unix(self) -> bool:
        return self.flavour.endswith("-unix")

    @property
    def limit_key(self) -> tuple[str, int, bool]:
        """Rows that the same reference server measures the same way share its samples."""
        return (self.kind, self.size, self.unix)


ROWS = [
    *(
        Row(f"{fl}-{k}k", f"echo {fl} {k} KiB", "echo", fl, k * 1024)
        for fl in ("protocol", "streams", "sockets")
        for k in (1, 10, 100)
    ),
    Row("unix-1k", "echo protocol-unix 1 KiB", "echo", "protocol-unix", 1024),
    Row("udp-64", "udp echo 64 B", "udp", "udp", 64),
    Row("udp-1k", "udp echo 1 KiB", "udp", "udp", 1024),
    Row("tls-1k", "tls echo 1 KiB", "tls", "tls", 1024),
    Row("tls-100k", "tls echo 100 KiB", "tls", "tls", 100 * 1024),
    Row("tls-handshake", "tls handshakes (conn/s)", "tls-handshake", "tls", 16),
    Row("http", "http (httptools)", "http", "http"),
    Row("uvicorn", "http uvicorn", "http", "uvicorn"),
    Row("idle", "idle conn RSS (protocol)", "idle", "protocol"),
]


class Failed(Exception):
    """A sample that could not be taken; `unsupported` when the loop lacks the feature
    (`label`: what the table shows instead of a number, "—" when None)."""

    def __init__(self, reason: str, unsupported: bool = False, label: str | None = None) -> None:
        super().__init__(reason)
        self.unsupported = unsupported
        self.label = label


# The certificate the TLS rows use, made by make_tls_files (servers.py reads the same variables).
TLS_CERT_ENV, TLS_KEY_ENV = "BENCH_TLS_CERT", "BENCH_TLS_KEY"

OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
x509_extensions = ext
prompt = no
[dn]
CN = localhost
[ext]
subjectAltName = DNS:localhost, IP:127.0.0.1
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
"""


def make_tls_files(tmpdir: str) -> tuple[str, str, str]:
    """A self-signed certificate for localhost and 127.0.0.1 with an EC P-256 key (PEM files in
    tmpdir): (certificate path, key path, how it was made). A leaf, not a CA (rustls's verifier
    refuses a CA certificate as the server's), trusted directly by netbench's --ca.
    Raises Failed when neither the openssl CLI nor Python's cryptography is there."""
    cert, key = os.path.join(tmpdir, "tls-cert.pem"), os.path.join(tmpdir, "tls-key.pem")
    if shutil.which("openssl"):
        config = os.path.join(tmpdir, "openssl.cnf")
        with open(config, "w") as f:
            f.write(OPENSSL_CONFIG)
        cmd = ["openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        cmd += ["-nodes", "-keyout", key, "-out", cert, "-days", "2", "-config", config]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise Failed(f"openssl req: {proc.stderr.strip()[-300:]}")
        return cert, key, "openssl CLI"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise Failed("neither the openssl CLI nor Python's cryptography package is installed") from None
    import ipaddress

    pkey = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    usage = dict.fromkeys(
        ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "key_cert_sign"), False
    )
    usage.update(crl_sign=False, encipher_only=False, decipher_only=False)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pkey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, **usage), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    with open(cert, "wb") as f:
        f.write(builder.sign(pkey, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    with open(key, "wb") as f:
        f.write(
            pkey.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return cert, key, "Python cryptography"


@functools.cache
def tls_limit() -> str:
    """Which of TLS_LIMITS the "limit" column runs for the TLS rows."""
    try:
        ctypes.CDLL("libssl.so.3")
    except OSError:
        return "limit-rustls"
    return "limit-openssl-mem"


def available(name: str) -> bool:
    if name in TLS_LIMITS:
        return True
    name = name.split("+")[0]  # a ferroloop variant (worker.VARIANTS)
    return name == "asyncio" or importlib.util.find_spec(name) is not None


def pick_cpus() -> tuple[int, int]:
    """(server CPU, client CPU): 0 and 1 when this process may use them."""
    cpus = sorted(os.sched_getaffinity(0))
    server = 0 if 0 in cpus else cpus[0]
    client = 1 if 1 in cpus and server != 1 else next((c for c in cpus if c != server), server)
    return server, client


def pinned(cpu: int) -> Callable[[], None]:
    return lambda: os.sched_setaffinity(0, {cpu})


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise Failed("no VmRSS in /proc/PID/status")


class LineReader:
    """Lines from a pipe, with a timeout (no buffering surprises: os.read on the fd)."""

    def __init__(self, stream: Any) -> None:
        self.fd = stream.fileno()
        self.buf = b""
        self.eof = False

    def readline(self, timeout: float) -> str | None:
        """The next line without its newline; None on EOF or timeout."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if self.eof or left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            self.eof = not chunk
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace").strip()


def last_line(f: Any) -> str:
    f.seek(0)
    lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


class Server:
    """One server process, pinned, started and READY on enter, stopped on exit."""

    def __init__(self, loop: str, row: Row, cpu: int, tmpdir: str) -> None:
        self.path = os.path.join(tmpdir, f"{loop}.sock") if row.unix else None
        addr = f"unix:{self.path}" if self.path else "127.0.0.1:0"
        if loop in TLS_LIMITS and row.kind not in TLS_KINDS:
            raise Failed(f"{loop} serves only the TLS rows", unsupported=True)
        if loop in (LIMIT, *TLS_LIMITS) and row.kind in TLS_KINDS:
            tls = ["--cert", os.environ[TLS_CERT_ENV], "--key", os.environ[TLS_KEY_ENV]]
            cmd = [NETBENCH, "server", *TLS_LIMITS[tls_limit() if loop == LIMIT else loop], "--addr", addr, *tls]
        elif loop == LIMIT:
            cmd = [NETBENCH, "server", row.kind if row.kind in ("http", "udp") else "echo", "--addr", addr]
        else:
            cmd = [sys.executable, SERVERS, loop, row.flavour, addr]
        self.cmd, self.cpu = cmd, cpu
        self.addr = ""

    def __enter__(self) -> Server:
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.err, preexec_fn=pinned(self.cpu)
        )
        self.pid = self.proc.pid
        line = LineReader(self.proc.stdout).readline(60)
        if not line or not line.startswith("READY"):
            self.stop()
            why = self.reason() or f"no READY (exit status {self.proc.returncode})"
            self.err.close()
            raise Failed(why, unsupported=self.proc.returncode == UNSUPPORTED)
        self.addr = line.split()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.err.close()

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise Failed(f"server exited ({self.proc.returncode}): {self.reason()}")

    def reason(self) -> str:
        return "" if self.err.closed else last_line(self.err)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        if self.path and os.path.exists(self.path):
            os.unlink(self.path)


def netbench_client(server: Server, cpu: int, args: list[str], timeout: float) -> tuple[dict[str, Any], float]:
    """Runs `netbench client ...`; returns its JSON result and the server's CPU seconds in its window."""
    proc = subprocess.Popen(
        [NETBENCH, "client", *args, "--addr", server.addr],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=pinned(cpu),
    )
    reader = LineReader(proc.stdout)
    cpu0 = cpu1 = None
    result = None
    deadline = time.monotonic() + timeout
    try:
        while (line := reader.readline(deadline - time.monotonic())) is not None:
            if line == "START":
                cpu0 = cpu_seconds(server.pid)
            elif line.startswith("{"):
                cpu1 = cpu_seconds(server.pid)
                result = json.loads(line)
                break
    except FileNotFoundError:  # /proc/PID is gone: the server died
        pass
    finally:
        if proc.poll() is None:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        assert proc.stdout is not None and proc.stderr is not None
        err = proc.stderr.read().decode(errors="replace").strip()
        proc.stdout.close()
        proc.stderr.close()
    server.check_alive()
    server_says = f"; server: {server.reason()[:200]}" if server.reason() else ""
    if result is not None and result["errors"]:
        n, conns, first = result["errors"], result["conns"], result["first_error"][:200]
        if TLS_NOT_SPOKEN in first:  # a loop that ignores create_server's ssl= (veloxloop)
            raise Failed(f"ssl= ignored: {first}", unsupported=True, label="ssl= ignored")
        raise Failed(f"{n} of {conns} connections failed: {first}{server_says}")
    if result is None or cpu0 is None or cpu1 is None:
        why = err.splitlines()[-1] if err else "no result"
        raise Failed(f"client: {why}{server_says}")
    if not result["requests"]:
        raise Failed("no request completed")
    return result, cpu1 - cpu0


_WRK_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


def wrk_client(server: Server, cpu: int, seconds: int) -> tuple[dict[str, Any], float]:
    """The HTTP load through wrk (one thread, CONNS connections) for whole seconds."""
    cpu0 = cpu_seconds(server.pid)
    proc = subprocess.run(
        ["wrk", "-t1", f"-c{CONNS}", f"-d{seconds}s", "--latency", f"http://{server.addr}/"],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        preexec_fn=pinned(cpu),
    )
    server.check_alive()
    cpu1 = cpu_seconds(server.pid)
    out = proc.stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", out)
    if proc.returncode != 0 or not total:
        raise Failed(f"wrk: {(proc.stderr or out).strip()[-200:]}")
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors or bad:
        raise Failed(f"wrk: {errors} socket errors, {bad.group(1) if bad else 0} non-2xx responses")
    lat = {p: float(v) * _WRK_UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)}
    requests = int(total.group(1))
    secs = float(total.group(2)) * _WRK_UNITS[total.group(3)] / 1e6
    result = {"requests": requests, "seconds": secs, "rps": requests / secs}
    result.update(p50_us=lat.get("50"), p99_us=lat.get("99"))
    return result, cpu1 - cpu0


@dataclass
class Plan:
    duration: float
    warmup: float
    idle_conns: int
    http_client: str  # netbench | wrk
    server_cpu: int
    client_cpu: int


def sample(loop: str, row: Row, plan: Plan, tmpdir: str) -> dict[str, Any]:
    """One measurement of one row on one loop (or LIMIT), in fresh processes."""
    with Server(loop, row, plan.server_cpu, tmpdir) as server:
        if row.kind == "idle":
            return idle_sample(server, plan)
        timeout = plan.duration + plan.warmup + 60
        common = ["--conns", str(CONNS), "--duration", f"{plan.duration:g}", "--warmup", f"{plan.warmup:g}"]
        if row.kind in ("echo", "udp", *TLS_KINDS):
            args = [row.kind, "--size", str(row.size), *common]
            if row.kind == "udp":
                args += ["--timeout", f"{UDP_TIMEOUT:g}"]
            elif row.kind in TLS_KINDS:
                args += ["--ca", os.environ[TLS_CERT_ENV]]
            result, cpu = netbench_client(server, plan.client_cpu, args, timeout)
        elif plan.http_client == "wrk":
            # netbench warms up and checks the response bytes; wrk measures.
            warm = ["http", "--conns", str(CONNS), "--duration", f"{max(plan.warmup, 0.1):g}", "--warmup", "0"]
            netbench_client(server, plan.client_cpu, warm, timeout)
            result, cpu = wrk_client(server, plan.client_cpu, max(1, round(plan.duration)))
        else:
            result, cpu = netbench_client(server, plan.client_cpu, ["http", *common], timeout)
        return {
            "rps": result["rps"],
            "cpu_us": cpu * 1e6 / result["requests"],
            "requests": result["requests"],
            "seconds": result["seconds"],
            "p50_us": result.get("p50_us"),
            "p99_us": result.get("p99_us"),
            "client": "wrk" if row.kind == "http" and plan.http_client == "wrk" else "netbench",
            # UDP: datagrams given up on after netbench's timeout (and sent anew), and
            # echoes of those that came back later, in the window.
            **({"lost": result["lost"], "late": result["late"]} if row.kind == "udp" else {}),
        }


def idle_sample(server: Server, plan: Plan) -> dict[str, Any]:
    before = rss_bytes(server.pid)
    proc = subprocess.Popen(
        [NETBENCH, "client", "idle", "--addr", server.addr, "--conns", str(plan.idle_conns)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=pinned(plan.client_cpu),
    )
    try:
        line = LineReader(proc.stdout).readline(60 + plan.idle_conns / 100)
        server.check_alive()
        if not line or not line.startswith("READY"):
            assert proc.stderr is not None
            proc.kill()
            why = proc.stderr.read().decode(errors="replace").strip()[-200:] or "no READY"
            raise Failed(f"idle client: {why}" + (f"; server: {server.reason()}" if server.reason() else ""))
        after = rss_bytes(server.pid)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the client closes its connections and exits
        proc.wait(60)
        for f in (proc.stdout, proc.stderr):
            if f:
                f.close()
    return {"rss_per_conn": (after - before) / plan.idle_conns, "rss_before": before, "rss_after": after}


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M/s"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k/s"
    return f"{x:.0f}/s"


def fmt_cost(row: Row, x: float | None) -> str:
    if x is None:
        return "—"
    if row.kind == "idle":
        return f"{x / 1024:.2f} KiB" if x >= 1024 else f"{x:.0f} B"
    return f"{x:.1f} µs"


def print_table(title: str, head: list[str], rows: list[list[str]], note: str) -> None:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(widths[i]) for i, h in enumerate(head)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).ljust(widths[i]) for i, c in enumerate(r)) + " |")
    print(f"\n{note}")


def ratio(m: dict[str, float | None], other: str) -> str:
    fl, o = m.get("ferroloop"), m.get(other)
    return f"{fl / o:.2f}×" if fl and o else "—"


def report(
    rows: list[Row],
    columns: list[str],
    med: dict[str, dict[str, dict[str, float | None]]],
    samples: dict[str, dict[str, list[dict[str, Any]]]],
    repeat: int,
    labels: dict[tuple[str, str], str] | None = None,
) -> None:
    """Prints the tables; `labels[row id, column]` stands in a cell that has no number."""
    peers = [p for p in RATIO_PEERS if p in columns]
    labels = labels or {}

    def cell(r: Row, c: str, text: str) -> str:
        return labels.get((r.id, c), text) if text == "—" else text

    head = ["workload", *columns, *(f"× {p}" for p in peers)]
    speed = [r for r in rows if r.kind != "idle"]
    if speed:
        body = []
        for r in speed:
            m = {c: med[r.id][c]["rps"] for c in columns}
            body.append([r.label, *(cell(r, c, fmt_rate(m[c])) for c in columns), *(ratio(m, p) for p in peers)])
        print_table(
            "Network: requests per second (higher is better)",
            head,
            body,
            f"Median of {repeat} interleaved runs, {CONNS} connections, one request in flight per connection "
            f"(udp: {CONNS} client sockets, one datagram in flight each; a request is a datagram round trip; "
            f"tls handshakes: {CONNS} workers, a request is a whole connection: connect, full handshake, "
            f"a 16-byte echo, close_notify both ways); "
            f"limit = netbench's pure-Rust epoll server (udp: a blocking recvfrom/sendto loop; "
            f"tls: {TLS_LIMIT_NAMES[tls_limit()]}); "
            f"× peer = ferroloop ÷ peer.",
        )
    body = []
    for r in rows:
        key = "rss_per_conn" if r.kind == "idle" else "cpu_us"
        m = {c: med[r.id][c][key] for c in columns}
        body.append([r.label, *(cell(r, c, fmt_cost(r, m[c])) for c in columns), *(ratio(m, p) for p in peers)])
    print_table(
        "Network: server cost (lower is better)",
        head,
        body,
        "Server CPU time (utime+stime) per request (udp: per datagram echoed; tls handshakes: per connection) "
        "over the measured window; "
        "idle: server RSS growth per open idle connection; × peer = ferroloop ÷ peer.",
    )
    udp = [r for r in rows if r.kind == "udp"]
    if udp:
        lost = {(r.id, c): sum(s.get("lost", 0) for s in samples[r.id][c]) for r in udp for c in columns}
        late = {(r.id, c): sum(s.get("late", 0) for s in samples[r.id][c]) for r in udp for c in columns}
        where = [f"{c}/{r}: {n} lost, {late[r, c]} late" for (r, c), n in lost.items() if n or late[r, c]]
        print(
            "\nUDP datagrams lost (given up on after netbench's timeout and sent anew; every sample): "
            + ("; ".join(where) if where else "none")
        )


def chart(path: str, rows: list[Row], columns: list[str], med: dict[str, Any], title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart")
        return
    speed = [r for r in rows if r.kind != "idle"]
    panels = [
        (speed, "rps", "requests/s × asyncio (higher is better)"),
        (rows, None, "cost × asyncio (lower is better)"),
    ]
    panels = [p for p in panels if p[0]]
    fig, axes = plt.subplots(len(panels), 1, figsize=(14, 5 * len(panels)), squeeze=False)
    n = len(columns)
    for ax, (prow, key, ylabel) in zip(axes[:, 0], panels, strict=True):
        for i, c in enumerate(columns):
            vals = []
            for r in prow:
                k = key or ("rss_per_conn" if r.kind == "idle" else "cpu_us")
                v, base = med[r.id][c][k], med[r.id].get("asyncio", {}).get(k)
                vals.append(v / base if v and base else 0)
            ax.bar([j + i / (n + 1) for j in range(len(prow))], vals, width=1 / (n + 1), label=c)
        ax.set_xticks([j + (n - 1) / (2 * (n + 1)) for j in range(len(prow))])
        ax.set_xticklabels([r.id for r in prow], rotation=20)
        ax.set_ylabel(ylabel)
        ax.axhline(1.0, color="grey", linewidth=0.5)
        ax.legend()
    axes[0, 0].set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    print("chart:", path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply durations and the idle connection count")
    ap.add_argument("--rows", default=",".join(r.id for r in ROWS))
    ap.add_argument("--loops", default=",".join(ALL_LOOPS))
    ap.add_argument("--http-client", choices=["auto", "netbench", "wrk"], default="netbench")
    ap.add_argument(
        "--fresh-malloc",
        action="store_true",
        help="leave glibc's mmap threshold as a fresh process has it (servers.py settle_malloc)",
    )
    ap.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "results"))
    ap.add_argument("--stamp", default=None, help="results file name stamp (default: now)")
    args = ap.parse_args(argv)

    if not os.access(NETBENCH, os.X_OK):
        raise SystemExit(
            f"{NETBENCH} is missing: build it with `make bench` or\n  cargo build --release "
            "--manifest-path benchmarks/netbench/Cargo.toml --target-dir target/netbench"
        )
    by_id = {r.id: r for r in ROWS}
    unknown = [x for x in args.rows.split(",") if x not in by_id]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; known: {', '.join(by_id)}")
    rows = [by_id[x] for x in args.rows.split(",")]
    loops = [lp for lp in args.loops.split(",") if available(lp)]
    columns = [*loops, LIMIT]
    duration = max(0.1, DURATION * args.scale)
    http_client = args.http_client
    if http_client == "auto":
        http_client = "wrk" if shutil.which("wrk") and duration >= 1 else "netbench"
    elif http_client == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed")
    idle_conns = max(100, int(IDLE_CONNS * args.scale))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and idle_conns > hard - 100:
        idle_conns = max(1, hard - 100)
        print(f"RLIMIT_NOFILE's hard limit is {hard}: {idle_conns} idle connections")
    if args.fresh_malloc:
        os.environ["FERROLOOP_BENCH_FRESH_MALLOC"] = "1"
    # Made now, entered around the rounds below; the TLS rows' certificate goes in first.
    tmp = tempfile.TemporaryDirectory(prefix="ferroloop-net-")
    tls_cert = None
    if any(r.kind in TLS_KINDS for r in rows):
        try:
            cert, key, tls_cert = make_tls_files(tmp.name)
        except (Failed, OSError, subprocess.SubprocessError) as e:
            print(f"skipping the TLS rows: could not make a certificate: {e}", flush=True)
            rows = [r for r in rows if r.kind not in TLS_KINDS]
        else:
            os.environ[TLS_CERT_ENV], os.environ[TLS_KEY_ENV] = cert, key  # servers.py reads these
    server_cpu, client_cpu = pick_cpus()
    plan = Plan(
        duration=duration,
        warmup=max(0.05, WARMUP * args.scale),
        idle_conns=idle_conns,
        http_client=http_client,
        server_cpu=server_cpu,
        client_cpu=client_cpu,
    )
    print(
        f"network group: {len(rows)} rows × {len(columns)} servers × {args.repeat} rounds; "
        f"{plan.duration:g} s windows after {plan.warmup:g} s warm-up, {plan.idle_conns} idle connections; "
        f"server on CPU {server_cpu}, client on CPU {client_cpu}; HTTP load: {http_client}",
        flush=True,
    )

    samples: dict[str, dict[str, list[dict[str, Any]]]] = {r.id: {c: [] for c in columns} for r in rows}
    failures: dict[str, dict[str, str]] = {r.id: {} for r in rows}
    labels: dict[tuple[str, str], str] = {}  # cells that show a reason instead of "—"
    skip: set[tuple[str, str]] = set()
    with tmp as tmpdir:
        for rep in range(args.repeat):
            print(f"net round {rep + 1}/{args.repeat}", flush=True)
            limit_done: dict[tuple[str, int, bool], dict[str, Any]] = {}
            for r in rows:
                k = rep % len(columns)
                for c in columns[k:] + columns[:k]:
                    if (r.id, c) in skip:
                        continue
                    if c == LIMIT and r.limit_key in limit_done:
                        samples[r.id][c].append(limit_done[r.limit_key])
                        continue
                    try:
                        s = sample(c, r, plan, tmpdir)
                    except Failed as e:
                        failures[r.id][c] = str(e)
                        sys.stderr.write(f"  {c}/{r.id}: {e}\n" if e.unsupported else f"  {c}/{r.id} failed: {e}\n")
                        if e.unsupported:
                            skip.add((r.id, c))
                            if e.label:
                                labels[r.id, c] = e.label
                        continue
                    samples[r.id][c].append(s)
                    if c == LIMIT:
                        limit_done[r.limit_key] = s

    def median(xs: list[dict[str, Any]], key: str) -> float | None:
        vals = [x[key] for x in xs if x.get(key) is not None]
        return statistics.median(vals) if vals else None

    keys = ("rps", "cpu_us", "p50_us", "p99_us", "rss_per_conn")
    med = {r.id: {c: {k: median(samples[r.id][c], k) for k in keys} for c in columns} for r in rows}
    report(rows, columns, med, samples, args.repeat, labels)

    os.makedirs(args.out, exist_ok=True)
    stamp = args.stamp or datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    meta = {
        "date": stamp,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "repeat": args.repeat,
        "scale": args.scale,
        "duration": plan.duration,
        "warmup": plan.warmup,
        "conns": CONNS,
        "udp_timeout": UDP_TIMEOUT,
        "idle_conns": plan.idle_conns,
        "http_client": plan.http_client,
        "fresh_malloc": args.fresh_malloc,
        "server_cpu": server_cpu,
        "client_cpu": client_cpu,
        "clk_tck": CLK_TCK,
        "tls_cert": tls_cert and f"self-signed, EC P-256, localhost ({tls_cert})",
    }
    out = {
        "meta": meta,
        "rows": {r.id: {"label": r.label, "kind": r.kind, "flavour": r.flavour, "size": r.size} for r in rows},
        "samples": samples,
        "median": med,
        "failures": failures,
    }
    with open(os.path.join(args.out, f"net-{stamp}.json"), "w") as f:
        json.dump(out, f, indent=1)
    title = f"network: ferroloop vs peers (CPython {meta['python']}, {meta['cpus']} CPUs, {stamp})"
    chart(os.path.join(args.out, f"net-{stamp}.png"), rows, columns, med, title)


if __name__ == "__main__":
    main()
