"""`audit`: judge whole logs as a stream, losing nothing (issue 4).

Design (see also `msgpolicy audit --help`):

* **Streaming.** Logs are read line by line (JSONL), row by row (CSV) or batch
  by batch (Parquet); several logs are one stream in the order given.
* **Nothing lost.** Every record is judged, applied as a buyer event, or
  rejected (source, line, message_id, field, reason). `read = judged +
  rejected + events` is checked at the end.
* **Time order.** History follows the file order, which for a real export is
  `sent_at` order. A message sent earlier than a record already applied to
  its buyer's history is *out of order*: it is judged with the history as it
  stands (never reordered, never dropped) and flagged (`out_of_order: true`
  in its result, counted in the summary). A buyer event and a message at the
  same instant: the event does not count for the message (CONTRACT §1,
  "events before sent_at"), whatever their order in the file.
* **Bounded memory.** The history keeps per-buyer opt-out state, buyer
  messages (for reply quoting) and per-order/per-buyer prior counts. Buyer
  messages, prior counts and the per-buyer out-of-order watermark not touched
  for `history_days` of *log time* (default 400) are forgotten. Log time is the
  latest timestamp read so far in the stream, every line counted (see
  `log_time`), so every worker has the same clock at the same line and a
  sweep never removes state a later check would still see: results do not
  depend on `jobs` nor on when sweeps run. Memory follows the orders/threads
  active within the horizon, not the length of the log. Opt-out state is
  never forgotten (one entry per buyer that has events). The one deviation
  from `check`: a reply to a buyer message, or a prior count on an order,
  idle longer than the horizon. Duplicate message_ids are caught with 64-bit
  hashes held in sorted arrays (8 bytes an id).
* **Parallelism** (`jobs`): forked worker processes; every worker reads the whole
  stream but validates and judges only the records whose buyer_id hashes to
  it (records with no usable buyer_id go by line number), so the history a
  message needs (same buyer; an order belongs to one buyer) lives in one
  worker. Results are merged back in input order; the output does not
  depend on `jobs`.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import zlib
from array import array
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import orjson

from . import __version__
from .conditions import facts_used
from .evaluate import Judge, When, forget_oldest_half
from .detectors import TextViews
from .facts import History, facts_for, structural_facts
from .timeline import in_force_on, marketplace_zone
from .io import InputError, atomic_output, check_log_file, log_items, prepare, to_record
from .mapping import ColumnMap
from .policyfile import MsgpolicyError
from .model import BuyerEvent, InitiatedBy, Message, Outcome, Verdict, finding_json
# The results formats live in engine.results; re-exported for existing callers.
from .results import RESULT_COLUMNS, write_results  # noqa: F401

DEFAULT_HISTORY_DAYS = 400
WORST_ORDERS_KEPT = 50
# Orders scored for the "worst orders" table: past the maximum, only the heaviest are kept
# (two Counters of order ids cost ~250 bytes an order, per worker).
ORDERS_TRACKED_MAX = 50_000
ORDERS_KEPT = 20_000


# ---- reading ---------------------------------------------------------------------


def _jsonl_items(path: Path, source: str) -> Iterator[tuple[int, object, int]]:
    """(line, parsed object or InputError or None, bytes consumed) of a JSON file."""
    return log_items(path)


def stream_items(path: Union[str, Path], mapping: Optional[ColumnMap] = None) -> Iterator[tuple[int, object, int]]:
    """The raw items of one log (engine.io.log_items: the reader `check` uses too)."""
    return log_items(path, mapping)


def sha256_file(path: Union[str, Path]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- duplicate message ids in bounded memory ---------------------------------------


class SeenIds:
    """Set of message ids as 64-bit hashes: a small set plus sorted int64 runs.

    Runs merge like a log-structured tree (a run merges into the one before it
    while that one is at most twice its size), so there are O(log n) runs to
    search and merging copies each id O(log n) times. A false duplicate needs a
    64-bit collision (probability about n²/2⁶⁵, ~3e-6 at 10M ids)."""

    RUN = 1 << 17

    def __init__(self):
        self.recent: set[int] = set()
        self.runs: list[array] = []

    # Python's string hash: 64 bits, and the same in forked workers (one hash seed per run).
    key = staticmethod(hash)

    def __contains__(self, key: int) -> bool:
        if key in self.recent:
            return True
        for run in self.runs:
            i = bisect_left(run, key)
            if i < len(run) and run[i] == key:
                return True
        return False

    def add(self, key: int) -> None:
        self.recent.add(key)
        if len(self.recent) >= self.RUN:
            self.runs.append(array("q", sorted(self.recent)))
            self.recent = set()
            runs = self.runs
            while len(runs) > 1 and len(runs[-2]) <= 2 * len(runs[-1]):
                newer = runs.pop()
                runs[-1] = array("q", heapq.merge(runs[-1], newer))


# ---- bounded history ----------------------------------------------------------------


class BoundedHistory(History):
    """History whose entries expire after `horizon` of log time without use.

    One plain dict per kind of state (buyer, buyer message, prior count): dicts
    keep insertion order and every touch moves a key to the end, so the oldest
    entries are at the front and a sweep pops from there. (An OrderedDict keyed
    by (kind, key) tuples cost three times the memory.)"""

    def __init__(self, prior_detectors, horizon: dt.timedelta):
        super().__init__(prior_detectors)
        self.horizon = horizon.total_seconds()
        # kind → key → last use (epoch s)
        self.touched: dict[str, dict[str, float]] = {"buyer": {}, "msg": {}, "count": {}}
        self.events: dict[str, tuple[float, bool, Optional[bool]]] = {}  # buyer → (at, state, state before)
        self.last_seen: dict[str, float] = {}  # buyer → latest instant applied
        self.clock = float("-inf")  # log time: advanced by the reader for every line (`log_time`)
        self._since_sweep = 0

    def _touch(self, kind: str, key: str, when: float) -> None:
        touched = self.touched[kind]
        old = touched.pop(key, None)
        touched[key] = when if old is None or when > old else old
        self._since_sweep += 1
        if self._since_sweep >= 4096:
            self._since_sweep = 0
            self.sweep()

    def sweep(self) -> None:
        # Entries are in touch order, but an out-of-order touch stores an older time, so
        # the front is only roughly the oldest: stopping early just frees less memory.
        limit = self.clock - self.horizon
        for kind, touched in self.touched.items():
            while touched:
                key, when = next(iter(touched.items()))
                if when >= limit:
                    break
                del touched[key]
                self._purge(kind, key)

    def _alive(self, kind: str, key: str) -> bool:
        """Whether (kind, key) has state used within the horizon of log time; purge it if not.

        Judged against the log clock, which only grows and is the same in every
        worker at a given line, so the answer does not depend on when sweeps
        ran nor on --jobs. An out-of-order message sees the history as the log
        clock leaves it."""
        touched = self.touched[kind]
        last = touched.get(key)
        if last is None:
            return False
        if last < self.clock - self.horizon:
            del touched[key]
            self._purge(kind, key)
            return False
        return True

    def _purge(self, kind: str, key: str) -> None:
        if kind == "buyer":
            # Opt-out state is never forgotten (it is kept only for buyers with events);
            # only the out-of-order watermark goes.
            self.last_seen.pop(key, None)
        elif kind == "msg":
            self.buyer_messages.pop(key, None)
        else:
            for i in range(len(self.prior_detectors)):
                self.counts.pop((i, key), None)
                self.possible.pop((i, key), None)

    def is_out_of_order(self, buyer_id: str, when: float) -> bool:
        if not self._alive("buyer", buyer_id):
            return False
        last = self.last_seen.get(buyer_id)
        return last is not None and when < last

    def _seen(self, buyer_id: str, when: float) -> None:
        if when > self.last_seen.get(buyer_id, float("-inf")):
            self.last_seen[buyer_id] = when
        self._touch("buyer", buyer_id, when)

    def apply_event(self, event: BuyerEvent) -> None:
        when = event.at.timestamp()
        self._alive("buyer", event.buyer_id)
        previous = self.opt_state.get(event.buyer_id)
        state = event.type == "buyer_opt_out"
        self.events[event.buyer_id] = (when, state, previous)
        super().apply_event(event)
        self._seen(event.buyer_id, when)

    def opted_out(self, message: Message) -> Optional[bool]:
        if message.buyer_opted_out is not None:
            return message.buyer_opted_out
        t = message.sent_at.timestamp()
        entry = self.events.get(message.buyer_id)
        if entry is not None and entry[0] >= t:
            return entry[2]  # the latest event is not before sent_at: the state before it
        return self.opt_state.get(message.buyer_id)

    def quotes_buyer_message(self, message: Message) -> Optional[bool]:
        if message.reply_to is not None:
            self._alive("msg", message.reply_to)
        return super().quotes_buyer_message(message)

    def prior_count(self, spec, message: Message) -> tuple[int, str, int]:
        key = message.order_id if spec.scope == "order" else message.buyer_id
        self._alive("count", key)
        return super().prior_count(spec, message)

    def record(self, message: Message, candidates: tuple[str, ...] = ()) -> None:
        when = message.sent_at.timestamp()
        self._alive("buyer", message.buyer_id)
        counted = ()
        if message.initiated_by is not InitiatedBy.buyer:
            counted = [message.order_id if spec.scope == "order" else message.buyer_id
                       for spec in self.prior_detectors
                       if spec.counts(message) or (candidates and spec.might_count(message, candidates))]
            for key in counted:
                self._alive("count", key)
        super().record(message, candidates)
        self._seen(message.buyer_id, when)
        if message.initiated_by is InitiatedBy.buyer:
            self._touch("msg", message.message_id, when)
            return
        for key in counted:
            self._touch("count", key, when)


class AuditJudge(Judge):
    """Judge with the audit's fast path: verdicts rendered once per distinct
    (versions in force, fact values, evidence) and reused."""

    def __init__(self, policies, **kw):
        super().__init__(policies, **kw)
        self._verdicts: dict = {}
        self._pieces: dict = {}  # interned plan pieces (_Plan.of)
        self._in_force: dict = {}
        self._zones: dict = {}

    # -- the audit's fast path ------------------------------------------------------

    VERDICT_CACHE_MAX = 30_000  # plans (a few KiB each) per worker

    def judge_fast(self, message: Message, at: When):
        """(instant, (result JSON bytes without the header, outcome, policies, findings keys))
        for one message, then remember it in the history.

        A verdict is a pure function of the versions in force and each version's
        fact values, except for two things: the header (message_id, instant) and
        each finding's evidence, which quotes the message's own spans. So the
        verdict is decided once per distinct (versions, values) and kept as a
        plan; every message renders the plan with its own header and spans."""
        instant = self.instant_for(message, at)
        mk = (message.marketplace, instant.astimezone(self._zone(message.marketplace)).date())
        versions = self._in_force.get(mk)
        if versions is None:
            versions = self._in_force[mk] = in_force_on(self.policies, mk[1], message.marketplace)
        effective, inference = self.infer(message, versions)
        try:
            if not versions:
                return instant, _NO_POLICY
            per_version = self.facts(effective, versions)
            # The decision depends on the inference only through the uncertain category's
            # candidates; the notes on what was inferred quote the message and are rendered per message.
            candidates = inference.uncertain_candidates if inference is not None else ()
            key = (tuple((v.content_hash, tuple(f.values.values())) for v, f in per_version), candidates)
            plan = self._verdicts.get(key)
            if plan is None:
                verdict, per_candidate = self.decide_rules(message.message_id, instant, per_version, candidates)
                if len(self._verdicts) >= self.VERDICT_CACHE_MAX:
                    forget_oldest_half(self._verdicts)
                if len(self._pieces) >= 4 * self.VERDICT_CACHE_MAX:
                    self._pieces.clear()  # only sharing is lost
                plan = _Plan.of(verdict, versions, per_candidate, self._pieces)
                self._verdicts[key] = plan
            spans = [f.spans for _, f in per_version]
            if inference is None:
                return instant, (plan.render(spans), plan.outcome, plan.policies, plan.finding_keys)
            notes = self._inference_findings(inference, plan.per_candidate)
            return instant, (plan.render(spans, notes), plan.outcome, plan.policies,
                             tuple((f.outcome.value, f.policy, f.version, f.rule) for f in notes)
                             + plan.finding_keys)
        finally:
            self.history.record(effective, inference.uncertain_candidates if inference else ())

    def _zone(self, marketplace):
        z = self._zones.get(marketplace)
        if z is None:
            z = self._zones[marketplace] = marketplace_zone(self.policies, marketplace)
        return z


# ---- result lines ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """A decided verdict without its header and evidence, pre-rendered as JSON pieces."""

    outcome: Outcome
    policies: tuple  # (policy, version)
    finding_keys: tuple  # (outcome, policy, version, rule) for the summary
    head: bytes  # '"outcome":…,"findings":['
    findings: tuple  # (JSON of the finding without evidence and closing brace, version index, evidence facts)
    per_candidate: dict  # an uncertain category's candidates → the outcome each gives

    @classmethod
    def of(cls, verdict: Verdict, versions, per_candidate: dict, shared: dict) -> "_Plan":
        """`shared` interns the pieces: many fact vectors give the same findings, and a
        finding's JSON (reason, sources) is most of a plan's size."""
        def one(piece):
            return shared.setdefault(piece, piece)

        index = {(v.family, v.id): i for i, v in enumerate(versions)}
        findings = []
        for f in verdict.findings:
            data = finding_json(f)
            data.pop("evidence", None)
            i = index[(f.policy, f.version)]
            names = tuple(sorted(facts_used(versions[i].rule_index[f.rule].condition)))
            findings.append(one((orjson.dumps(data)[:-1], i, names)))
        head = orjson.dumps({"outcome": verdict.outcome.value,
                             "policies": [{"policy": p.policy, "version": p.version} for p in verdict.policies]})
        return cls(verdict.outcome, one(tuple((p.policy, p.version) for p in verdict.policies)),
                   one(tuple((f.outcome.value, f.policy, f.version, f.rule) for f in verdict.findings)),
                   one(head[1:-1] + b',"findings":['), one(tuple(findings)), per_candidate)

    def render(self, spans: list[dict], notes=()) -> bytes:
        """The result line's tail (after the header's comma) with this message's evidence,
        after `notes`, its own findings on what was inferred."""
        parts = [self.head]
        dumps = orjson.dumps
        for n, note in enumerate(notes):
            if n:
                parts.append(b",")
            parts.append(dumps(finding_json(note)))
        for n, (body, i, names) in enumerate(self.findings):
            if n or notes:
                parts.append(b",")
            parts.append(body)
            own = spans[i]
            evidence = {name: own[name] for name in names if name in own} if own else None
            if evidence:
                parts.append(b',"evidence":' + dumps(evidence))
            parts.append(b"}")
        parts.append(b"]}")
        return b"".join(parts)


_NO_POLICY = (b'"outcome":"no_policy","policies":[],"findings":[]}', Outcome.no_policy, (), ())


# ---- summary ---------------------------------------------------------------------------


@dataclass
class Summary:
    read: int = 0
    judged: int = 0
    rejected: int = 0
    events: int = 0
    blank: int = 0
    out_of_order: int = 0
    outcomes: Counter = field(default_factory=Counter)  # outcome → n
    by_rule: Counter = field(default_factory=Counter)  # (outcome, policy, version, rule) → n
    by_version: Counter = field(default_factory=Counter)  # (policy, version, outcome) → n
    by_month: Counter = field(default_factory=Counter)  # (YYYY-MM, outcome) → n
    order_scores: Counter = field(default_factory=Counter)  # order_id → severity points (bounded)
    order_counts: Counter = field(default_factory=Counter)  # (order_id, outcome) → n (for kept orders)
    reject_reasons: Counter = field(default_factory=Counter)  # field → n
    versions_used: dict = field(default_factory=dict)  # "policy/version" → content hash

    def add_verdict(self, v: Verdict, order_id: str, month: str, hashes: dict) -> None:
        self.judged += 1
        outcome = v.outcome.value
        self.outcomes[outcome] += 1
        self.by_month[(month, outcome)] += 1
        for p in v.policies:
            self.by_version[(p.policy, p.version, outcome)] += 1
            name = f"{p.policy}/{p.version}"
            if name not in self.versions_used:
                self.versions_used[name] = hashes[(p.policy, p.version)]
        for f in v.findings:
            self.by_rule[(f.outcome.value, f.policy, f.version, f.rule)] += 1
        if not v.outcome.is_clean:
            self.order_scores[order_id] += _POINTS[v.outcome]
            self.order_counts[(order_id, outcome)] += 1
            if len(self.order_scores) > ORDERS_TRACKED_MAX:
                self.prune_orders(ORDERS_KEPT)

    def add_fast(self, outcome: Outcome, policies: tuple, findings: tuple, order_id: str, month: str,
                 hashes: dict) -> None:
        self.judged += 1
        value = outcome.value
        self.outcomes[value] += 1
        self.by_month[(month, value)] += 1
        for policy, version in policies:
            self.by_version[(policy, version, value)] += 1
            name = f"{policy}/{version}"
            if name not in self.versions_used:
                self.versions_used[name] = hashes[(policy, version)]
        for f in findings:
            self.by_rule[f] += 1
        if not outcome.is_clean:
            self.order_scores[order_id] += _POINTS[outcome]
            self.order_counts[(order_id, value)] += 1
            if len(self.order_scores) > ORDERS_TRACKED_MAX:
                self.prune_orders(ORDERS_KEPT)

    def prune_orders(self, keep: int) -> None:
        """Keep the heaviest orders (the 'worst orders' table is approximate past ORDERS_TRACKED_MAX orders)."""
        kept = dict(sorted(self.order_scores.items(), key=lambda kv: (-kv[1], kv[0]))[:keep])
        self.order_scores = Counter(kept)
        self.order_counts = Counter({k: n for k, n in self.order_counts.items() if k[0] in kept})

    def merge(self, other: "Summary") -> None:
        for name in ("read", "judged", "rejected", "events", "blank", "out_of_order"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("outcomes", "by_rule", "by_version", "by_month", "order_scores", "order_counts",
                     "reject_reasons"):
            getattr(self, name).update(getattr(other, name))
        self.versions_used.update(other.versions_used)

    @property
    def balanced(self) -> bool:
        return self.read == self.judged + self.rejected + self.events

    def worst_orders(self, n: int = 20) -> list[dict]:
        rows = []
        top = sorted(self.order_scores.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        for order_id, score in top:
            counts = {o.value: self.order_counts.get((order_id, o.value), 0)
                      for o in (Outcome.violation, Outcome.indeterminate, Outcome.blocked)}
            rows.append({"order_id": order_id, "score": score, **counts})
        return rows


_POINTS = {Outcome.violation: 100, Outcome.indeterminate: 10, Outcome.blocked: 1}


# ---- one worker ----------------------------------------------------------------------------


@dataclass
class AuditConfig:
    paths: list
    at: When = None
    jobs: int = 1
    history_days: int = DEFAULT_HISTORY_DAYS
    results: Optional[Path] = None  # where the merged results go (format by suffix)
    rejects: Optional[Path] = None
    mapping: Optional[ColumnMap] = None  # a tool export's column map (--map)
    started: Optional[float] = None  # epoch s; log times after it are ignored (set once, before forking)
    engine: str = "auto"  # "stream", "batch" (engine.batch: the log as columns) or "auto": see choose_engine


def _mapped(obj: dict, mapping) -> dict:
    """A tool export's row as a record dict (engine.io.prepare)."""
    return prepare(obj, mapping)


def log_time(obj, not_after: float) -> Optional[float]:
    """The line's contribution to the log clock: its sent_at (a message) or at (an event)
    as epoch seconds, read cheaply and the same way in every worker, valid or not.

    Only ISO 8601 with an offset and epoch numbers count; times after `not_after`
    (the audit's start) do not, so one record dated in the future cannot make
    the whole history expire."""
    if not isinstance(obj, dict):
        return None
    value = obj.get("sent_at")
    if value is None:
        value = obj.get("at")
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            try:
                t = float(value)
            except ValueError:
                return None
        else:
            if parsed.tzinfo is None:
                return None
            t = parsed.timestamp()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        t = float(value)
    else:
        return None
    return t if t <= not_after else None


def _owner(obj, line_key: int, jobs: int) -> int:
    if jobs == 1:
        return 0
    if isinstance(obj, dict):
        buyer = obj.get("buyer_id")
        if isinstance(buyer, str):
            return zlib.crc32(buyer.encode()) % jobs
    return line_key % jobs


def run_worker(policies, cfg: AuditConfig, worker: int, out_results, out_rejects,
               progress: Optional[Callable[[int, int], None]] = None) -> Summary:
    """Audit the stream's share of `worker`; results/rejects go to the binary writers as
    b"<file>\\t<line>\\t<json>\\n" lines (input order within this worker)."""
    return _run(AuditJudge(policies), policies, cfg, worker, out_results, out_rejects, progress)


def _run(judge, policies, cfg, worker, out_results, out_rejects, progress) -> Summary:
    judge.history = BoundedHistory(policies.prior_count_detectors(), dt.timedelta(days=cfg.history_days))
    history: BoundedHistory = judge.history
    hashes = {(v.family, v.id): v.content_hash for f in policies.families.values() for v in f.versions}
    marketplaces = policies.marketplaces
    seen = SeenIds()
    summary = Summary()
    jobs = cfg.jobs
    dumps = orjson.dumps
    mapping = cfg.mapping
    not_after = cfg.started if cfg.started is not None else dt.datetime.now(dt.timezone.utc).timestamp()
    done_bytes = 0
    for file_index, path in enumerate(cfg.paths):
        source = str(path)
        for line, obj, nbytes in stream_items(path, mapping):
            done_bytes += nbytes
            if progress is not None and line % 4096 == 0:
                progress(done_bytes, summary.read)
            if obj is None:
                if worker == 0:
                    summary.blank += 1
                continue
            if mapping is not None and isinstance(obj, dict):
                obj = _mapped(obj, mapping)  # before routing: the map may name the buyer_id column
            t = log_time(obj, not_after)
            if t is not None and t > history.clock:
                history.clock = t
            owner = _owner(obj, line, jobs)
            mine = owner == worker
            # Duplicate ids: every worker sees every id, so all agree on which line is a duplicate.
            duplicate = False
            if isinstance(obj, dict):
                mid = obj.get("message_id")
                if isinstance(mid, str):
                    key = SeenIds.key(mid)
                    if key in seen:
                        duplicate = True
                    else:
                        seen.add(key)
            if not mine:
                continue
            summary.read += 1
            prefix = b"%d\t%d\t" % (file_index, line)
            if isinstance(obj, InputError):
                item = obj
            else:
                item = to_record(obj, source, line)
            if isinstance(item, Message):
                if item.marketplace not in marketplaces:
                    known = ", ".join(sorted(marketplaces))
                    item = InputError(source, line, item.message_id, "marketplace",
                                      f"unknown marketplace {item.marketplace!r} (known: {known})")
                elif duplicate:
                    item = InputError(source, line, item.message_id, "message_id",
                                      "duplicate message_id in this log (an earlier line has it)")
            if isinstance(item, InputError):
                summary.rejected += 1
                summary.reject_reasons[item.field or "(record)"] += 1
                out_rejects.write(prefix + dumps(item.as_dict()) + b"\n")
                continue
            if isinstance(item, BuyerEvent):
                summary.events += 1
                judge.observe(item)
                continue
            late = history.is_out_of_order(item.buyer_id, item.sent_at.timestamp())
            instant, (tail, outcome, pols, finds) = judge.judge_fast(item, cfg.at)
            if late:
                summary.out_of_order += 1
                tail = tail[:-1] + b',"out_of_order":true}'
            iso = instant.isoformat()
            month = iso[:7] if cfg.at is None else item.sent_at.isoformat()[:7]  # by month sent
            summary.add_fast(outcome, pols, finds, item.order_id, month, hashes)
            out_results.write(prefix + b'{"message_id":' + dumps(item.message_id) + b',"evaluated_at":"'
                              + iso.encode() + b'",' + tail + b"\n")
    if progress is not None:
        progress(done_bytes, summary.read)
    return summary


# ---- merging parts back in input order ------------------------------------------------------


def _part_lines(part) -> Iterator[tuple[int, int, bytes]]:
    part.seek(0)
    for raw in part:
        a, b, payload = raw.split(b"\t", 2)
        yield int(a), int(b), payload


def merged(parts: list) -> Iterator[bytes]:
    """Payload lines of all parts (open binary files) in (file, line) order."""
    if len(parts) == 1:
        for _, _, payload in _part_lines(parts[0]):
            yield payload
        return
    for _, _, payload in heapq.merge(*(_part_lines(p) for p in parts), key=lambda t: (t[0], t[1])):
        yield payload


# ---- the whole audit ------------------------------------------------------------------------


@dataclass
class AuditResult:
    summary: Summary
    provenance: dict
    rejects: list  # InputError dicts, only when no rejects file was given (else empty)
    results_written: int = 0


class AuditError(MsgpolicyError):
    """A worker failed; `detail` holds its traceback (shown under --debug)."""

    kind = "audit error"


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to kill this worker when its parent dies (Linux); elsewhere a worker
    notices at its next write to the results pipe at the latest."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _worker_main(policies, cfg, worker, res_part, rej_part, counter, conn, parent):
    _die_with_parent(parent)
    try:
        # The parts are unnamed temporary files shared with the parent (nothing is left
        # behind however the audit ends); each side has its own buffer over them.
        with open(os.dup(res_part.fileno()), "wb", buffering=1 << 20) as r, \
                open(os.dup(rej_part.fileno()), "wb", buffering=1 << 20) as j:
            def progress(nbytes, judged):
                counter[worker] = judged
            summary = run_worker(policies, cfg, worker, r, j, progress)
        conn.send(("ok", summary))
    except BaseException as exc:  # report, never hang the parent
        import traceback
        if isinstance(exc, MsgpolicyError):
            message = f"{exc.kind}: {exc}"
        elif isinstance(exc, (KeyboardInterrupt, SystemExit)):
            message = "interrupted"
        else:
            message = f"{type(exc).__name__}: {exc}"
        try:
            conn.send(("error", (message, traceback.format_exc())))
            conn.close()
        finally:
            os._exit(1)
    conn.close()
    # Skip interpreter teardown (the pipe is closed, the files flushed).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _stop(procs) -> None:
    """Stop the workers and reap them, with bounded waits."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(2)
        if p.is_alive():
            p.kill()
            p.join(2)


def _preload_language_models(policies) -> None:
    """Load the language models once, before forking, when some version reads the language."""
    classifier = getattr(policies, "classifier", None)
    if classifier is None:
        return
    if not any(v.reads_language for f in policies.families.values() for v in f.versions):
        return
    from .classifier.language import preload

    settings = classifier.settings.language_detection
    preload(tuple(settings.languages), settings.accuracy)


# The batch engine holds the whole log as columns: measured at 10-16 bytes of memory (Pss of
# the process tree, --jobs 2) per byte of a labelled JSON Lines log, and up to 20 for a raw one
# (categories inferred); the choice assumes 24. Below a few megabytes its worker start-up
# costs more than streaming saves.
BATCH_MEMORY_PER_INPUT_BYTE = 24
BATCH_MIN_INPUT_BYTES = 8 << 20


def _available_memory() -> Optional[int]:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def provenance(policies, cfg: AuditConfig, summary: Summary, inputs: dict, jobs: int, engine: str) -> dict:
    """What an audit's summary says of how it was made (both engines)."""
    return {
        "engine": "msgpolicy", "engine_version": __version__,
        "policies": dict(sorted(summary.versions_used.items())),
        "policy_set_hash": policies.content_hash if hasattr(policies, "content_hash") else None,
        "alternatives": list(getattr(policies, "alternatives", ()) or ()),
        "inputs": inputs,
        "evaluated_on": cfg.at.isoformat() if cfg.at is not None else None,
        "jobs": jobs, "audit_engine": engine, "history_days": cfg.history_days,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def choose_engine(cfg: AuditConfig) -> str:
    """The engine an "auto" audit runs: batch for JSON Lines logs (no column map) between a few
    megabytes and what three quarters of the available memory can hold as columns; the
    streaming engine otherwise, whose memory is bounded by the active history."""
    if cfg.engine != "auto":
        return cfg.engine
    if cfg.mapping is not None or any(Path(p).suffix.lower() in (".csv", ".parquet") for p in cfg.paths):
        return "stream"
    try:
        size = sum(os.path.getsize(p) for p in cfg.paths)
    except OSError:
        return "stream"  # the reader names the missing file
    available = _available_memory()
    if size < BATCH_MIN_INPUT_BYTES or available is None:
        return "stream"
    return "batch" if size * BATCH_MEMORY_PER_INPUT_BYTE <= available * 3 // 4 else "stream"


def audit(policies, cfg: AuditConfig, on_progress: Optional[Callable[[int], None]] = None) -> AuditResult:
    """Run the audit; results (if cfg.results) and rejects (if cfg.rejects) are written.
    A log that cannot be read as a whole raises LogError before any work starts."""
    for path in cfg.paths:
        check_log_file(path, cfg.mapping)
    cfg.engine = choose_engine(cfg)
    if cfg.engine == "batch":
        from .batch.pipeline import audit_batch

        return audit_batch(policies, cfg, on_progress)
    jobs = max(1, int(cfg.jobs))
    cfg.jobs = jobs
    if cfg.started is None:
        cfg.started = dt.datetime.now(dt.timezone.utc).timestamp()
    _preload_language_models(policies)
    res_parts = [tempfile.TemporaryFile(prefix="msgpolicy-audit-") for _ in range(jobs)]
    rej_parts = [tempfile.TemporaryFile(prefix="msgpolicy-audit-") for _ in range(jobs)]
    try:
        if jobs == 1:
            with open(os.dup(res_parts[0].fileno()), "wb", buffering=1 << 20) as r, \
                    open(os.dup(rej_parts[0].fileno()), "wb", buffering=1 << 20) as j:
                cb = (lambda nbytes, judged: on_progress(judged)) if on_progress else None
                summary = run_worker(policies, cfg, 0, r, j, cb)
            input_hashes = {str(p): sha256_file(p) for p in cfg.paths}
        else:
            # fork (durable-rules-notes §8): workers inherit the loaded policies.
            ctx = mp.get_context("fork")
            counter = ctx.Array("q", jobs, lock=False)
            procs, conns = [], []
            try:
                for w in range(jobs):
                    parent_conn, child_conn = ctx.Pipe(duplex=False)
                    p = ctx.Process(target=_worker_main,
                                    args=(policies, cfg, w, res_parts[w], rej_parts[w], counter, child_conn,
                                          os.getpid()))
                    p.start()
                    child_conn.close()
                    procs.append(p)
                    conns.append(parent_conn)
                input_hashes = {str(p): sha256_file(p) for p in cfg.paths}
                summaries: list = [None] * jobs
                pending = set(range(jobs))
                from multiprocessing.connection import wait
                while pending:
                    ready = wait([conns[w] for w in pending], timeout=0.2)
                    if on_progress:
                        on_progress(sum(counter))
                    for conn in ready:
                        w = conns.index(conn)
                        try:
                            status, payload = conn.recv()
                        except EOFError:
                            procs[w].join(5)  # reaped, so its exit code tells why
                            code = procs[w].exitcode
                            status, payload = "error", (f"worker {w} died" + (
                                f" (killed by signal {-code})" if code is not None and code < 0 else ""), None)
                        pending.discard(w)
                        if status != "ok":
                            message, trace = payload
                            error = AuditError(f"worker {w} failed: {message}")
                            error.detail = trace
                            raise error
                        summaries[w] = payload
                for p in procs:
                    p.join()
            except BaseException:
                _stop(procs)  # an interrupt, a signal or a failed worker: no worker outlives the audit
                raise
            summary = Summary()
            for s in summaries:
                summary.merge(s)
            if len(summary.order_scores) > ORDERS_KEPT:
                summary.prune_orders(ORDERS_KEPT)
        written = 0
        if cfg.results is not None:
            written = write_results(merged(res_parts), Path(cfg.results))
        rejects: list = []
        if cfg.rejects is not None:
            with atomic_output(Path(cfg.rejects)) as fh:
                for payload in merged(rej_parts):
                    fh.write(payload)
        else:
            rejects = [orjson.loads(p) for p in merged(rej_parts)]
    finally:
        for part in res_parts + rej_parts:
            part.close()
    return AuditResult(summary, provenance(policies, cfg, summary, input_hashes, jobs, "stream"), rejects, written)
