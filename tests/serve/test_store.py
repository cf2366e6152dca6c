"""The history store on both databases: migrations, durability of a commit, the one-writer rule."""
from __future__ import annotations

import threading

import pytest

from engine.serve.store import LATEST, DuplicateMessage, open_store


def test_migrations_are_versioned_and_idempotent(store_url):
    store = open_store(store_url)
    try:
        assert store.schema_version() == 0
        assert store.migrate() == LATEST
        assert store.migrate() == LATEST  # a second start applies nothing
        with store.transaction() as tx:
            rows = tx.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        assert [r[0] for r in rows] == list(range(1, LATEST + 1))
    finally:
        store.close()


def test_a_version_1_database_is_upgraded_in_place(store_url, monkeypatch):
    import engine.serve.store as store_module

    monkeypatch.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:1])
    store = open_store(store_url)
    try:
        assert store.migrate() == 1
        with store.transaction(write=True) as tx:
            tx.add_records([("message", "m-1", "o-1", "b-1", {"message_id": "m-1"})], "r-1")
        monkeypatch.undo()
        assert store.migrate() == LATEST
        assert store.schema_version() == LATEST
        with store.transaction() as tx:
            assert tx.existing(["m-1"]) == ["m-1"]  # the history survives the upgrade
            if store.dialect == "postgresql":
                # the decision log's JSON is stored uncompressed: its insert is the batch commit's largest cost
                rows = tx.execute("SELECT attname, attstorage FROM pg_attribute WHERE attrelid = 'decisions'::regclass "
                                  "AND attname IN ('record', 'history', 'verdict')").fetchall()
                assert sorted(rows) == [("history", "e"), ("record", "e"), ("verdict", "e")]
    finally:
        store.close()


def test_servers_starting_together_migrate_once(store_url):
    stores = [open_store(store_url) for _ in range(4)]
    errors = []

    def start(s):
        try:
            s.migrate()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors
        assert all(s.schema_version() == LATEST for s in stores)
    finally:
        for s in stores:
            s.close()


def test_commit_is_visible_to_a_new_connection_and_unique(store_url):
    store = open_store(store_url)
    store.migrate()
    rec = {"message_id": "M1", "order_id": "O1", "buyer_id": "B1", "sent_at": "2021-01-01T10:00:00Z"}
    with store.transaction(write=True) as tx:
        tx.add_records([("message", "M1", "O1", "B1", rec)], "req")
    store.close()
    other = open_store(store_url)
    try:
        with other.transaction() as tx:
            got = tx.history(["B1"], [], [])
        assert [(r.kind, r.data) for r in got] == [("message", rec)]
        with pytest.raises(DuplicateMessage):
            with other.transaction(write=True) as tx:
                tx.add_records([("message", "M1", "O1", "B1", rec)], "again")
        with other.transaction() as tx:
            assert tx.counts()["messages"] == 1
            assert tx.history([], ["O1"], []) and tx.history([], [], ["M1"]) and not tx.history(["B2"], [], [])
    finally:
        other.close()


def test_readyz_needs_the_current_schema(client):
    assert client.get("/readyz").status_code == 200
    with client.service.store.transaction(write=True) as tx:
        tx.execute("DELETE FROM schema_migrations")
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["title"] == "Not ready"
