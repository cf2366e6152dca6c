"""Load benchmark of `msgpolicy serve` on 127.0.0.1, against SQLite and PostgreSQL. Stops by itself.

    python bench/serve_bench.py [--stores sqlite,postgresql] [--postgres URL] [--seconds 5]
        [--rate 200] [--history 20000] [--json OUT.json]

For each store a fresh server process is started (its own SQLite file, or a
database of its own created on the PostgreSQL server and dropped afterwards)
on a free loopback port, and measured in this order:

1. history: `--history` records of a seeded log (bench/generate.py; messages
   with a category, and buyer events) committed through /v1/check in batches of
   1,000 records, then the same batches checked again without commit:
   records/s for each;
2. single-record checks, closed loop at concurrency 1, 8 and 64 for
   `--seconds` each: requests/s, p50, p99, errors;
3. single-record checks at a fixed `--rate` (open loop: each request is due at
   its slot and its latency counts from that slot, so a slow server cannot hide
   queueing), for `--seconds`, without and with commit.

Every request is a message of the same log, so each check reads that buyer's
and order's stored history. Latency is measured by the client, on the same two
cores as the server. The last lines are a Markdown table.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

DEFAULT_PG = os.environ.get("MSGPOLICY_TEST_POSTGRES", "postgresql://postgres:postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_records(n: int, seed: int, tmp: Path) -> list[dict]:
    """n records (messages with a category, and buyer events) of a seeded log, in time order."""
    from generate import generate

    path = tmp / "log.jsonl"
    generate(int(n * 1.6) + 100, seed, path)
    out = []
    for line in path.read_bytes().splitlines():
        rec = orjson.loads(line)
        if "message_id" in rec and not rec.get("category"):
            continue  # a raw record is classified first (tens of ms): not what this bench measures
        out.append(rec)
        if len(out) == n:
            break
    return out


@contextlib.contextmanager
def store_for(kind: str, tmp: Path, pg_url: str):
    if kind == "sqlite":
        yield str(tmp / f"bench-{uuid.uuid4().hex[:8]}.sqlite3")
        return
    import psycopg
    from urllib.parse import urlsplit, urlunsplit

    admin = psycopg.connect(pg_url, autocommit=True)
    name = f"msgpolicy_bench_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(pg_url)._replace(path="/" + name))
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextlib.contextmanager
def server(store: str, tmp: Path):
    port = free_port()
    log = open(tmp / f"server-{port}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--store", store], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited: {Path(log.name).read_text()[-2000:]}")
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server not ready")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class Conn:
    """A keep-alive HTTP/1.1 connection speaking just enough for this bench: a client that costs the
    shared cores far less than a general one (httpx spends more CPU per request than the server)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(), len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    def close(self):
        if self.writer is not None:
            self.writer.close()


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def batches(url: str, records: list[dict], commit: bool) -> dict:
    errors, start = 0, time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        for i in range(0, len(records), 1000):
            r = await http.post("/v1/check", content=orjson.dumps({"records": records[i:i + 1000], "commit": commit}),
                                headers={"content-type": "application/json"})
            errors += r.status_code != 200
    wall = time.perf_counter() - start
    return {"records": len(records), "seconds": round(wall, 3), "records_per_s": round(len(records) / wall),
            "errors": errors}


def singles(records: list[dict]) -> list[bytes]:
    return [orjson.dumps({"record": r}) for r in records if "message_id" in r]


async def closed_loop(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> dict:
    host, port = url.split("//")[1].split(":")
    latencies, errors = [], 0
    end = time.perf_counter() + seconds
    counter = iter(range(1 << 62))

    async def worker():
        nonlocal errors
        conn = Conn(host, int(port))
        try:
            while time.perf_counter() < end:
                body = bodies[next(counter) % len(bodies)]
                t = time.perf_counter()
                try:
                    ok = await conn.post("/v1/check", body) == 200
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    ok, conn = False, Conn(host, int(port))
                latencies.append(time.perf_counter() - t)
                errors += not ok
        finally:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    return {"concurrency": concurrency, "requests": len(latencies), "requests_per_s": round(len(latencies) / wall),
            "p50_ms": round(pct(latencies, 50) * 1000, 2), "p99_ms": round(pct(latencies, 99) * 1000, 2),
            "errors": errors}


async def open_loop(url: str, bodies: list[bytes], rate: float, seconds: float) -> dict:
    """Requests due at a fixed rate; each takes an idle connection (a new one if none is idle)."""
    host, port = url.split("//")[1].split(":")
    n = int(rate * seconds)
    latencies, errors = [], 0
    idle: list[Conn] = []
    opened = 0
    start = time.perf_counter()

    async def one(i: int):
        nonlocal errors, opened
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if idle:
            conn = idle.pop()
        else:
            conn, opened = Conn(host, int(port)), opened + 1
        try:
            ok = await conn.post("/v1/check", bodies[i % len(bodies)]) == 200
            idle.append(conn)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            ok = False
            conn.close()
        latencies.append(time.perf_counter() - due)
        errors += not ok

    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - start
    for conn in idle:
        conn.close()
    return {"rate": rate, "requests": n, "achieved_per_s": round(n / wall), "p50_ms": round(pct(latencies, 50) * 1000, 2),
            "p99_ms": round(pct(latencies, 99) * 1000, 2), "max_ms": round(max(latencies) * 1000, 2),
            "errors": errors, "connections": opened}


def commit_bodies(records: list[dict], tag: str) -> list[bytes]:
    out = []
    for r in records:
        if "message_id" in r:
            out.append(orjson.dumps({"record": dict(r, message_id=f"{r['message_id']}-{tag}"), "commit": True}))
    return out


def bench_store(kind: str, records: list[dict], args, tmp: Path) -> dict:
    result: dict = {"store": kind}
    with store_for(kind, tmp, args.postgres) as store, server(store, tmp) as url:
        result["commit_batches_1000"] = asyncio.run(batches(url, records, commit=True))
        print(f"[{kind}] commit in batches of 1,000: {result['commit_batches_1000']}", flush=True)
        result["check_batches_1000"] = asyncio.run(batches(url, records, commit=False))
        print(f"[{kind}] check in batches of 1,000: {result['check_batches_1000']}", flush=True)
        bodies = singles(records)
        result["closed_loop"] = []
        for c in (1, 8, 64):
            row = asyncio.run(closed_loop(url, bodies, c, args.seconds))
            result["closed_loop"].append(row)
            print(f"[{kind}] single checks, concurrency {c}: {row}", flush=True)
        result["rate_check"] = asyncio.run(open_loop(url, bodies, args.rate, args.seconds))
        print(f"[{kind}] single checks at {args.rate:g}/s: {result['rate_check']}", flush=True)
        result["rate_commit"] = asyncio.run(open_loop(url, commit_bodies(records, "r"), args.rate, args.seconds))
        print(f"[{kind}] single commits at {args.rate:g}/s: {result['rate_commit']}", flush=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--postgres", default=DEFAULT_PG, help="admin URL of the PostgreSQL server")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--history", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        records = log_records(args.history, args.seed, tmp)
        for kind in args.stores.split(","):
            results.append(bench_store(kind, records, args, tmp))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print("\n| store | measure | requests/s or records/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    for r in results:
        for name in ("commit_batches_1000", "check_batches_1000"):
            b = r[name]
            print(f"| {r['store']} | {name.replace('_', ' ')} | {b['records_per_s']:,} records/s | | | {b['errors']} |")
        for c in r["closed_loop"]:
            print(f"| {r['store']} | single check, concurrency {c['concurrency']} | {c['requests_per_s']:,} | "
                  f"{c['p50_ms']} | {c['p99_ms']} | {c['errors']} |")
        for name in ("rate_check", "rate_commit"):
            o = r[name]
            label = "single check" if name == "rate_check" else "single commit"
            print(f"| {r['store']} | {label} at {o['rate']:g}/s | {o['achieved_per_s']:,} | {o['p50_ms']} | "
                  f"{o['p99_ms']} | {o['errors']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
