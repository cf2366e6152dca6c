"""What the server does, without HTTP: judge records against the stored history, commit, log decisions.

A request's messages are judged exactly as `check` judges a log made of the
stored records that can bear on them (same buyers, same orders, the buyer
messages they answer) followed by the request's own records, in time order.
Nothing is cached between requests but compiled rulesets and the decision
cache, so several server processes sharing one database agree.
"""
from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

from .. import __version__
from ..check import validate_against_policies
from ..compile import compiled
from ..evaluate import Judge, time_order
from ..facts import History
from ..io import InputError, to_record
from ..model import BuyerEvent, InitiatedBy, Message, Verdict, verdict_json
from ..model import Outcome as VerdictOutcome
from ..policyfile import PolicyError, PolicySet
from ..timeline import in_force
from .store import Decision, DuplicateMessage, Store, StoredRecord

Record = Union[Message, BuyerEvent]


class RequestProblem(Exception):
    """A problem with the request: status, title, detail and the errors naming record index and field."""

    def __init__(self, status: int, title: str, detail: str, errors: Optional[list[dict]] = None,
                 type_: str = "about:blank"):
        super().__init__(detail)
        self.status, self.title, self.detail, self.errors, self.type = status, title, detail, errors or [], type_


@dataclass
class Limits:
    max_records: int = 1000            # per request, /v1/check and /v1/events
    max_body_bytes: int = 8 << 20      # whole request body
    max_text_chars: int = 100_000      # subject + body of one message
    time_limit_s: float = 10.0         # judging one request


def record_json(record: Record) -> dict:
    return record.model_dump(mode="json", exclude_unset=True)


def _kind(record: Record) -> str:
    return "event" if isinstance(record, BuyerEvent) else "message"


def _parse_stored(item: StoredRecord) -> Record:
    return (BuyerEvent if item.kind == "event" else Message).model_validate(item.data)


def _error(index: Optional[int], field_name: Optional[str], message_id: Optional[str], reason: str) -> dict:
    return {"index": index, "field": field_name, "message_id": message_id, "reason": reason}


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self.seconds = seconds

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise RequestProblem(503, "Time limit exceeded",
                                 f"judging the request took longer than {self.seconds:g} s; send fewer records")


@dataclass
class Outcome:
    request_id: str
    verdicts: list[Verdict]
    decisions: list[Decision]
    committed: bool


@dataclass
class Service:
    policies: PolicySet
    store: Store
    limits: Limits = field(default_factory=Limits)
    # The durable_rules host is single-threaded per process: every evaluation holds this lock.
    _judge_lock: threading.Lock = field(default_factory=threading.Lock)
    _sets: dict = field(default_factory=dict)
    _judges: dict = field(default_factory=dict)
    _detectors: dict = field(default_factory=dict)
    _verdicts: dict = field(default_factory=dict)
    _log: Optional["DecisionWriter"] = None

    def __post_init__(self):
        if self.store is not None:
            self._log = DecisionWriter(self.store)

    def _fresh_history(self, policies: PolicySet) -> History:
        found = self._detectors.get(id(policies))
        if found is None:
            found = self._detectors[id(policies)] = policies.prior_count_detectors()
        return History(found)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until the decisions of earlier checks are in the store."""
        if self._log is not None:
            self._log.flush(timeout)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- policies -------------------------------------------------------------

    def policy_set(self, alt: Sequence[str]) -> PolicySet:
        key = tuple(alt)
        found = self._sets.get(key)
        if found is None:
            if not key:
                found = self.policies
            else:
                try:
                    found = self.policies.with_changes(alternatives=key)
                except PolicyError as exc:
                    raise RequestProblem(422, "Unknown alternative", str(exc),
                                         [_error(None, "alt", None, str(exc))]) from None
            self._sets[key] = found
        return found

    def warm(self) -> None:
        """Load what the first request would otherwise wait for: the rulesets and the classifier."""
        from ..model import Message as _M

        probe = _M(message_id="warm-up", order_id="0", buyer_id="0", sent_at=dt.datetime.now(dt.timezone.utc),
                   body="Where is my parcel?", buyer_language="en")
        with self._judge_lock:
            judge = self._judge_for(self.policies)
            judge.history = self._fresh_history(self.policies)
            for version in self.policies.all_versions():
                compiled(version)
            if self.policies.classifier is not None:
                judge.judge(probe, record=False)

    VERDICT_CACHE_MAX = 50_000

    def _verdict(self, judge: Judge, policies: PolicySet, message: Message, at) -> tuple[Verdict, dict]:
        """`Judge.judge` and the verdict's JSON, with both cached by what they depend on: the versions in
        force and each one's facts and quoted spans (records whose category or language is inferred are
        not cached, their notes depend on the text). The differential tests hold this to `check`."""
        instant = judge.instant_for(message, at)
        versions = in_force(policies, instant, message.marketplace)
        effective, inference = judge.infer(message, versions)
        try:
            if not versions:
                verdict = Verdict(message_id=message.message_id, evaluated_at=instant,
                                  outcome=VerdictOutcome.no_policy, policies=[], findings=[])
                return verdict, verdict_json(verdict)
            per_version = judge.facts(effective, versions)
            if inference is not None:
                verdict = judge.decide(effective, instant, versions, per_version, inference)
                return verdict, verdict_json(verdict)
            key = tuple((v.content_hash, tuple(f.values.items()), tuple(f.spans.items())) for v, f in per_version)
            cached = self._verdicts.get(key)
            if cached is None:
                if len(self._verdicts) >= self.VERDICT_CACHE_MAX:
                    self._verdicts.clear()
                decided = judge.decide(effective, instant, versions, per_version)
                # The JSON without the two members that differ per message: serializing the findings
                # again for every message was a quarter of a batch's time.
                rest = {k: v for k, v in verdict_json(decided).items() if k not in ("message_id", "evaluated_at")}
                cached = self._verdicts[key] = (decided, rest)
            decided, rest = cached
            verdict = decided.model_copy(update={"message_id": message.message_id, "evaluated_at": instant})
            return verdict, {"message_id": message.message_id, "evaluated_at": instant.isoformat(), **rest}
        finally:
            judge.history.record(effective, inference.uncertain_candidates if inference else ())

    @staticmethod
    def _remember(judge: Judge, policies: PolicySet, message: Message, at) -> None:
        """What `Judge.judge` records of a message, without judging it: its verdict was given when it was sent."""
        versions = in_force(policies, judge.instant_for(message, at), message.marketplace)
        effective, inference = judge.infer(message, versions)
        judge.history.record(effective, inference.uncertain_candidates if inference else ())

    def _judge_for(self, policies: PolicySet) -> Judge:
        judge = self._judges.get(id(policies))
        if judge is None:
            judge = self._judges[id(policies)] = Judge(policies)
        return judge

    # -- validation -----------------------------------------------------------

    def validate(self, raw: Sequence[object], policies: PolicySet, events_only: bool = False) -> list[Record]:
        """Records from parsed JSON, or a 422 naming every bad record's index and field."""
        if len(raw) > self.limits.max_records:
            raise RequestProblem(413, "Too many records",
                                 f"{len(raw)} records; at most {self.limits.max_records} per request")
        records, errors, seen = [], [], set()
        for index, data in enumerate(raw):
            item = data if isinstance(data, (Message, BuyerEvent)) else to_record(data, "request", index)
            if not isinstance(item, InputError):
                item = validate_against_policies(item, policies, "request", index, seen)
            if not isinstance(item, InputError) and isinstance(item, Message):
                if len(item.subject) + len(item.body) > self.limits.max_text_chars:
                    item = InputError("request", index, item.message_id, "body",
                                      f"subject and body exceed {self.limits.max_text_chars} characters")
                elif events_only and item.initiated_by is not InitiatedBy.buyer:
                    item = InputError("request", index, item.message_id, "initiated_by",
                                      "only buyer messages are history; check and commit seller messages "
                                      "through /v1/check")
            if isinstance(item, InputError):
                errors.append(_error(index, item.field, item.message_id, item.reason))
            else:
                records.append(item)
        if errors:
            first = errors[0]
            where = f"record {first['index']}" + (f", field '{first['field']}'" if first["field"] else "")
            raise RequestProblem(422, "Invalid record", f"{len(errors)} invalid record(s); {where}: {first['reason']}",
                                 errors)
        return records

    # -- judging --------------------------------------------------------------

    def _judge(self, policies: PolicySet, stored: list[StoredRecord], records: list[Record], records_json: list[dict],
               at, deadline: Deadline, exclude: set[str]) -> list[tuple[int, Message, Verdict, dict, list[dict]]]:
        """(index in request, message, verdict, its JSON, history it saw) for every message of the request."""
        log: list[tuple[Record, Optional[int]]] = []
        as_json: list[dict] = []   # each record as the decision log keeps it, made once
        for item in stored:
            if item.kind == "message" and item.data.get("message_id") in exclude:
                continue  # checking again a message already recorded: it is not its own history
            log.append((_parse_stored(item), None))
            as_json.append(item.data)
        log.extend((r, i) for i, r in enumerate(records))
        as_json.extend(records_json)

        order = time_order((n, r) for n, (r, _) in enumerate(log))
        by_buyer: dict[str, list[int]] = {}   # → log positions, in the order they were processed
        by_order: dict[str, list[int]] = {}
        by_id: dict[str, int] = {}
        processed: dict[int, int] = {}         # log position → processing rank
        out = []
        with self._judge_lock:
            judge = self._judge_for(policies)
            judge.history = self._fresh_history(policies)
            for n, record in order:
                index = log[n][1]
                if isinstance(record, BuyerEvent):
                    judge.observe(record)
                elif index is None:
                    self._remember(judge, policies, record, at)
                else:
                    deadline.check()
                    verdict, verdict_data = self._verdict(judge, policies, record, at)
                    related = set(by_buyer.get(record.buyer_id, ())) | set(by_order.get(record.order_id, ()))
                    if record.reply_to is not None and record.reply_to in by_id:
                        related.add(by_id[record.reply_to])
                    history = [{"kind": _kind(log[k][0]), "record": as_json[k]}
                               for k in sorted(related, key=processed.__getitem__)]
                    out.append((index, record, verdict, verdict_data, history))
                if isinstance(record, Message):
                    by_order.setdefault(record.order_id, []).append(n)
                    by_id[record.message_id] = n
                by_buyer.setdefault(record.buyer_id, []).append(n)
                processed[n] = len(processed)
        out.sort(key=lambda item: item[0])  # verdicts in request order, as `check` prints them
        return out

    def check(self, raw: Sequence[object], on: Optional[str] = None, alt: Sequence[str] = (),
              commit: bool = False, request_id: Optional[str] = None) -> Outcome:
        deadline = Deadline(self.limits.time_limit_s)
        at = self.parse_on(on)
        policies = self.policy_set(alt)
        records = self.validate(raw, policies)
        request_id = request_id or uuid.uuid4().hex
        messages = [r for r in records if isinstance(r, Message)]
        ids = [m.message_id for m in messages]
        # The stored records that can bear on these: same buyers, same orders, the messages answered.
        buyers = {r.buyer_id for r in records}
        orders = {m.order_id for m in messages}
        replies = {m.reply_to for m in messages if m.reply_to}

        records_json = [record_json(r) for r in records]  # once: history, decisions and rows share them

        def decide(stored):
            judged = self._judge(policies, stored, records, records_json, at, deadline, exclude=set(ids))
            decided_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")
            return judged, [self._decision(policies, request_id, i, decided_at, m, v, vj, records_json[i], h, commit,
                                           on, alt) for i, m, v, vj, h in judged]

        if commit:
            # One transaction: the history read, the verdicts and the insert cannot interleave with
            # another commit to the same buyer or order (SQLite: one writer; PostgreSQL: advisory locks).
            with self.store.transaction(write=True) as tx:
                tx.lock([f"b:{b}" for b in buyers] + [f"o:{o}" for o in orders])
                dup = tx.existing(ids)
                if dup:
                    raise RequestProblem(409, "Already committed",
                                         f"{len(dup)} message(s) already in the history: {', '.join(dup[:10])}",
                                         [_error(ids.index(d) if d in ids else None, "message_id", d,
                                                 "already committed") for d in dup])
                judged, decisions = decide(tx.history(buyers, orders, replies))
                tx.add_records([(_kind(r), getattr(r, "message_id", None), getattr(r, "order_id", None),
                                 r.buyer_id, data) for r, data in zip(records, records_json)], request_id)
                tx.add_decisions(decisions)
        else:
            # A check alone holds no write lock; its decisions are logged a moment later, many to a
            # transaction, by the writer thread (without waiting for the disk).
            with self.store.transaction() as tx:
                stored = tx.history(buyers, orders, replies)
            judged, decisions = decide(stored)
            self._log.put(decisions)
        return Outcome(request_id, [v for _, _, v, _, _ in judged], decisions, commit)

    def add_events(self, raw: Sequence[object], request_id: Optional[str] = None) -> tuple[str, int]:
        records = self.validate(raw, self.policies, events_only=True)
        request_id = request_id or uuid.uuid4().hex
        with self.store.transaction(write=True) as tx:
            tx.lock([f"b:{r.buyer_id}" for r in records]
                    + [f"o:{r.order_id}" for r in records if isinstance(r, Message)])
            ids = [r.message_id for r in records if isinstance(r, Message)]
            dup = tx.existing(ids)
            if dup:
                raise RequestProblem(409, "Already recorded",
                                     f"{len(dup)} message(s) already in the history: {', '.join(dup[:10])}",
                                     [_error(None, "message_id", d, "already recorded") for d in dup])
            tx.add_records([(_kind(r), getattr(r, "message_id", None), getattr(r, "order_id", None),
                             r.buyer_id, record_json(r)) for r in records], request_id)
        return request_id, len(records)

    def _decision(self, policies, request_id, index, decided_at, message: Message, verdict: Verdict,
                  verdict_data: dict, message_data: dict, history, committed, on, alt) -> Decision:
        hashes = {}
        for ref in verdict.policies:
            with_version = policies.version(ref.policy, ref.version)
            hashes[f"{ref.policy}/{ref.version}"] = with_version.content_hash
        return Decision(request_id=request_id, index=index, decided_at=decided_at, message_id=message.message_id,
                        order_id=message.order_id, buyer_id=message.buyer_id, outcome=verdict.outcome.value,
                        committed=committed, on=on, alt=list(alt), engine_version=__version__,
                        policy_hashes=hashes, record=message_data, history=history, verdict=verdict_data)

    @staticmethod
    def parse_on(on: Optional[str]):
        if on is None:
            return None
        from ..whatif import SideError, parse_when

        try:
            return parse_when(on)
        except SideError as exc:
            raise RequestProblem(422, "Invalid 'on'", str(exc), [_error(None, "on", None, str(exc))]) from None

    # -- replay ---------------------------------------------------------------

    def rejudge(self, decision: Decision) -> Verdict:
        """The decision's record judged again, with the history it saw, by the policies loaded now."""
        policies = self.policy_set(decision.alt)
        history = [(BuyerEvent if h["kind"] == "event" else Message).model_validate(h["record"])
                   for h in decision.history]
        message = Message.model_validate(decision.record)
        at = self.parse_on(decision.on)
        with self._judge_lock:
            judge = self._judge_for(policies)
            judge.history = self._fresh_history(policies)
            verdict = None
            for n, record in time_order(enumerate([*history, message])):
                if isinstance(record, BuyerEvent):
                    judge.observe(record)
                elif n == len(history):
                    verdict = judge.judge(record, at)
                else:
                    self._remember(judge, policies, record, at)
        assert verdict is not None
        return verdict


class DecisionWriter:
    """A thread that writes the decisions of checks without commit, many per transaction."""

    BATCH = 2000

    def __init__(self, store: Store):
        import queue

        self.store = store
        self.queue: "queue.Queue" = queue.Queue()
        self.pending = 0
        self.errors = 0
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="msgpolicy-decisions", daemon=True)
        self._thread.start()

    def put(self, decisions: list[Decision]) -> None:
        if not decisions:
            return
        with self._cond:
            self.pending += 1
        self.queue.put(decisions)

    def _run(self) -> None:
        import logging
        import queue

        while True:
            item = self.queue.get()
            if item is None:
                return
            batch, taken, stop = list(item), 1, False
            while len(batch) < self.BATCH:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.extend(more)
                taken += 1
            try:
                with self.store.transaction(write=True, durable=False) as tx:
                    tx.add_decisions(batch)
            except Exception:  # noqa: BLE001 - a lost log entry must not stop the server
                self.errors += 1
                logging.getLogger("msgpolicy.serve").exception("decision log: %d decision(s) not written", len(batch))
            with self._cond:
                self.pending -= taken
                self._cond.notify_all()
            if stop:
                return

    def flush(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.pending == 0, timeout=timeout)

    def close(self) -> None:
        self.flush()
        self.queue.put(None)
        self._thread.join(timeout=30)


__all__ = ["Service", "Limits", "RequestProblem", "Outcome", "DuplicateMessage"]
