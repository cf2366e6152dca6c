"""The batch audit engine: a whole log as columns, each distinct fact vector decided once.

Stages, one way (each a function below, timed in `Stages`):

1. **read + validate** (engine.batch.load): JSON Lines are decoded and validated in bulk
   (engine.batch.decode); CSV, Parquet and mapped exports, and every line the
   bulk path cannot vouch for, are validated one by one by the pydantic models,
   exactly as `check` does. Unknown marketplaces and repeated message_ids are
   rejected as in the streaming audit.
2. **history** (engine.batch.history): out-of-order flags, opt-out state,
   quoted replies and prior counts, by windows per buyer and order.
3. **inference** (engine.batch.infer): the classifier and language detection, only for the records
   that lack a category or a language a rule in force reads.
4. **text detectors** (engine.batch.texts): native masks, exact Python
   patterns on the rows they let through.
5. **decide**: the distinct fact vectors of each set of versions in force go
   to durable_rules (through `Judge.decide_rules`, with its completions of
   unknown facts); every message joins back to its decision.
6. **render + write**: a decision's result line is rendered once; messages
   whose findings quote their own evidence, or carry inference notes, are
   rendered one by one with the streaming audit's renderer.

The answers are those of `engine.audit`'s streaming path, byte for byte
(tests/audit/test_batch_equivalence.py).
"""
from __future__ import annotations

import datetime as dt
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import orjson
import polars as pl

from ..classifier.modelcache import cache_directory
from ..audit import (_NO_POLICY, _POINTS, ORDERS_KEPT, AuditConfig, AuditJudge, AuditResult, Summary,
                     provenance, sha256_file)
from ..detectors import (AttachmentsDetector, FieldDetector, LanguageMatchDetector, PriorCountDetector,
                         WindowDetector, _primary)
from ..io import InputError, atomic_output, read_line_by_line
from ..results import write_results_column
from ..model import Outcome, finding_json
from ..timeline import in_force_on, local_noon, marketplace_zone
from . import history
from .decode import EVENT_FIELDS, MESSAGE_FIELDS
from .decide import BatchJudge, DecisionStore, decide
from .infer import infer_missing
from .decode import read_lines
from .load import _Loaded, _Objects, load
from .texts import TEXT_KINDS, Views

_DAY_US = 86_400_000_000
_ATTACHMENTS = pl.List(pl.Struct({"name": pl.String, "kind": pl.String}))


@dataclass
class Stages:
    """Seconds spent in each stage (wall), for bench/audit_bench.py."""

    seconds: dict = field(default_factory=dict)
    _start: float = field(default_factory=time.perf_counter)

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._start
        self._start = now


# ---- the whole audit ----------------------------------------------------------------------


def _extra_field_keys(policies) -> tuple[str, ...]:
    keys = set()
    for family in policies.families.values():
        for v in family.versions:
            for _, spec in v.detectors_used.values():
                if isinstance(spec, FieldDetector) and spec.field not in MESSAGE_FIELDS:
                    keys.add(spec.field)
    return tuple(sorted(keys))


@dataclass
class _Share:
    """One worker's part of an audit: its messages' result lines and its rejects, by line position."""

    summary: Summary
    lines: pl.DataFrame  # pos, line
    rejects: list  # (pos, InputError)
    seconds: dict


def audit_batch(policies, cfg: AuditConfig, on_progress: Optional[Callable[[int], None]] = None,
                stages: Optional[Stages] = None) -> AuditResult:
    """The batch audit over `cfg.jobs` processes: each reads a share of the log and judges the
    buyers that hash to it, so a buyer's history lives in one process. Results are merged
    back in input order."""
    return audit_batch_sides([(policies, cfg)], on_progress, stages)[0]


def same_reading(sides: list) -> bool:
    """Whether the sides can share one read of the log: the same inputs, map, history and
    marketplaces (what decides rejects and history), differing only in policies and --on."""
    (first, cfg), rest = sides[0], sides[1:]
    return all(c.paths == cfg.paths and c.mapping == cfg.mapping and c.history_days == cfg.history_days
               and c.jobs == cfg.jobs and sorted(p.marketplaces) == sorted(first.marketplaces)
               for p, c in rest)


def audit_batch_sides(sides: list, on_progress: Optional[Callable[[int], None]] = None,
                      stages: Optional[Stages] = None) -> list[AuditResult]:
    """One batch audit per (policies, cfg) side over one read of the log: reading,
    validation and history are shared, and so are the facts of every detector two sides
    define alike (a `diff` of two policy versions judges each message twice, reads it once).
    Each side's results and rejects go where its cfg says."""
    if not same_reading(sides):
        raise ValueError("the sides of a shared batch audit must read the same log the same way")
    stages = stages or Stages()
    started = next((c.started for _, c in sides if c.started is not None),
                   dt.datetime.now(dt.timezone.utc).timestamp())
    for _, c in sides:
        c.started = started
    cfg = sides[0][1]
    jobs = max(1, int(cfg.jobs))
    hashes_out: dict = {}

    def digests() -> None:
        for p in cfg.paths:
            try:
                hashes_out[str(p)] = sha256_file(p)
            except OSError:
                return  # the reader names the file that cannot be read

    hasher = threading.Thread(target=digests, daemon=True)
    hasher.start()  # hashlib releases the GIL: the inputs' digests come for free beside the audit
    if jobs == 1:
        prepared = _prepare(sides)
        stages.mark("read+validate")
        by_side = [[share] for share in _judge_sides(sides, prepared, stages)]
    else:
        by_side = _run_workers(sides, jobs, stages)
        last = by_side[-1]  # each worker's last side carries its stage times
        for name in last[0].seconds:  # a stage lasts as long as its slowest worker
            stages.seconds[name] = stages.seconds.get(name, 0.0) + max(s.seconds.get(name, 0.0) for s in last)
        stages._start = time.perf_counter()
    hasher.join()
    results = []
    for (policies, side_cfg), shares in zip(sides, by_side):
        summary = Summary()
        for share in shares:
            summary.merge(share.summary)
        if len(summary.order_scores) > ORDERS_KEPT:
            summary.prune_orders(ORDERS_KEPT)
        written = 0
        if side_cfg.results is not None:
            frames = [s.lines for s in shares]
            lines = frames[0] if len(frames) == 1 else pl.concat(frames).sort("pos")
            written = _write(lines["line"], Path(side_cfg.results))
        rejects = sorted((r for s in shares for r in s.rejects), key=lambda r: r[0])
        out_rejects: list = []
        if side_cfg.rejects is not None:
            with atomic_output(Path(side_cfg.rejects)) as fh:  # never a torn file in place of an earlier one
                fh.write(b"".join(orjson.dumps(err.as_dict()) + b"\n" for _, err in rejects))
        else:
            out_rejects = [err.as_dict() for _, err in rejects]
        inputs = {str(p): hashes_out.get(str(p)) for p in side_cfg.paths}
        results.append(AuditResult(summary, provenance(policies, side_cfg, summary, inputs, jobs, "batch"),
                                   out_rejects, written))
    stages.mark("write")
    if on_progress is not None:
        on_progress(results[0].summary.read)
    stage_file = os.environ.get("MSGPOLICY_STAGE_TIMES")
    if stage_file:  # bench/audit_bench.py reads the stage budget from here
        summary = results[0].summary
        Path(stage_file).write_bytes(orjson.dumps(
            {"stages": stages.seconds, "messages": summary.judged, "lines": summary.read, "jobs": jobs,
             "sides": len(sides)}))
    return results


def _run_workers(sides: list, jobs: int, stages: Stages) -> list[list[_Share]]:
    """The buyers' shares judged by `jobs` fresh interpreters (engine.batch.worker), not forks:
    polars' and DuckDB's thread pools do not survive a fork (a forked child's first parallel
    query waits forever), and multiprocessing's spawn would re-run the caller's main script.
    Shares travel as Arrow IPC files.

    JSON Lines logs are read in parallel: each worker reads a contiguous share of every file
    and hands each buyer's rows to that buyer's worker ("read" phase), then judges its buyers
    ("go"). Other inputs are read here and handed out. Returns each side's shares."""
    cfg = sides[0][1]
    try:
        parallel_read = cfg.mapping is None and all(
            Path(p).suffix.lower() not in (".csv", ".parquet") and not read_line_by_line(p) for p in cfg.paths)
    except OSError:
        parallel_read = False  # the reader names the file that cannot be read
    _sweep_abandoned(Path(tempfile.gettempdir()))
    with tempfile.TemporaryDirectory(prefix=_FOLDER_PREFIX) as tmp:
        folder = Path(tmp)
        (folder / "owner").write_text(_process_identity(os.getpid()) or "")
        # Started first, so that their interpreters start and import meanwhile; each waits
        # for its first line (end of input: the audit was abandoned).
        procs = []
        for w in range(jobs):
            with open(folder / f"stderr.{w}", "wb") as err:  # a file: a full pipe would stall the worker
                procs.append(subprocess.Popen([sys.executable, "-m", "engine.batch.worker", str(folder), str(w),
                                               str(os.getpid())],
                                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err))
        try:
            if parallel_read:
                for path in cfg.paths:  # an input that cannot be read is the reader's error, said here
                    with open(path, "rb"):
                        pass
                (folder / "task").write_bytes(pickle.dumps((sides, jobs)))
                for proc in procs:
                    _tell(proc, b"read\n", close=False)
                for w, proc in enumerate(procs):  # each says "read" when its share is handed out
                    if proc.stdout.readline().strip() != b"read":
                        proc.wait()
                        raise RuntimeError("batch audit worker failed: " + _failure(folder, w, proc))
                stages.mark("read+validate")
                for proc in procs:
                    _tell(proc, b"go\n")
            else:
                _hand_out(sides, jobs, folder, procs)
                stages.mark("read+validate")
            failures = [_failure(folder, w, proc) for w, proc in enumerate(procs) if proc.wait() != 0]
            if failures:
                raise RuntimeError("batch audit worker failed: " + "\n".join(failures))
        finally:
            for proc in procs:  # only after a failure is any still running: stopped, never waited for
                _tell(proc, b"")
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
        by_side = []
        for i in range(len(sides)):
            shares = []
            for w in range(jobs):
                summary, rejects, seconds = pickle.loads((folder / f"share.{w}.{i}").read_bytes())
                shares.append(_Share(summary, pl.read_ipc(folder / f"lines.{w}.{i}.arrow"), rejects, seconds))
            by_side.append(shares)
    return by_side


_FOLDER_PREFIX = "msgpolicy-batch-"


def _process_identity(pid: int) -> Optional[str]:
    """"pid start-time": a pid alone may have been reused by another process since."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return f"{pid} {stat.rsplit(')', 1)[1].split()[19]}"  # field 22, counted after the command name


def _sweep_abandoned(parent: Path) -> None:
    """Remove the work folders of batch audits whose process is gone (a SIGKILLed audit cannot
    remove its own). A folder without an owner file is left alone: it may be being made."""
    for folder in parent.glob(_FOLDER_PREFIX + "*"):
        try:
            owner = (folder / "owner").read_text().split()
        except OSError:
            continue
        if len(owner) == 2 and owner[0].isdigit() and _process_identity(int(owner[0])) != " ".join(owner):
            shutil.rmtree(folder, ignore_errors=True)


def _failure(folder: Path, w: int, proc: subprocess.Popen) -> str:
    err = (folder / f"stderr.{w}").read_text(errors="replace")
    return f"worker {w} (exit code {proc.returncode}):\n{err}"


def _owner(jobs: int) -> pl.Expr:
    """The worker that judges a buyer (polars' hash is the same in every process of a run)."""
    return pl.col("buyer_id").hash(seed=0) % jobs


def _hand_out(sides: list, jobs: int, folder: Path, procs: list) -> None:
    """The log read and validated here (CSV, Parquet, mapped exports), each buyer's rows
    written for its worker."""
    cfg = sides[0][1]
    prepared = _prepare(sides)
    prepared.answered.write_ipc(folder / "answered.arrow")
    bulk_files = [(file, base, str(cfg.paths[file])) for file, (base, _, _) in
                  zip(sorted(prepared.loaded.raw), prepared.loaded.objects.files)]
    messages = prepared.messages.with_columns(owner=_owner(jobs)).partition_by("owner", as_dict=True,
                                                                                include_key=False)
    events = prepared.events.with_columns(owner=_owner(jobs)).partition_by("owner", as_dict=True,
                                                                            include_key=False)
    for w, proc in enumerate(procs):
        own = messages.get((w,), prepared.messages.clear())
        own.write_ipc(folder / f"messages.{w}.arrow")
        events.get((w,), prepared.events.clear()).write_ipc(folder / f"events.{w}.arrow")
        positions = set(own["pos"].to_list())
        # Records validated one by one travel as objects; bulk rows are re-read from their line.
        objects = {pos: m for pos, m in dict.items(prepared.loaded.objects) if pos in positions}
        counts = (prepared.loaded.read, prepared.loaded.blank) if w == 0 else (0, 0)
        rejects = [r for r in prepared.rejects if r[0] % jobs == w]
        (folder / f"task.{w}").write_bytes(pickle.dumps((sides, rejects, objects, bulk_files, counts)))
        _tell(proc, b"go\n")


def _tell(proc: subprocess.Popen, line: bytes, close: bool = True) -> None:
    """Write a line to a waiting worker, and close its input (once) unless told not to."""
    if proc.stdin is None or proc.stdin.closed:
        return
    try:
        if line:
            proc.stdin.write(line)
            proc.stdin.flush()
        if close:
            proc.stdin.close()
    except OSError:
        pass  # it has already gone; its exit code tells why


def read_share(folder: Path, worker: int) -> None:
    """A worker's "read" phase (engine.batch.worker): its share of every JSON Lines file
    decoded and validated, each buyer's rows written for the worker that judges that buyer,
    with what every worker needs of the whole log (message ids, log times, buyer messages)."""
    sides, jobs = pickle.loads((folder / "task").read_bytes())
    cfg = sides[0][1]
    loaded = load(list(cfg.paths), None, cfg.started, _extra_keys(sides), part=(worker, jobs))
    loaded.clock.write_ipc(folder / f"clock.{worker}.arrow")
    loaded.ids.write_ipc(folder / f"ids.{worker}.arrow")
    loaded.messages.filter(pl.col("initiated_by") == "buyer").select(
        "pos", "message_id", "buyer_id", "sent_us", "body", "marketplace", "initiated_by",
    ).write_ipc(folder / f"buyers.{worker}.arrow")
    messages = loaded.messages.with_columns(owner=_owner(jobs)).partition_by("owner", as_dict=True,
                                                                              include_key=False)
    events = loaded.events.with_columns(owner=_owner(jobs)).partition_by("owner", as_dict=True,
                                                                          include_key=False)
    for w in range(jobs):
        own = messages.get((w,), loaded.messages.clear())
        own.write_ipc(folder / f"messages.{worker}.{w}.arrow")
        events.get((w,), loaded.events.clear()).write_ipc(folder / f"events.{worker}.{w}.arrow")
        objects = {pos: dict.__getitem__(loaded.objects, pos) for pos in own["pos"].to_list()
                   if dict.__contains__(loaded.objects, pos)}
        (folder / f"objects.{worker}.{w}").write_bytes(pickle.dumps(objects))
    (folder / f"read.{worker}").write_bytes(pickle.dumps((loaded.rejects, loaded.read, loaded.blank)))


def run_share(folder: Path, worker: int) -> None:
    """A worker's whole job (engine.batch.worker): the task files in, its share's files out."""
    stages = Stages()
    if (folder / "task").exists():  # after read_share in every worker
        sides, jobs = pickle.loads((folder / "task").read_bytes())
        policies, cfg = sides[0]
        # The read phase is timed by the parent (it waits for every worker's); this is the gathering.
        prepared = _prepare_loaded(policies, cfg, _gather(folder, worker, jobs, cfg.paths),
                                   _every(folder, "buyers", jobs))
    else:
        sides, rejects, objects, bulk_files, (read, blank) = pickle.loads((folder / f"task.{worker}").read_bytes())
        loaded_objects = _Objects()
        loaded_objects.update(objects)
        raw = {}
        for file, base, path in bulk_files:
            data, offsets = read_lines(Path(path))
            raw[file] = (data, offsets)
            loaded_objects.files.append((base, data, offsets))
        messages = pl.read_ipc(folder / f"messages.{worker}.arrow")
        prepared = _Prepared(messages, pl.read_ipc(folder / f"events.{worker}.arrow"), rejects,
                             pl.read_ipc(folder / "answered.arrow"),
                             _Loaded(messages, None, [], None, None, loaded_objects, raw, blank, read))
    stages.mark("read+validate")
    for i, share in enumerate(_judge_sides(sides, prepared, stages)):
        share.lines.write_ipc(folder / f"lines.{worker}.{i}.arrow")
        (folder / f"share.{worker}.{i}").write_bytes(pickle.dumps((share.summary, share.rejects, share.seconds)))


def _every(folder: Path, name: str, jobs: int) -> pl.DataFrame:
    """What every worker's read phase wrote under `name`, in position order."""
    return pl.concat([pl.read_ipc(folder / f"{name}.{w}.arrow") for w in range(jobs)]).sort("pos")


def _gather(folder: Path, worker: int, jobs: int, paths: list) -> _Loaded:
    """This worker's buyers' rows from every worker's read phase, as one log read in order:
    its own rejects, and the whole log's message ids and log times."""
    def own(name: str) -> pl.DataFrame:
        return pl.concat([pl.read_ipc(folder / f"{name}.{w}.{worker}.arrow")
                          for w in range(jobs)]).sort("pos")

    objects = _Objects()
    for w in range(jobs):
        objects.update(pickle.loads((folder / f"objects.{w}.{worker}").read_bytes()))
    raw = {}
    base = 0
    for file, path in enumerate(paths):  # bulk rows' objects are re-read from their line when asked for
        data, offsets = read_lines(Path(path))
        raw[file] = (data, offsets)
        objects.files.append((base, data, offsets))
        base += len(offsets)
    rejects, read, blank = pickle.loads((folder / f"read.{worker}").read_bytes())
    return _Loaded(own("messages"), own("events"), rejects, _every(folder, "clock", jobs),
                   _every(folder, "ids", jobs), objects, raw, blank, read)


@dataclass
class _Prepared:
    """The log read and validated, with what only the whole log tells: repeated ids, the log
    clock at each record, every buyer message a reply may name."""

    messages: pl.DataFrame
    events: pl.DataFrame
    rejects: list
    answered: pl.DataFrame
    loaded: _Loaded


def _extra_keys(sides: list) -> tuple[str, ...]:
    return tuple(sorted({k for policies, _ in sides for k in _extra_field_keys(policies)}))


def _prepare(sides: list) -> _Prepared:
    policies, cfg = sides[0]
    loaded = load(list(cfg.paths), cfg.mapping, cfg.started, _extra_keys(sides))
    return _prepare_loaded(policies, cfg, loaded, None)


def _prepare_loaded(policies, cfg: AuditConfig, loaded: _Loaded, buyers: Optional[pl.DataFrame]) -> _Prepared:
    """Rejects of unknown marketplaces and repeated ids, and the log clock, from `loaded`
    (the whole log's ids and log times; its messages and events may be one worker's buyers
    only, then `buyers` holds every buyer message of the log, for the replies)."""
    rejects = list(loaded.rejects)
    messages = loaded.messages
    source_of = {i: str(p) for i, p in enumerate(cfg.paths)}

    # Unknown marketplaces and repeated ids (the first line with an id keeps it, valid or not).
    dup_pos = loaded.ids.filter(~pl.col("mid").is_first_distinct())["pos"]
    known = sorted(policies.marketplaces)
    kept = pl.col("marketplace").is_in(known) & ~pl.col("pos").is_in(dup_pos.implode())
    bad = messages.filter(~kept)
    if not bad.is_empty():
        names = ", ".join(known)
        for pos, file, line, mid, market in bad.select("pos", "file", "line", "message_id", "marketplace").iter_rows():
            if market not in policies.marketplaces:
                err = InputError(source_of[file], line, mid, "marketplace",
                                 f"unknown marketplace {market!r} (known: {names})")
            else:
                err = InputError(source_of[file], line, mid, "message_id",
                                 "duplicate message_id in this log (an earlier line has it)")
            rejects.append((pos, err))
        messages = messages.filter(kept)

    # The log clock at each line, and each record's own instant in seconds.
    clock = loaded.clock.with_columns(clock=pl.col("lt").cum_max().forward_fill().fill_null(float("-inf")))
    messages = messages.with_columns(t=pl.col("sent_us").cast(pl.Float64) / 1e6).join(
        clock.select("pos", "clock"), on="pos", how="left")
    events = loaded.events.with_columns(t=pl.col("at_us").cast(pl.Float64) / 1e6).join(
        clock.select("pos", "clock"), on="pos", how="left")
    # A reply may name another buyer's message, held by another worker: all are kept.
    if buyers is None:
        answered = history.buyer_messages(messages)
    else:
        answered = history.buyer_messages(
            buyers.filter(kept).with_columns(t=pl.col("sent_us").cast(pl.Float64) / 1e6))
    return _Prepared(messages, events, rejects, answered, loaded)


def _judge_sides(sides: list, prepared: _Prepared, stages: Stages) -> Iterator[_Share]:
    """Every stage after reading, for one share of the buyers (all of them with one job):
    history (the same for every side), then per side versions in force, inference, text
    detectors, decide, render. Each side's share is yielded as it is done (and can be let go)."""
    cfg = sides[0][1]
    horizon = dt.timedelta(days=cfg.history_days).total_seconds()
    store = DecisionStore(cache_directory())
    loaded, messages, events, rejects, answered = (prepared.loaded, prepared.messages, prepared.events,
                                                   prepared.rejects, prepared.answered)
    stages.mark("read+validate")

    # History.
    both = pl.concat([
        messages.select("pos", "buyer_id", "t", "clock", pl.lit(True).alias("is_message")),
        events.select("pos", "buyer_id", "t", "clock", pl.lit(False).alias("is_message")),
    ]).sort("pos")
    late_all = history.out_of_order(both, horizon)
    late = both.with_columns(late=late_all).filter(pl.col("is_message"))["late"]
    messages = messages.with_columns(
        late=late,
        opted_out=history.opted_out(messages, events.select("pos", "buyer_id", "t", "ev_state")),
        quotes=history.quotes(messages, answered, horizon),
    )
    stages.mark("history")

    memo = _Memo()
    for policies, side_cfg in sides:
        judge = BatchJudge(policies, store)
        summary = Summary(read=loaded.read, blank=loaded.blank)
        summary.rejected = len(rejects)
        for _, err in rejects:
            summary.reject_reasons[err.field or "(record)"] += 1
        summary.events = len(events)

        # Versions in force: one lookup per (marketplace, local date).
        side, vsets, instants = _versions_in_force(policies, messages, side_cfg.at)
        stages.mark("read+validate")

        # Inference for the records that lack what a rule in force reads.
        side, inferences = infer_missing(judge, side, vsets, loaded, memo.languages)
        stages.mark("infer")

        # Facts per distinct detector, over the messages whose versions read it.
        side, detector_columns = _detectors(policies, side, vsets, loaded, horizon, memo)
        stages.mark("text/detectors")

        # Decide each distinct vector, join back.
        side, plans = decide(judge, side, vsets, detector_columns)
        store.save()
        stages.mark("decide")

        lines = _render(side, plans, vsets, detector_columns, inferences, instants, side_cfg.at)
        _summarise(summary, side, plans, vsets, inferences, policies, side_cfg.at)
        stages.mark("render")
        yield _Share(summary, pl.DataFrame({"pos": side["pos"], "line": lines}), rejects, dict(stages.seconds))


class _Memo:
    """What one side computed that another side may reuse: detector facts by spec key (for
    the detectors that read only the record), language readings by text."""

    def __init__(self):
        self.facts: dict[str, list] = {}  # spec key → [(rows mask, values, spans)]
        self.languages: dict = {}

    def find(self, key: str, rows_mask: pl.Series):
        for mask, values, spans in self.facts.get(key, ()):
            if mask.equals(rows_mask):
                return values, spans
        return None

    def keep(self, key: str, rows_mask: pl.Series, values: pl.Series, spans: pl.Series) -> None:
        self.facts.setdefault(key, []).append((rows_mask, values, spans))


def _versions_in_force(policies, messages: pl.DataFrame, at):
    """Adds `vset` (index into the returned list of version tuples); returns the instants of
    --on per marketplace (None: each message's own sent_at)."""
    markets = messages["marketplace"].unique().to_list()
    instants = None
    if at is None:
        utc = pl.from_epoch(pl.col("sent_us"), time_unit="us").dt.replace_time_zone("UTC")
        date = None
        for market in markets:
            zone = marketplace_zone(policies, market).key
            local = utc.dt.convert_time_zone(zone).dt.date()
            date = (pl.when(pl.col("marketplace") == market).then(local) if date is None
                    else date.when(pl.col("marketplace") == market).then(local))
        messages = messages.with_columns(local_date=date.otherwise(None) if date is not None else pl.lit(None, pl.Date))
    else:
        instants = {}
        for market in markets:
            instant = at if isinstance(at, dt.datetime) else local_noon(policies, at, market)
            instants[market] = instant
        dates = {m: i.astimezone(marketplace_zone(policies, m)).date() for m, i in instants.items()}
        messages = messages.with_columns(
            local_date=pl.col("marketplace").replace_strict(dates, return_dtype=pl.Date, default=None))
    pairs = messages.select("marketplace", "local_date").unique()
    vsets: list[tuple] = []
    index: dict[tuple, int] = {}
    rows = []
    for market, day in pairs.iter_rows():
        versions = tuple(in_force_on(policies, day, market))
        key = tuple(v.content_hash for v in versions)
        if key not in index:
            index[key] = len(vsets)
            vsets.append(versions)
        rows.append((market, day, index[key]))
    lookup = pl.DataFrame(rows, schema={"marketplace": pl.String, "local_date": pl.Date, "vset": pl.Int32},
                          orient="row")
    return messages.join(lookup, on=["marketplace", "local_date"], how="left").sort("pos"), vsets, instants


class _Column:
    """One detector's value and span columns over the messages: natively computed expressions
    (null and "" outside the rows whose versions read the detector), then the rows that
    Python code decided, set in one scatter each."""

    def __init__(self, rows_mask: pl.Series):
        self.rows_mask = rows_mask
        self.value: pl.Expr = pl.lit(None, dtype=pl.Boolean)
        self.span: pl.Expr = pl.lit("")
        self.rows: list[int] = []
        self.values: list = []
        self.spans: list = []

    def native(self, value: pl.Expr, span: pl.Expr) -> None:
        self.value = pl.when(pl.lit(self.rows_mask)).then(value).otherwise(None)
        self.span = pl.when(pl.lit(self.rows_mask)).then(span.fill_null("")).otherwise(pl.lit(""))

    def set(self, row: int, value, span: str) -> None:
        self.rows.append(row)
        self.values.append(value)
        self.spans.append(span)

    def series(self, messages: pl.DataFrame, vcol: str, scol: str) -> tuple[pl.Series, pl.Series]:
        out = messages.select(self.value.cast(pl.Boolean).alias(vcol), self.span.cast(pl.String).alias(scol))
        values, spans = out[vcol], out[scol]
        if self.rows:
            rows = pl.Series(self.rows, dtype=pl.UInt32)
            values.scatter(rows, pl.Series(self.values, dtype=pl.Boolean))
            spans.scatter(rows, pl.Series(self.spans, dtype=pl.String))
        return values, spans


def _tenths(elapsed: pl.Expr) -> pl.Expr:
    """f"{elapsed / _DAY_US:.1f}" natively, where exact: 0 <= elapsed < 1000 days and not
    halfway between two tenths (there the double's own digits decide; null is returned)."""
    q, r = (elapsed * 10) // _DAY_US, (elapsed * 10) % _DAY_US
    rounded = q + (2 * r > _DAY_US).cast(pl.Int64)
    exact = (elapsed >= 0) & (elapsed < 1000 * _DAY_US) & (2 * r != _DAY_US)
    return pl.when(exact).then(pl.concat_str([(rounded // 10).cast(pl.String), pl.lit("."),
                                               (rounded % 10).cast(pl.String)]))


# Detectors whose facts read the record alone (not inferred fields, not the history): one
# side's facts serve another's for the same spec over the same rows.
_RECORD_ONLY = (*TEXT_KINDS, WindowDetector, FieldDetector, AttachmentsDetector)


def _detectors(policies, messages, vsets, loaded, horizon, memo: Optional[_Memo] = None):
    """Value and span columns for every detector used by a version in force (by spec key)."""
    used: dict[str, object] = {}
    users: dict[str, set] = {}
    for i, versions in enumerate(vsets):
        for v in versions:
            for _, (key, spec) in v.detectors_used.items():
                used.setdefault(key, spec)
                users.setdefault(key, set()).add(i)
    columns: dict[str, tuple[str, str]] = {}
    new_cols = []
    views_cache: dict[frozenset, tuple] = {}
    indexed = messages.with_row_index("row")
    for j, (key, spec) in enumerate(used.items()):
        vcol, scol = f"d{j}_v", f"d{j}_s"
        columns[key] = (vcol, scol)
        rows_mask = messages["vset"].is_in(sorted(users[key]))
        column = _Column(rows_mask)
        kind = type(spec)
        reusable = memo is not None and kind in _RECORD_ONLY
        found = memo.find(key, rows_mask) if reusable else None
        if found is not None:
            new_cols += [found[0].alias(vcol), found[1].alias(scol)]
            continue
        if kind in TEXT_KINDS:
            group = frozenset(users[key])
            if group not in views_cache:
                rows = rows_mask.arg_true()
                sub = messages[rows]
                views_cache[group] = (rows.to_list(), Views(sub["subject"], sub["body"]))
            rows, views = views_cache[group]
            column.native(pl.lit(False), pl.lit(""))
            for i, (value, span) in TEXT_KINDS[kind](spec, views).items():
                column.set(rows[i], value, span)
        elif kind is PriorCountDetector:
            seller = pl.col("initiated_by") == "seller"
            cats = [c.value for c in spec.categories]
            chans = [c.value for c in spec.channels]
            counting = seller & (pl.col("category").is_in(cats).fill_null(False) | pl.col("channel").is_in(chans))
            cand = pl.col("candidates").str.split("|")
            possible = ~counting & seller & pl.col("category").is_null() & \
                cand.list.eval(pl.element().is_in(cats)).list.any().fill_null(False)
            counts = history.prior_counts(messages, spec, counting, possible, horizon)
            c, first, maybe = pl.lit(counts["count"]), pl.lit(counts["first"]), pl.lit(counts["maybe"])
            earlier = pl.concat_str([c.cast(pl.String), pl.lit(" earlier, first "), first.fill_null("None")])
            column.native(
                pl.when(c >= spec.at_least).then(True).when(c + maybe >= spec.at_least).then(None).otherwise(False),
                pl.when(c >= spec.at_least).then(earlier)
                .when(c + maybe >= spec.at_least).then(pl.concat_str([
                    c.cast(pl.String), pl.lit(" earlier, "), maybe.cast(pl.String),
                    pl.lit(" more if their uncertain category counts")]))
                .when(c != 0).then(earlier).otherwise(pl.lit("")))
        elif kind is WindowDetector:
            anchors = {"delivered_at": "delivered_us", "order_placed_at": "order_placed_us"}
            # The first anchor the message has, in the detector's order.
            anchor = pl.coalesce([pl.col(anchors[a]) for a in spec.anchors])
            named = pl.lit(None, dtype=pl.String)
            for name in reversed(spec.anchors):
                named = pl.when(pl.col(anchors[name]).is_not_null()).then(pl.lit(name)).otherwise(named)
            elapsed = pl.col("sent_us") - anchor
            column.native(
                pl.when(anchor.is_null()).then(None).otherwise(elapsed <= spec.max_days * _DAY_US),
                pl.when(anchor.is_null()).then(pl.lit("no " + " or ".join(spec.anchors)))
                .otherwise(pl.concat_str([_tenths(elapsed), pl.lit(" days after "), named])))
            # Where the tenths are not exact natively, Python's formatting writes them.
            odd = indexed.filter(rows_mask & anchor.is_not_null() & _tenths(elapsed).is_null())
            for row, gap, name in odd.select("row", elapsed.alias("gap"), named.alias("name")).iter_rows():
                column.set(row, gap <= spec.max_days * _DAY_US, f"{gap / _DAY_US:.1f} days after {name}")
        elif kind is LanguageMatchDetector:
            lang, buyer = pl.col("language"), pl.col("buyer_language")
            unknown = (lang.fill_null("") == "") | (buyer.fill_null("") == "")

            def primary(tag: pl.Expr) -> pl.Expr:  # engine.detectors._primary, for ASCII tags
                return tag.str.replace_all("_", "-", literal=True).str.split("-").list.first().str.to_lowercase()

            column.native(pl.when(unknown).then(None).otherwise(primary(lang) == primary(buyer)),
                          pl.when(unknown).then(pl.lit("")).otherwise(
                              pl.concat_str([lang, pl.lit(" vs buyer's "), buyer])))
            # Python and Rust may lower-case other scripts differently: those tags go through Python.
            wide = indexed.filter(rows_mask & ~unknown & (lang.str.contains(r"[^\x00-\x7F]")
                                                          | buyer.str.contains(r"[^\x00-\x7F]")))
            for row, a, b in wide.select("row", "language", "buyer_language").iter_rows():
                column.set(row, _primary(a) == _primary(b), f"{a} vs buyer's {b}")
        elif kind is FieldDetector:
            name = spec.field
            direct = name in MESSAGE_FIELDS and name in messages.columns
            # Only a record validated one by one (or an extra field) is read from its model object.
            per_line = (pl.col("slow") & pl.col("attachments_json").is_null()) if direct else pl.col("slow")
            if direct and messages.schema[name] in (pl.Boolean, pl.String):
                value = pl.col(name)
                truth = value if messages.schema[name] == pl.Boolean else value != ""
                shown = (pl.when(value).then(pl.lit("True")).otherwise(pl.lit("False"))
                         if messages.schema[name] == pl.Boolean else value)
                column.native(pl.when(value.is_null()).then(None).otherwise(truth),
                              pl.when(value.is_null()).then(pl.lit("")).otherwise(
                                  pl.concat_str([pl.lit(f"{name} = "), shown])))
                python_rows = indexed.filter(rows_mask & per_line)
            else:
                python_rows = indexed.filter(rows_mask)
            for row, pos, slow, value in python_rows.select(
                    "row", "pos", per_line, pl.col(name) if direct else pl.lit(None)).iter_rows():
                if slow:
                    m = loaded.objects[pos]
                    value = getattr(m, name, None)
                    if value is None and m.model_extra:
                        value = m.model_extra.get(name)
                column.set(row, *((None, "") if value is None else (bool(value), f"{name} = {value}")))
        elif kind is AttachmentsDetector:
            column.native(pl.lit(False), pl.lit(""))
            sub = indexed.filter(rows_mask)
            # Taken in bulk, a message's attachments are canonical JSON: read natively.
            allowed = [k.value for k in spec.allowed_kinds]
            outside = (sub.filter(pl.col("attachments_json").is_not_null())
                       .select("row", pl.col("attachments_json").str.json_decode(_ATTACHMENTS).alias("a"))
                       .explode("a").unnest("a").filter(~pl.col("kind").is_in(allowed))
                       .group_by("row", maintain_order=True).first())
            for row, name, found in outside.select("row", "name", "kind").iter_rows():
                column.set(row, True, f"{name} ({found})")
            # Validated one by one, it has its model object.
            for row, pos in sub.filter(pl.col("slow") & pl.col("attachments_json").is_null()).select(
                    "row", "pos").iter_rows():
                for attachment in loaded.objects[pos].attachments:
                    if attachment.kind not in spec.allowed_kinds:
                        column.set(row, True, f"{attachment.name} ({attachment.kind.value})")
                        break
        else:
            raise TypeError(f"the batch engine has no evaluation for detector {spec!r}")
        values, spans = column.series(messages, vcol, scol)
        if reusable:
            memo.keep(key, rows_mask, values, spans)
        new_cols += [values, spans]
    return messages.with_columns(new_cols), columns


def _json_string(col: pl.Expr) -> pl.Expr:
    """A string column as orjson writes a JSON string: polars' JSON encoder escapes the same
    characters (tests/batch/test_render.py checks it), so evidence is written natively."""
    return pl.struct(col.alias("x")).struct.json_encode().str.slice(5).str.strip_suffix("}")


def _evidence(pairs: tuple) -> pl.Expr:
    """',"evidence":{…}' of one finding from its facts' span columns ("" when no span is set),
    as `_Plan.render` writes it: the finding's facts in order, those with a non-empty span."""
    if not pairs:
        return pl.lit("")
    pieces = [pl.when(pl.col(column).fill_null("") != "").then(
        pl.lit(orjson.dumps(name).decode() + ":") + _json_string(pl.col(column))) for name, column in pairs]
    joined = pl.concat_str(pieces, separator=",", ignore_nulls=True)
    return pl.when(joined.fill_null("") != "").then(pl.lit(',"evidence":{') + joined + pl.lit("}")).otherwise(pl.lit(""))


_NO_POLICY_HEAD = _NO_POLICY[0][:-2].decode()  # '"outcome":"no_policy",…,"findings":['


def _render(messages, plans, vsets, detector_columns, inferences, instants, at) -> pl.Series:
    """Each message's result line (with its newline), in stream order.

    A line is its header, its plan's head, the notes on what was inferred for the message
    (if any), then its findings. A plan (a decided verdict) whose findings quote no evidence
    has one rest for all its messages. A plan that quotes evidence is a list of finding
    templates; each message's spans are filled in natively, finding by finding. The notes
    are rendered in Python once per distinct inference (a detected language repeats)."""
    first_vset = dict(messages.group_by("plan").agg(pl.col("vset").first()).iter_rows())
    heads: list[Optional[str]] = [None] * len(plans)
    static: list[Optional[str]] = [None] * len(plans)  # the rest after the head, for plans quoting nothing
    templates = []  # (plan, finding index, finding JSON without its closing brace, evidence kind)
    kinds: dict[tuple, int] = {}  # ((fact name, span column), …) → evidence kind
    quoting: list[int] = []
    for p, plan in enumerate(plans):
        if plan is None:
            heads[p], static[p] = _NO_POLICY_HEAD, "]}"
            continue
        if p not in first_vset:
            continue
        heads[p] = plan.head.decode()
        versions = vsets[first_vset[p]]
        quoted = []
        for _, i, names in plan.findings:
            used = versions[i].detectors_used
            quoted.append(tuple((name, detector_columns[used[name][0]][1]) for name in names if name in used))
        if not any(quoted):
            static[p] = plan.render([{} for _ in versions]).decode()[len(heads[p]):]
            continue
        quoting.append(p)
        for k, ((body, _, _), pairs) in enumerate(zip(plan.findings, quoted)):
            templates.append((p, k, body.decode(), kinds.setdefault(pairs, len(kinds))))

    # Static rests keyed by (plan, late): the out_of_order variant is made once per plan, and each
    # line's text is copied once, by the final concat (result lines are most of the output's bytes).
    late_rest = [None if t is None else t[:-1] + ',"out_of_order":true}' for t in static]
    keys = pl.Series(range(2 * len(plans)), dtype=pl.Int64)
    static_values = pl.Series([v for pair in zip(static, late_rest) for v in pair], dtype=pl.String)
    plan_keys = pl.Series(range(len(plans)), dtype=pl.Int64)
    frame = messages.select(
        "message_id", "sent_iso", "marketplace", "late", "plan",
        (pl.col("plan").cast(pl.Int64) * 2 + pl.col("late").cast(pl.Int64))
        .replace_strict(keys, static_values, default=None).alias("static"),
        pl.col("plan").cast(pl.Int64).replace_strict(plan_keys, pl.Series(heads, dtype=pl.String),
                                                     default=None).alias("head"))
    quoted = pl.lit(None, dtype=pl.String)
    if templates:
        span_columns = sorted({column for pairs in kinds for _, column in pairs})
        template_frame = pl.DataFrame(templates, schema={"plan": pl.UInt32, "k": pl.Int32, "body": pl.String,
                                                         "kind": pl.Int32}, orient="row").with_row_index("tid")
        quoted_rows = messages.select("plan", "late", *span_columns).with_row_index("row").filter(
            pl.col("plan").is_in(quoting))
        long = quoted_rows.with_columns(pl.col("plan").cast(pl.UInt32)).join(
            template_frame.select("plan", "k", "kind", "tid"), on="plan")
        # Each evidence kind on its own rows only: a when/then chain would evaluate every kind everywhere.
        # The finding bodies join in after the sort, so only short strings are moved about.
        pairs_of = {kind: pairs for pairs, kind in kinds.items()}
        pieces = pl.concat([part.select("row", "late", "k", "tid",
                                        _evidence(pairs_of[part["kind"][0]]).alias("evidence"))
                            for part in long.partition_by("kind")]).sort("row", "k")
        bodies = template_frame["body"]
        filled = (pieces.select("row", "late", pl.concat_str([
                      pl.col("tid").replace_strict(pl.Series(range(len(bodies)), dtype=pl.UInt32), bodies),
                      pl.col("evidence"), pl.lit("}")]).alias("piece"))
                  .group_by("row", maintain_order=True)
                  .agg(pl.col("late").first(), pl.col("piece").str.join(","))
                  .select("row", pl.concat_str([
                      pl.col("piece"),
                      pl.when(pl.col("late")).then(pl.lit('],"out_of_order":true}')).otherwise(pl.lit("]}"))
                  ]).alias("quoted")))
        frame = frame.with_row_index("row").join(filled, on="row", how="left", maintain_order="left").drop("row")
        quoted = pl.col("quoted")
    notes = _notes(messages, plans, inferences)
    if notes is not None:
        frame = frame.with_columns(notes=notes)
        notes = pl.col("notes")
    else:
        notes = pl.lit(None, dtype=pl.String)
    if at is None:
        iso = pl.col("sent_iso")
    else:
        iso = pl.col("marketplace").replace_strict({m: i.isoformat() for m, i in instants.items()})
    # Exactly one of static and quoted is set on a row; notes only where something was inferred.
    tail = pl.concat_str([pl.col("head"), notes, pl.col("static"), quoted], ignore_nulls=True)
    # An id that needs escaping (rare) is written by orjson below.
    simple_id = ~pl.col("message_id").str.contains(r'["\\\x00-\x1f]')
    line = pl.concat_str([
        pl.lit('{"message_id":"'), pl.when(simple_id).then(pl.col("message_id")), pl.lit('","evaluated_at":"'), iso,
        pl.lit('",'), tail, pl.lit("\n")], ignore_nulls=True)
    lines = frame.select(line.alias("line"))["line"]  # lines of escaped ids are replaced below
    escaped = frame.select(~simple_id)["message_id"].arg_true().to_list()
    if not escaped:
        return lines
    picked = frame[escaped].select("message_id", iso.alias("iso"), tail.alias("tail"))
    dumps = orjson.dumps
    out = [(b'{"message_id":' + dumps(mid) + b',"evaluated_at":"' + instant.encode() + b'",'
            + rest.encode() + b"\n").decode() for mid, instant, rest in picked.iter_rows()]
    patch = pl.DataFrame({"row": pl.Series(escaped, dtype=pl.UInt32), "own": pl.Series(out, dtype=pl.String)})
    return (lines.to_frame().with_row_index("row").join(patch, on="row", how="left", maintain_order="left")
            .select(pl.coalesce("own", "line").alias("line"))["line"])


def _notes(messages, plans, inferences) -> Optional[pl.Series]:
    """Per row, the JSON of the notes on what was inferred, followed by a comma when findings
    follow them (null where nothing was inferred, or no policy is in force: that line has none)."""
    if not inferences:
        return None
    plan_of = messages["plan"].to_list()
    values: list[Optional[str]] = [None] * len(messages)
    seen: dict = {}
    dumps = orjson.dumps
    for row, inference in inferences.items():
        plan = plans[plan_of[row]]
        if plan is None:
            continue
        # Without a classification, the notes are the detected language's alone.
        key = (inference.language, inference.label, inference.sources, len(plan.findings) > 0) \
            if inference.classification is None else None
        text = seen.get(key) if key is not None else None
        if text is None:
            notes = AuditJudge._inference_findings(inference, plan.per_candidate)
            text = ",".join(dumps(finding_json(n)).decode() for n in notes)
            if notes and plan.findings:
                text += ","
            if key is not None:
                seen[key] = text
        values[row] = text
    return pl.Series(values, dtype=pl.String)


def _summarise(summary: Summary, messages, plans, vsets, inferences, policies, at) -> None:
    hashes = {(v.family, v.id): v.content_hash for f in policies.families.values() for v in f.versions}
    month = pl.col("sent_iso").str.slice(0, 7)
    outcome_of = {p: (_NO_POLICY[1] if plan is None else plan.outcome) for p, plan in enumerate(plans)}
    frame = messages.select("plan", "order_id", month.alias("month"))
    counts = frame.group_by("plan").len()
    summary.judged = len(messages)
    summary.out_of_order = int(messages["late"].sum())
    if messages.is_empty():
        return  # a log of events and rejects only: nothing to tally
    for p, n in counts.iter_rows():
        plan = plans[p]
        outcome = outcome_of[p].value
        summary.outcomes[outcome] += n
        if plan is None:
            continue
        for policy, version in plan.policies:
            summary.by_version[(policy, version, outcome)] += n
            name = f"{policy}/{version}"
            if name not in summary.versions_used:
                summary.versions_used[name] = hashes[(policy, version)]
        for key in plan.finding_keys:
            summary.by_rule[key] += n
    for row, inference in inferences.items():
        plan = plans[messages["plan"][row]]
        if plan is None:
            continue
        for f in AuditJudge._inference_findings(inference, plan.per_candidate):
            summary.by_rule[(f.outcome.value, f.policy, f.version, f.rule)] += 1
    outcome_col = pl.col("plan").replace_strict({p: o.value for p, o in outcome_of.items()}, return_dtype=pl.String)
    by_month = frame.group_by("month", outcome_col.alias("outcome")).len()
    for m, o, n in by_month.iter_rows():
        summary.by_month[(m, o)] += n
    points = {o.value: pts for o, pts in _POINTS.items()}
    bad = frame.with_columns(outcome=outcome_col).filter(pl.col("outcome").is_in(list(points)))
    if not bad.is_empty():
        scored = bad.with_columns(points=pl.col("outcome").replace_strict(points, return_dtype=pl.Int64))
        top = scored.group_by("order_id").agg(pl.col("points").sum()).sort(
            ["points", "order_id"], descending=[True, False]).head(ORDERS_KEPT)
        summary.order_scores = Counter(dict(top.iter_rows()))
        per = scored.filter(pl.col("order_id").is_in(top["order_id"].implode())).group_by("order_id", "outcome").len()
        summary.order_counts = Counter({(o, out): n for o, out, n in per.iter_rows()})
    _ = at


def _write(lines: pl.Series, path: Path) -> int:
    # JSON Lines and Parquet straight from the column's buffers; CSV goes through the lines.
    return write_results_column(lines, path)


__all__ = ["audit_batch", "Stages", "EVENT_FIELDS", "Outcome"]
