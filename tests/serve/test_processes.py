"""Two server processes on one store share the history: what one commits, the other sees at once."""
from __future__ import annotations

import httpx

from .test_api import review


def test_two_processes_share_the_history(server):
    a, b = server(), server()
    first, second = review("PR1", 5), review("PR2", 9)
    with httpx.Client(timeout=30) as http:
        alone = http.post(b.url + "/v1/check", json={"record": second}).json()["verdicts"][0]
        assert http.post(a.url + "/v1/check", json={"record": first, "commit": True}).status_code == 200
        seen = http.post(b.url + "/v1/check", json={"record": second}).json()["verdicts"][0]
        assert seen != alone  # b counts the review request a committed
        again = http.post(b.url + "/v1/check", json={"record": first, "commit": True})
        assert again.status_code == 409
        log = http.get(a.url + "/v1/decisions", params={"order_id": first["order_id"]}).json()["decisions"]
        assert [d["message_id"] for d in log if d["committed"]] == ["PR1"]
