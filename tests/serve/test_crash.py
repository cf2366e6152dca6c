"""Kill the server with SIGKILL while it commits 1,000 messages; after a restart every
acknowledged commit is in the history and none is there twice.

Four client threads commit concurrently, so some requests are in flight when the
process dies. After the restart the unacknowledged ones are sent again: each is
either committed now (200) or found already committed (409: it was made durable
but the answer was lost). The moment of the kill is random (seed in the failure message).
"""
from __future__ import annotations

import random
import threading
import time

import httpx
import pytest

N = 1000
THREADS = 4


def _message(i: int) -> dict:
    buyer = f"CB-{i % 97:03d}"
    return {"message_id": f"crash-{i:05d}", "order_id": f"113-{i % 211:07d}-0000001", "buyer_id": buyer,
            "sent_at": f"2021-{1 + i % 12:02d}-{1 + i % 28:02d}T10:{i % 60:02d}:00-08:00",
            "channel": "request_a_review" if i % 3 == 0 else "email",
            "category": "review_request" if i % 3 == 0 else "order_info_request",
            "subject": "Your order", "body": f"Hello about order {i}."}


def _stored(store_url: str) -> list[str]:
    """message_id of every stored message, read straight from the database."""
    from engine.serve.store import open_store

    store = open_store(store_url)
    try:
        with store.transaction() as tx:
            return [r[0] for r in tx.execute("SELECT message_id FROM records WHERE kind = 'message'").fetchall()]
    finally:
        store.close()


def test_sigkill_loses_no_acknowledged_commit(server, store_url):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    kill_after = rng.randrange(100, 800)         # acknowledged commits before the kill
    extra_delay = rng.random() * 0.02            # and a little more, so the kill lands anywhere in a request
    srv = server()
    acked, failed, lock = set(), set(), threading.Lock()
    todo = list(range(N))
    rng.shuffle(todo)
    queue = iter(todo)
    killed = threading.Event()

    def worker():
        with httpx.Client(base_url=srv.url, timeout=30) as http:
            while True:
                with lock:
                    i = next(queue, None)
                if i is None:
                    return
                try:
                    r = http.post("/v1/check", json={"record": _message(i), "commit": True})
                except httpx.HTTPError:
                    with lock:
                        failed.add(i)
                    continue
                with lock:
                    if r.status_code == 200:
                        acked.add(i)
                    else:
                        failed.add(i)

    def killer():
        while len(acked) < kill_after:
            time.sleep(0.0005)
        time.sleep(extra_delay)
        srv.kill()
        killed.set()

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    k = threading.Thread(target=killer)
    k.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    k.join(timeout=60)
    assert killed.is_set(), f"seed {seed}: the server was never killed"
    acked_before = set(acked)
    assert kill_after <= len(acked_before) < N, (seed, len(acked_before))

    # Every acknowledged commit survived the kill; nothing is stored twice.
    stored = _stored(store_url)
    assert len(stored) == len(set(stored)), f"seed {seed}: duplicates"
    missing = {f"crash-{i:05d}" for i in acked_before} - set(stored)
    assert not missing, f"seed {seed}: {len(missing)} acknowledged commits lost, e.g. {sorted(missing)[:3]}"

    srv.start()
    retried = {"committed": 0, "already": 0}
    with httpx.Client(base_url=srv.url, timeout=30) as http:
        for i in sorted(set(range(N)) - acked_before):
            r = http.post("/v1/check", json={"record": _message(i), "commit": True})
            assert r.status_code in (200, 409), (seed, r.status_code, r.text)
            retried["committed" if r.status_code == 200 else "already"] += 1
        count = http.get("/v1/decisions", params={"limit": 1000})
        assert count.status_code == 200
    stored = _stored(store_url)
    assert sorted(stored) == sorted(f"crash-{i:05d}" for i in range(N)), f"seed {seed}"
    print(f"crash test seed {seed}: killed after {len(acked_before)} acknowledged commits "
          f"({kill_after} + {extra_delay * 1000:.1f} ms); {retried['committed']} committed on retry, "
          f"{retried['already']} found already committed (durable but unacknowledged); {len(stored)} stored, 0 duplicated")
