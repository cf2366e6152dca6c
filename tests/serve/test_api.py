"""The HTTP API through the framework's test client, on both stores."""
from __future__ import annotations

import orjson
import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.evaluate import judge_records
from engine.model import BuyerEvent, Message, verdict_json

OPT_OUT = {"type": "buyer_opt_out", "buyer_id": "B-ANNA", "at": "2017-04-10T08:00:00-07:00"}
A1 = {"message_id": "A1", "order_id": "111-0000001-0000001", "buyer_id": "B-ANNA",
      "sent_at": "2017-04-10T10:00:00-07:00", "subject": "Any questions?", "body": "Let us know if you need help.",
      "category": "proactive_customer_service"}
Q = {"message_id": "Q", "order_id": "111-0000002-0000002", "buyer_id": "B-ANNA", "sent_at": "2017-04-11T09:00:00-07:00",
     "initiated_by": "buyer", "buyer_opted_out": True, "body": "Is the vase glass?", "category": "customer_service_reply"}
R1 = {"message_id": "R1", "order_id": "111-0000002-0000002", "buyer_id": "B-ANNA",
      "sent_at": "2017-04-11T10:00:00-07:00", "buyer_opted_out": True, "reply_to": "Q", "subject": "Re: vase",
      "body": "Yes, hand-blown glass.\n> Is the vase glass?", "category": "customer_service_reply"}
W = {"message_id": "W", "order_id": "111-0000006-0000006", "buyer_id": "B5", "sent_at": "2017-06-01T10:00:00-07:00",
     "buyer_opted_out": True, "channel": "email", "subject": "[Important] Your review", "body": "Please review.",
     "category": "review_request"}


def review(mid, day):
    return {"message_id": mid, "order_id": "114-1234567-1234567", "buyer_id": "B-RR", "marketplace": "US",
            "sent_at": f"2021-03-{day:02d}T10:00:00-08:00", "channel": "request_a_review", "subject": "",
            "body": "", "category": "review_request", "delivered_at": "2021-02-28T10:00:00-08:00"}


def rules_of(verdict):
    return sorted({f["rule"] for f in verdict["findings"]})


def expected(policies, *records, **kw):
    parsed = [(BuyerEvent if "type" in r and "message_id" not in r else Message).model_validate(r) for r in records]
    return [verdict_json(v) for v in judge_records(policies, parsed, **kw)]


def test_single_record_is_the_check_verdict(client, policies):
    r = client.post("/v1/check", json={"record": W})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["committed"] is False and body["request_id"] == r.headers["x-request-id"]
    assert body["verdicts"] == expected(policies, W)
    assert body["verdicts"][0]["outcome"] == "violation"


def test_on_and_alt(client, policies):
    r = client.post("/v1/check", json={"record": W, "on": "2017-04-03"})
    assert (r.json()["verdicts"][0]["outcome"], rules_of(r.json()["verdicts"][0])) == ("allowed", ["S1"])
    import datetime as dt
    assert r.json()["verdicts"] == expected(policies, W, at=dt.date(2017, 4, 3))
    t = dict(W, message_id="T", subject="[Important] Delivery slot", body="When can we deliver?",
             sent_at="2017-05-01T10:00:00-07:00", category="delivery_scheduling")
    plain = client.post("/v1/check", json={"record": t}).json()["verdicts"][0]
    alt = client.post("/v1/check", json={"record": t, "alt": ["important-from-2017-05-16"]}).json()["verdicts"][0]
    assert (plain["outcome"], rules_of(plain)) == ("allowed", ["D7"])
    assert (alt["outcome"], rules_of(alt)) == ("blocked", ["D2"])


def test_events_and_commit_make_history(client):
    # Without history the opt-out state is unknown.
    first = client.post("/v1/check", json={"record": A1}).json()["verdicts"][0]
    assert first["outcome"] == "indeterminate"
    assert client.post("/v1/events", json={"events": [OPT_OUT, Q]}).json()["recorded"] == 2
    blocked = client.post("/v1/check", json={"record": A1}).json()["verdicts"][0]
    assert (blocked["outcome"], rules_of(blocked)) == ("blocked", ["D2"])
    # The reply quotes the buyer message recorded through /v1/events.
    reply = client.post("/v1/check", json={"record": R1}).json()["verdicts"][0]
    assert (reply["outcome"], rules_of(reply)) == ("allowed", ["D5"])


def test_commit_counts_prior_review_requests(client, policies):
    one, two = review("RR1", 5), review("RR2", 9)
    alone = client.post("/v1/check", json={"record": two}).json()["verdicts"][0]
    r = client.post("/v1/check", json={"record": one, "commit": True})
    assert r.status_code == 200 and r.json()["committed"] is True
    after = client.post("/v1/check", json={"record": two}).json()["verdicts"][0]
    assert after != alone
    assert after == expected(policies, one, two)[1]
    assert alone == expected(policies, two)[0]
    # Checking without commit changed nothing: the same check again gives the same answer.
    assert client.post("/v1/check", json={"record": two}).json()["verdicts"][0] == after


def test_history_later_than_the_message_is_not_history(client, policies):
    """A stored record sent after the checked message is not its history (as in a log)."""
    client.post("/v1/check", json={"record": review("RR2", 9), "commit": True})
    early = client.post("/v1/check", json={"record": review("RR1", 5)}).json()["verdicts"][0]
    assert early == expected(policies, review("RR1", 5))[0]


def test_commit_twice_is_a_conflict(client):
    assert client.post("/v1/check", json={"record": A1, "commit": True}).status_code == 200
    r = client.post("/v1/check", json={"record": A1, "commit": True})
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    p = r.json()
    assert p["status"] == 409 and p["errors"][0]["message_id"] == "A1" and p["errors"][0]["field"] == "message_id"
    assert client.post("/v1/events", json={"events": [dict(Q, message_id="A1")]}).status_code == 409
    n = client.get("/v1/decisions", params={"order_id": A1["order_id"]}).json()["decisions"]
    assert [d["committed"] for d in n] == [True]


@pytest.mark.parametrize("records,index,field", [
    ([A1, dict(A1, message_id="X", sent_at="2017-04-10T10:00:00")], 1, "sent_at"),
    ([dict(A1, category="promotion")], 0, "category"),
    ([A1, W, dict(W, marketplace="XX", message_id="W2")], 2, "marketplace"),
    ([A1, A1], 1, "message_id"),
    ([{"type": "buyer_opt_maybe", "buyer_id": "B", "at": "2017-04-10T08:00:00-07:00"}], 0, "type"),
    ([A1, 17], 1, None),
    ([dict(A1, attachments=[{"name": "x", "kind": "zip"}])], 0, "attachments.0.kind"),
])
def test_invalid_records_are_problems_naming_index_and_field(client, records, index, field):
    r = client.post("/v1/check", json={"records": records, "commit": True})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    p = r.json()
    assert p["status"] == 422 and p["title"] == "Invalid record" and p["instance"] == "/v1/check"
    assert (p["errors"][0]["index"], p["errors"][0]["field"]) == (index, field)
    assert "Traceback" not in r.text
    # nothing was committed
    assert client.get("/v1/decisions").json()["decisions"] == []


@pytest.mark.parametrize("body,field", [
    ({"records": [A1], "on": "yesterday"}, "on"),
    ({"records": [A1], "alt": ["no-such-reading"]}, "alt"),
    ({"records": [A1], "alt": "x"}, "alt"),
    ({"records": [A1], "commit": "yes"}, "commit"),
    ({"record": A1, "records": [A1]}, "records"),
    ({}, "records"),
    ({"records": {"a": 1}}, "records"),
    ({"records": [A1], "overlay": "draft.yaml"}, "overlay"),
])
def test_invalid_requests(client, body, field):
    r = client.post("/v1/check", json=body)
    assert r.status_code == 422, r.text
    assert any(e["field"] == field for e in r.json()["errors"]), r.json()


def test_malformed_json_and_wrong_bodies(client):
    for content in (b"{", b"[1, 2]", b"\xff"):
        r = client.post("/v1/check", content=content, headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["status"] == 422
    assert client.post("/v1/events", json={"events": [A1]}).status_code == 422  # a seller message is not history
    assert client.post("/v1/events", json={"evts": []}).status_code == 422


def test_limits(make_client):
    from engine.serve import Limits

    c = make_client(limits=Limits(max_records=5, max_body_bytes=4000, max_text_chars=50))
    many = [dict(A1, message_id=f"M{i}") for i in range(6)]
    r = c.post("/v1/check", json={"records": many})
    assert r.status_code == 413 and r.json()["title"] == "Too many records"
    r = c.post("/v1/check", json={"records": [dict(A1, body="x" * 5000)]})
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    # without Content-Length (chunked) the cap still holds
    r = c.post("/v1/check", content=iter([b'{"records": [', b" " * 5000, b"]}"]),
               headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = c.post("/v1/check", json={"records": [dict(A1, body="y" * 60)]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body"


def test_time_limit(make_client):
    from engine.serve import Limits

    c = make_client(limits=Limits(time_limit_s=0.0))
    r = c.post("/v1/check", json={"record": A1})
    assert r.status_code == 503 and r.json()["title"] == "Time limit exceeded"


def test_no_stack_trace_on_internal_error(client, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(client.service, "check", boom)
    r = client.post("/v1/check", json={"record": A1})
    assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"
    assert "secret" not in r.text and "Traceback" not in r.text
    assert r.json()["request_id"] == r.headers["x-request-id"]


def test_store_failure_is_503_and_counted(client, monkeypatch):
    from engine.serve.store import StoreError

    def down(*a, **k):
        raise StoreError("disk on fire")

    monkeypatch.setattr(client.service.store, "transaction", down)
    r = client.post("/v1/check", json={"record": A1})
    assert r.status_code == 503 and "disk" not in r.text
    assert client.get("/readyz").status_code == 503
    assert "msgpolicy_store_errors_total 2" in client.get("/metrics").text


def test_read_endpoints_match_the_cli(client):
    runner = CliRunner()
    timeline = orjson.loads(runner.invoke(main, ["timeline", "--format", "json"]).stdout)
    assert client.get("/v1/timeline").json() == timeline
    rules = orjson.loads(runner.invoke(main, ["rules", "--on", "2021-01-01", "--marketplace", "DE",
                                              "--format", "json"]).stdout)
    assert client.get("/v1/rules", params={"on": "2021-01-01", "marketplace": "DE"}).json() == rules
    assert client.get("/v1/schema").json() == orjson.loads(runner.invoke(main, ["schema"]).stdout)
    assert client.get("/v1/rules", params={"marketplace": "XX"}).status_code == 422
    assert client.get("/v1/rules", params={"on": "soon"}).status_code == 422
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["schema_version"] >= 1


def test_decision_log(client, policies):
    client.post("/v1/events", json={"events": [OPT_OUT]})
    client.post("/v1/check", json={"records": [A1, W], "commit": True}, headers={"x-request-id": "req-1"})
    client.post("/v1/check", json={"record": W, "on": "2017-04-03"})
    all_ = client.get("/v1/decisions").json()["decisions"]
    assert [(d["message_id"], d["request_id"], d["committed"]) for d in all_][:2] == \
        [("A1", "req-1", True), ("W", "req-1", True)]
    a1 = all_[0]
    assert a1["history"] == [{"kind": "event", "record": OPT_OUT}]
    assert a1["record"] == A1 and a1["verdict"]["outcome"] == "blocked"
    version = policies.version("2017-optout", "reinstated")
    assert a1["policy_hashes"] == {"2017-optout/reinstated": version.content_hash}
    assert all_[2]["on"] == "2017-04-03"
    only_w = client.get("/v1/decisions", params={"order_id": W["order_id"]}).json()["decisions"]
    assert [d["message_id"] for d in only_w] == ["W", "W"]
    later = client.get("/v1/decisions", params={"since": "2999-01-01T00:00:00Z"}).json()["decisions"]
    assert later == []
    page = client.get("/v1/decisions", params={"limit": 2}).json()
    assert len(page["decisions"]) == 2 and page["next_after"] == page["decisions"][-1]["id"]
    rest = client.get("/v1/decisions", params={"after": page["next_after"]}).json()["decisions"]
    assert [d["id"] for d in rest] == [all_[2]["id"]]
    assert client.get("/v1/decisions", params={"since": "2017-01-01T00:00:00"}).status_code == 422


def test_metrics(client):
    client.post("/v1/check", json={"record": W})
    client.post("/v1/check", json={"records": [A1, 1]})
    text = client.get("/metrics").text
    assert 'msgpolicy_requests_total{method="POST",route="/v1/check",status="200"} 1' in text
    assert 'msgpolicy_requests_total{method="POST",route="/v1/check",status="422"} 1' in text
    assert 'msgpolicy_decisions_total{outcome="violation"} 1' in text
    assert 'msgpolicy_findings_total{policy="2017-optout",rule="D8",outcome="violation"} 1' in text
    assert 'msgpolicy_request_duration_seconds_count{route="/v1/check"} 2' in text


def test_tokens(make_client, tmp_path):
    from engine.serve.tokens import add_token

    file = tmp_path / "tokens"
    token = add_token(file, "ci")
    other = add_token(file, "bench")
    assert token != other and token not in file.read_text() and oct(file.stat().st_mode & 0o777) == "0o600"
    c = make_client(tokens_file=file)
    assert c.post("/v1/check", json={"record": W}).status_code == 401
    r = c.post("/v1/check", json={"record": W}, headers={"authorization": "Bearer " + token[:-1] + "x"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert c.post("/v1/check", json={"record": W}, headers={"authorization": "Bearer " + token}).status_code == 200
    assert c.get("/metrics", headers={"authorization": "Bearer " + other}).status_code == 200
    assert c.get("/metrics").status_code == 401
    assert c.get("/healthz").status_code == 200  # probes need no token
    assert c.app.openapi()["paths"]["/v1/check"]["post"]["security"] == [{"bearer": []}]


def test_without_tokens_only_localhost(make_client):
    remote = make_client(client=("203.0.113.9", 4000))
    r = remote.post("/v1/check", json={"record": W})
    assert r.status_code == 403 and r.json()["status"] == 403
    local = make_client(client=("127.0.0.1", 4000))
    assert local.post("/v1/check", json={"record": W}).status_code == 200


def test_token_cli(tmp_path):
    file = tmp_path / "t"
    r = CliRunner().invoke(main, ["serve", "token", "add", "ops", "--tokens", str(file)])
    assert r.exit_code == 0 and r.stdout.startswith("mp_")
    again = CliRunner().invoke(main, ["serve", "token", "add", "ops", "--tokens", str(file)])
    assert again.exit_code == 2 and "already exists" in again.output


def test_refuses_public_bind_without_tokens():
    r = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0"])
    assert r.exit_code != 0 and "without --tokens" in str(r.exception or r.output)


def test_openapi_document_is_built_from_the_models(client):
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert {"Message", "BuyerEvent", "CheckRequest", "Problem", "CheckResponse"} <= set(schemas)
    assert schemas["Message"]["properties"]["sent_at"]["format"] == "date-time"
    for path in ("/v1/check", "/v1/events", "/v1/timeline", "/v1/rules", "/v1/schema", "/v1/decisions",
                 "/healthz", "/readyz", "/metrics"):
        assert path in doc["paths"], path
