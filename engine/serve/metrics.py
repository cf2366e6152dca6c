"""Prometheus text exposition of the server's counters (no client library: a handful of series)."""
from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(pairs) -> str:
    def esc(v: str) -> str:
        return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in pairs) + "}" if pairs else ""


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests = defaultdict(int)        # (method, route, status) → count
        self.latency = {}                       # route → [bucket counts..., sum, count]
        self.decisions = defaultdict(int)       # outcome → count
        self.findings = defaultdict(int)        # (policy, rule, outcome) → count
        self.store_errors = 0
        self.commits = 0

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, str(status))] += 1
            h = self.latency.get(route)
            if h is None:
                h = self.latency[route] = [0] * len(BUCKETS) + [0.0, 0]
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    h[i] += 1
            h[-2] += seconds
            h[-1] += 1

    def observe_verdicts(self, verdicts, committed: bool) -> None:
        with self._lock:
            for v in verdicts:
                self.decisions[v.outcome.value] += 1
                for f in v.findings:
                    self.findings[(f.policy, f.rule, f.outcome.value)] += 1
            if committed:
                self.commits += len(verdicts)

    def store_error(self) -> None:
        with self._lock:
            self.store_errors += 1

    def render(self) -> str:
        out = []
        with self._lock:
            out += ["# HELP msgpolicy_requests_total HTTP requests by method, route and status.",
                    "# TYPE msgpolicy_requests_total counter"]
            for (method, route, status), n in sorted(self.requests.items()):
                out.append(f"msgpolicy_requests_total{_labels([('method', method), ('route', route), ('status', status)])} {n}")
            out += ["# HELP msgpolicy_request_duration_seconds Time from request to response.",
                    "# TYPE msgpolicy_request_duration_seconds histogram"]
            for route, h in sorted(self.latency.items()):
                for bound, count in zip(BUCKETS, h):
                    out.append(f"msgpolicy_request_duration_seconds_bucket{_labels([('route', route), ('le', repr(bound))])} {count}")
                out.append(f"msgpolicy_request_duration_seconds_bucket{_labels([('route', route), ('le', '+Inf')])} {h[-1]}")
                out.append(f"msgpolicy_request_duration_seconds_sum{_labels([('route', route)])} {h[-2]:.6f}")
                out.append(f"msgpolicy_request_duration_seconds_count{_labels([('route', route)])} {h[-1]}")
            out += ["# HELP msgpolicy_decisions_total Verdicts given, by outcome.",
                    "# TYPE msgpolicy_decisions_total counter"]
            for outcome, n in sorted(self.decisions.items()):
                out.append(f"msgpolicy_decisions_total{_labels([('outcome', outcome)])} {n}")
            out += ["# HELP msgpolicy_findings_total Findings in verdicts, by policy, rule and outcome.",
                    "# TYPE msgpolicy_findings_total counter"]
            for (policy, rule, outcome), n in sorted(self.findings.items()):
                out.append(f"msgpolicy_findings_total{_labels([('policy', policy), ('rule', rule), ('outcome', outcome)])} {n}")
            out += ["# HELP msgpolicy_commits_total Messages committed to the history.",
                    "# TYPE msgpolicy_commits_total counter", f"msgpolicy_commits_total {self.commits}",
                    "# HELP msgpolicy_store_errors_total Database operations that failed.",
                    "# TYPE msgpolicy_store_errors_total counter", f"msgpolicy_store_errors_total {self.store_errors}"]
        return "\n".join(out) + "\n"
