"""Fixtures for the server tests: a store of each kind, a test client, a real server process.

PostgreSQL tests run against a real server: MSGPOLICY_TEST_POSTGRES (default
postgresql://postgres:postgres@127.0.0.1:5432/postgres), each test in a database
of its own. Unreachable: the tests skip with the reason, but fail under CI=true
(or MSGPOLICY_REQUIRE_POSTGRES, which .ci/run sets).
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("MSGPOLICY_TEST_POSTGRES", "postgresql://postgres:postgres@127.0.0.1:5432/postgres")


def _pg_admin():
    import psycopg

    try:
        return psycopg.connect(PG_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        reason = f"PostgreSQL not reachable at {PG_URL}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}"
        if os.environ.get("CI", "").lower() == "true" or os.environ.get("MSGPOLICY_REQUIRE_POSTGRES"):
            pytest.fail(reason + " (CI: the PostgreSQL tests must run, not skip)")
        pytest.skip(reason)


@contextlib.contextmanager
def postgres_database():
    """A fresh database on the test server; its URL. Dropped afterwards."""
    from urllib.parse import urlsplit, urlunsplit

    admin = _pg_admin()
    name = f"msgpolicy_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(PG_URL)
    url = urlunsplit(parts._replace(path="/" + name))
    try:
        yield url
    finally:
        with contextlib.suppress(Exception):
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A store URL of each kind, empty."""
    if request.param == "sqlite":
        yield str(tmp_path / "history.sqlite3")
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
def make_client(store_url):
    """make_client(**build options) → a started TestClient on a fresh app over `store_url`."""
    from fastapi.testclient import TestClient

    from engine.serve import build

    opened = []

    def make(**kw):
        client_addr = kw.pop("client", None)
        app, service = build(store_url, **kw)
        client = TestClient(app, raise_server_exceptions=False,
                            **({"client": client_addr} if client_addr else {}))
        client.__enter__()
        client.service = service
        opened.append((client, service))
        return client

    yield make
    for client, service in opened:
        client.__exit__(None, None, None)
        service.close()
        service.store.close()


@pytest.fixture
def client(make_client):
    return make_client()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`msgpolicy serve` in a subprocess on 127.0.0.1; always stopped by the fixture."""

    def __init__(self, store: str, tmp: Path, extra: tuple = ()):
        self.store, self.tmp, self.extra = store, tmp, extra
        self.port = free_port()
        self.proc = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 240.0) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.log = open(self.tmp / f"server-{self.port}-{time.time_ns()}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--store", self.store, *self.extra], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.read_log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready: " + self.read_log())

    def read_log(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None


@pytest.fixture
def server(store_url, tmp_path):
    """server(extra args) → a started ServerProcess; stopped at teardown."""
    started = []

    def make(*extra):
        s = ServerProcess(store_url, tmp_path, extra)
        started.append(s)
        s.start()
        return s

    yield make
    for s in started:
        s.stop()
