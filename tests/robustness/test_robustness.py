"""Hostile input, interrupted runs and careless users: never a traceback, a hang or a lost file.

One test per class of problem, each on small inputs it makes itself."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine import detectors
from engine.cli import main
from engine.io import MAX_RECORD_BYTES, SafeCsvWriter, atomic_output
from engine.results import write_results

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"message_id": "M1", "order_id": "O1", "buyer_id": "B1", "sent_at": "2021-03-28T10:00:00-07:00",
        "body": "Hello", "category": "shipment_confirmation"}
CSV_HEADER = "message_id,order_id,buyer_id,sent_at,body,category\n"


def csv_row(mid: str, body: str = "Hello") -> str:
    return f"{mid},O1,B1,2021-03-28T10:00:00-07:00,{body},shipment_confirmation\n"


def jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.stderr + result.output, result.stderr
    return result


# ---- one error path ------------------------------------------------------------------------


def test_bad_option_values_are_clicks_errors(tmp_path):
    log = jsonl(tmp_path / "log.jsonl", [GOOD])
    for args, option in ((["--on", "yesterday"], "--on"), (["--on", "9999-12-31T23:59:59-12:00"], "--on")):
        result = run("check", log, *args)
        assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.stderr
    result = run("audit", log, "--history-days", "999999999999")
    assert result.exit_code == 2 and "Invalid value for '--history-days'" in result.stderr
    result = run("rules", "--on", "2021-01-01T00:00:00Z", "--marketplace", "XX")
    assert result.exit_code == 2 and "Invalid value for '--marketplace'" in result.stderr


def test_an_unexpected_failure_exits_2_with_one_line_and_the_traceback_only_under_debug(tmp_path, monkeypatch):
    log = jsonl(tmp_path / "log.jsonl", [GOOD])

    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr("engine.cli.check_log", broken)
    plain = CliRunner().invoke(main, ["check", str(log)])
    assert plain.exit_code == 2
    assert plain.stderr.strip().splitlines() == [
        "internal error: ZeroDivisionError: boom (run with --debug for the traceback)"]
    debug = CliRunner().invoke(main, ["--debug", "check", str(log)])
    assert debug.exit_code == 2 and "Traceback" in debug.stderr


# ---- a bad record never stops a stream -------------------------------------------------------


@pytest.mark.parametrize("bad", [
    {"sent_at": "0001-01-01T00:00:00+01:00"},
    {"sent_at": "9999-12-31T23:00:00-05:00"},
    {"delivered_at": "0001-01-01T00:30:00+01:00"},
    {"body": "x" * 1_000_001},
], ids=["year-1", "year-9999", "delivered-year-1", "body-too-long"])
def test_a_value_the_model_cannot_hold_is_a_reject_with_its_field(tmp_path, bad):
    records = [{**GOOD, "message_id": f"M{i}", "buyer_id": f"B{i % 7}"} for i in range(40)]
    records.insert(20, {**GOOD, "message_id": "BAD", **bad})
    log = jsonl(tmp_path / "log.jsonl", records)
    rejects = tmp_path / "rejects.jsonl"
    result = run("audit", log, "--engine", "stream", "--jobs", "2", "--rejects", rejects, "--format", "json")
    assert result.exit_code == 1, result.stderr
    (reject,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert reject["line"] == 21 and reject["message_id"] == "BAD" and reject["field"] == next(iter(bad))
    assert json.loads(result.stdout)["counts"]["judged"] == 40
    assert "1 record(s) rejected" in result.stderr.strip().splitlines()[-1]


def test_numbers_past_64_bits_and_invalid_utf8_are_rejects_at_their_line(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_bytes(json.dumps(GOOD).encode() + b"\n"
                    + json.dumps({**GOOD, "message_id": "M2"}).encode()[:-1] + b', "buyer_opted_out": %d}\n' % 2**70
                    + json.dumps({**GOOD, "message_id": "M3"}).encode().replace(b"Hello", b"He\xffllo") + b"\n")
    result = run("audit", log, "--engine", "stream")
    assert result.exit_code == 1
    assert "log.jsonl line 2" in result.stderr and "log.jsonl line 3" in result.stderr


def test_csv_oversized_cells_and_invalid_utf8_are_rejects(tmp_path):
    log = tmp_path / "log.csv"
    log.write_bytes((CSV_HEADER + csv_row("M1") + csv_row("M2", "x" * (MAX_RECORD_BYTES + 10))).encode()
                    + csv_row("M3").encode().replace(b"Hello", b"H\xffi") + csv_row("M4").encode())
    result = run("audit", log)
    assert result.exit_code == 1
    err = result.stderr
    assert "log.csv line 3" in err and "larger than" in err
    assert "log.csv line 4: field 'body': not valid UTF-8" in err
    assert "2 record(s) rejected" in err


@pytest.mark.parametrize("text, message", [
    (csv_row("M1") + csv_row("M2"), "no message_id column"),
    (CSV_HEADER.replace(",", ";") + csv_row("M1").replace(",", ";"), "comma-separated"),
    ("message_id,order_id,buyer_id,sent_at,body,category,body\n" + csv_row("M1").strip() + ",again\n",
     "column 'body' appears more than once"),
], ids=["no-header", "semicolons", "repeated-column"])
def test_ambiguous_csv_files_are_refused_by_name_in_check_and_audit(tmp_path, text, message):
    log = tmp_path / "log.csv"
    log.write_text(text)
    for command in ("check", "audit"):
        result = run(command, log)
        assert result.exit_code == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_an_unterminated_quote_is_a_reject_at_its_line(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text(CSV_HEADER + csv_row("M1") + 'M2,O1,B1,2021-03-28T10:00:00-07:00,"Hello,shipment_confirmation\n'
                   + csv_row("M3"))
    result = run("audit", log)
    assert result.exit_code == 1
    assert "log.csv line 3: unterminated quoted cell" in result.stderr


@pytest.mark.parametrize("name, data, judged", [
    ("pretty.json", json.dumps(GOOD, indent=2).encode(), 1),
    ("cr.jsonl", b"\r".join(json.dumps({**GOOD, "message_id": f"M{i}"}).encode() for i in range(3)) + b"\r", None),
    ("array.json", json.dumps([GOOD, {**GOOD, "message_id": "M2"}], indent=1).encode(), None),
])
def test_check_and_audit_read_every_format_alike(tmp_path, name, data, judged):
    log = tmp_path / name
    log.write_bytes(data)
    checked = run("check", log, "--format", "json")
    audited = run("audit", log, "--format", "json")
    if judged is None:  # refused by both, with the same one-line error
        assert checked.exit_code == audited.exit_code == 2
        assert checked.stderr == audited.stderr and len(checked.stderr.strip().splitlines()) == 1
    else:
        assert len(checked.stdout.splitlines()) == judged
        assert json.loads(audited.stdout)["counts"]["judged"] == judged


def test_broken_parquet_files_are_one_input_error(tmp_path):
    for data in (b"", b"PAR1\x00\x00", b"PAR1" + b"\x00" * 100 + b"PAR1"):
        log = tmp_path / "log.parquet"
        log.write_bytes(data)
        for command in ("check", "audit"):
            result = run(command, log)
            assert result.exit_code == 2 and result.stderr.startswith("input error: ")



def test_a_parquet_file_with_a_repeated_column_is_refused_in_check_and_audit(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = [*GOOD, "body"]
    table = pa.Table.from_arrays([pa.array([GOOD.get(n, "Other")]) for n in names[:-1]] + [pa.array(["Evil"])],
                                 names=names)
    pq.write_table(table, tmp_path / "log.parquet")
    for command in ("check", "audit"):
        result = run(command, tmp_path / "log.parquet")
        assert result.exit_code == 2, (command, result.stderr)
        assert "column 'body' appears more than once" in result.stderr


def test_a_closed_standard_output_is_an_output_error(tmp_path):
    """Started with `>&-`, Python's sys.stdout is None: printing was an internal error."""
    log = jsonl(tmp_path / "log.jsonl", [GOOD])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "engine.cli", "check", str(log)], cwd=tmp_path, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
                          preexec_fn=lambda: os.close(1))
    assert (done.returncode, done.stderr.decode()) == (2, "error: standard output is closed\n")
    done = subprocess.run([sys.executable, "-m", "engine.cli", "audit", str(log), "-q", "-o", "r.txt"],
                          cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
                          preexec_fn=lambda: os.close(1))
    assert done.returncode == 1 and (tmp_path / "r.txt").is_file(), done.stderr.decode()


def test_a_pipe_given_as_a_log_is_named_as_such_not_as_missing(tmp_path):
    """`audit <(cat log)` names a FIFO: it exists, and "no such file" sent users looking for it."""
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    for command in ("check", "audit"):
        result = run(command, fifo)
        assert result.exit_code == 2
        assert result.stderr == f"input error: {fifo}: not a regular file (a pipe or a device); give it on standard input as -\n"
    assert run("check", tmp_path / "none.jsonl").stderr.endswith("none.jsonl: no such file\n")

# ---- outputs are safe -------------------------------------------------------------------


def test_an_output_naming_an_input_or_another_output_is_refused_before_any_work(tmp_path):
    log = jsonl(tmp_path / "log.jsonl", [GOOD])
    before = log.read_bytes()
    for option in ("--rejects", "--results", "-o"):
        result = run("audit", log, option, log)
        assert result.exit_code == 2 and "is an input" in result.stderr
        assert log.read_bytes() == before
    result = run("audit", log, "--results", tmp_path / "a.jsonl", "--rejects", tmp_path / "a.jsonl")
    assert result.exit_code == 2 and "name the same file" in result.stderr
    result = run("diff", log, "--variant", "on=2017-04-01", "--changes", log)
    assert result.exit_code == 2 and log.read_bytes() == before
    result = run("audit", log, "--results", tmp_path / "out.xlsx")
    assert result.exit_code == 2 and "unknown suffix '.xlsx'" in result.stderr
    result = run("audit", log, "-o", tmp_path / "missing" / "report.txt")
    assert result.exit_code == 2 and "does not exist" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_an_interrupted_write_leaves_the_earlier_file_and_no_partial_one(tmp_path, suffix):
    target = tmp_path / f"results{suffix}"
    target.write_bytes(b"earlier")
    line = (json.dumps({"message_id": "M1", "evaluated_at": "2021-03-28T10:00:00-07:00", "outcome": "allowed",
                        "policies": [], "findings": []}) + "\n").encode()

    def lines():
        yield line
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_results(lines(), target)
    assert target.read_bytes() == b"earlier"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_csv_cells_that_would_run_as_formulas_are_neutralised(tmp_path):
    target = tmp_path / "results.csv"
    for mid in ("=HYPERLINK(\"http://x\")", "+cmd|' /C calc'!A0", "-1+1", "@SUM(A1)", "\tx", "\rx", "plain"):
        line = json.dumps({"message_id": mid, "evaluated_at": "2021-03-28T10:00:00-07:00", "outcome": "allowed",
                           "policies": [], "findings": []}) + "\n"
        write_results([line.encode()], target)
        cell = target.read_text().splitlines()[1]
        assert cell.startswith("'" if mid != "plain" else "plain") or cell.startswith("\"'"), cell
    import io
    buf = io.StringIO()
    SafeCsvWriter(buf).writerow(["=1+1", 3, "ok"])
    assert buf.getvalue() == "'=1+1,3,ok\r\n"


def test_the_audit_summary_csv_neutralises_formula_cells(tmp_path, monkeypatch):
    """The summary names its inputs (and the overlays' policies and rules): a file name can be a formula."""
    import csv as csv_module

    monkeypatch.chdir(tmp_path)
    jsonl(tmp_path / "=HYPERLINK(1).jsonl", [GOOD])
    result = run("audit", "=HYPERLINK(1).jsonl", "--format", "csv")
    assert result.exit_code == 1, result.stderr
    rows = list(csv_module.reader(result.stdout.splitlines()))
    (row,) = [r for r in rows if r[0] == "provenance_input"]
    assert row[2] == "'=HYPERLINK(1).jsonl"
    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for cell in r)


def test_check_csv_neutralises_formula_cells(tmp_path):
    log = jsonl(tmp_path / "log.jsonl", [{**GOOD, "message_id": "=HYPERLINK(\"http://x\")"},
                                         {**GOOD, "message_id": "@SUM(A1)"}])
    result = run("check", log, "--format", "csv")
    assert result.exit_code == 1, result.stderr
    import csv as csv_module

    rows = list(csv_module.reader(result.stdout.splitlines()))
    assert [r[0] for r in rows[1:]] == ["'=HYPERLINK(\"http://x\")", "'@SUM(A1)"]


def test_atomic_output_removes_its_temporary_file_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "x.txt", "w") as fh:
            fh.write("partial")
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []



@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_outputs_get_the_umask_when_new_and_keep_the_mode_of_the_file_they_replace(tmp_path, umask_027):
    """The temporary file behind each output is made 0600; the output must not stay so."""
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps(GOOD) + "\nnot json\n")
    outs = {"-o": tmp_path / "report.html", "--results": tmp_path / "results.jsonl",
            "--rejects": tmp_path / "rejects.jsonl"}
    args = [a for option, path in outs.items() for a in (option, path)]
    result = run("audit", log, *args)
    assert result.exit_code == 1, result.stderr
    for option, path in outs.items():
        assert path.stat().st_mode & 0o777 == 0o640, option
    for mode, path in zip((0o604, 0o660, 0o444 | 0o200), outs.values()):
        path.chmod(mode)
    result = run("audit", log, *args)
    assert result.exit_code == 1, result.stderr
    assert [p.stat().st_mode & 0o777 for p in outs.values()] == [0o604, 0o660, 0o644]
    # Nothing but the outputs and the input: no temporary file left over.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["log.jsonl", *(p.name for p in outs.values())])


def test_an_output_through_a_symlink_or_into_a_pipe_keeps_the_link_and_the_pipe(tmp_path):
    """Renaming the temporary file over `-o /dev/stdout` (a symlink) or a device would replace the
    node itself with a regular file: /dev/stdout or /dev/null gone for every program."""
    log = jsonl(tmp_path / "log.jsonl", [GOOD])
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "report.txt"
    target.write_text("earlier")
    link = tmp_path / "report.txt"
    link.symlink_to(target)
    assert run("audit", log, "-o", link).exit_code == 1
    assert link.is_symlink() and "provenance" in target.read_text()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so the writer's open() returns
    try:
        result = run("audit", log, "-o", fifo)
        assert result.exit_code == 1, result.stderr
        assert b"provenance" in os.read(reader, 1 << 16)
    finally:
        os.close(reader)
    assert fifo.is_fifo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl", "pipe", "real", "report.txt"]


def test_an_output_naming_the_column_map_or_a_policy_file_is_refused(tmp_path):
    import shutil

    log = tmp_path / "log.csv"
    log.write_text(CSV_HEADER + csv_row("M1"))
    column_map = tmp_path / "map.yaml"
    column_map.write_text((ROOT / "samples" / "export-de.map.yaml").read_text())
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    sources = policies / "sources.yaml"
    before = column_map.read_bytes(), sources.read_bytes()
    result = run("audit", log, "--map", column_map, "-o", column_map)
    assert result.exit_code == 2 and "is an input" in result.stderr
    result = run("audit", log, "--policies", policies, "-o", sources)
    assert result.exit_code == 2 and "is an input" in result.stderr
    result = run("diff", log, "--variant", "on=2017-04-01", "--policies", policies, "-o", sources)
    assert result.exit_code == 2 and "is an input" in result.stderr
    assert (column_map.read_bytes(), sources.read_bytes()) == before

# ---- bounded work on hostile policies -------------------------------------------------------


def _overlay(tmp_path, body: str) -> Path:
    path = tmp_path / "overlay.yaml"
    path.write_text("title: t\nfamilies:\n  2020-contact-guidelines:\n    versions:\n      base:\n" + body)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda: "        parameters:\n          a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"          a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 10)),
     "aliases are expanded"),
    (lambda: "        parameters: {x: " + "[" * 5000 + "]" * 5000 + "}\n", "nest"),
    (lambda: "        parameters: {window_days: 1000000}\n", "less than or equal to 36500"),
], ids=["alias-bomb", "deep-nesting", "huge-window"])
def test_hostile_overlays_are_policy_errors(tmp_path, make, message):
    log = jsonl(tmp_path / "log.jsonl", [GOOD])
    result = run("check", log, "--overlay", _overlay(tmp_path, make()))
    assert result.exit_code == 2 and result.stderr.startswith("policy error: ") and message in result.stderr


def test_an_overlay_in_invalid_utf8_names_its_line(tmp_path):
    log = jsonl(tmp_path / "log.jsonl", [GOOD])
    path = tmp_path / "overlay.yaml"
    path.write_bytes(b"title: t\ndescription: caf\xe9\n")
    result = run("check", log, "--overlay", path)
    assert result.exit_code == 2 and "line 2: not valid UTF-8" in result.stderr


def test_a_catastrophic_overlay_pattern_is_stopped_and_judged_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(detectors, "PATTERN_TIME_LIMIT", 0.5)
    overlay = _overlay(tmp_path, "        detectors:\n          email_address: "
                                 "{kind: pattern, fields: [text], patterns: ['(a+)+$']}\n")
    log = jsonl(tmp_path / "log.jsonl", [{**GOOD, "body": "a" * 101 + "!"}])
    result = run("check", log, "--overlay", overlay, "--format", "json")
    assert result.exit_code == 1
    (verdict,) = [json.loads(line) for line in result.stdout.splitlines()]
    notes = [f["evidence"].get("email_address", "") for f in verdict["findings"] if "evidence" in f]
    assert any("time limit" in n for n in notes)


def test_a_process_that_matched_patterns_exits_cleanly_while_its_timer_is_pending(tmp_path):
    """The pattern timer outlives the last match; interpreter shutdown restores SIGALRM's default
    action (end the process), so a timer still pending then killed batch workers (exit -14)."""
    script = tmp_path / "late_exit.py"
    script.write_text(
        "import atexit, signal, time\n"
        # Registered first, so it runs last: after shutdown has begun, a pending SIGALRM kills.
        "atexit.register(lambda: (signal.signal(signal.SIGALRM, signal.SIG_DFL), time.sleep(1.0)))\n"
        "from engine.detectors import TextViews, _RegexSpec, run_detector\n"
        "from engine.model import Message\n"
        "from engine.policyfile import load_policies\n"
        "policies = load_policies()\n"
        "spec = next(spec for f in policies.families.values() for v in f.versions\n"
        "            for _, spec in v.detectors_used.values() if isinstance(spec, _RegexSpec))\n"
        f"message = Message(**{GOOD!r})\n"
        "run_detector(spec, message, TextViews(message), None)\n")
    env = {**os.environ, "MSGPOLICY_PATTERN_TIME_LIMIT": "0.3", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, (done.returncode, done.stderr.decode())


ADVERSARIAL = ["a", "1", "a.", "a@", "1-", " 1", "-", ".", "www.", "http://a", "+1", "a_", "%"]
# After the adversarial run: the literals the prefilter looks for, so that no pattern is skipped.
LITERALS_TAIL = " @ www. http:// amazon.com review feedback thank you"


def test_the_shipped_patterns_are_linear_on_1_mb_adversarial_texts(policies, monkeypatch):
    """Each shipped regex detector, on 1 MB texts built to make backtracking patterns rescan:
    a quadratic pattern needs hours there, so any hit of the (raised) time limit fails."""
    from engine.detectors import TextViews, _RegexSpec, run_detector
    from engine.model import Message

    monkeypatch.setattr(detectors, "PATTERN_TIME_LIMIT", 30.0)
    specs = {key: spec for f in policies.families.values() for v in f.versions
             for key, spec in v.detectors_used.values() if isinstance(spec, _RegexSpec)}
    assert specs
    for piece in ADVERSARIAL:
        body = piece * ((1_000_000 - len(LITERALS_TAIL)) // len(piece)) + LITERALS_TAIL
        message = Message(**{**GOOD, "body": body, "subject": body[:1000]})
        for key, spec in specs.items():
            value, note = run_detector(spec, message, TextViews(message), None)
            assert "time limit" not in note, (key, piece)


# ---- exit status users can gate on ------------------------------------------------------------


def test_fail_on_chooses_the_outcomes_that_fail(tmp_path):
    log = jsonl(tmp_path / "log.jsonl", [GOOD])  # an unsolicited shipment confirmation: a violation
    assert run("check", log).exit_code == 1
    assert run("check", log, "--fail-on", "violation").exit_code == 1
    blocked = jsonl(tmp_path / "blocked.jsonl", [{**GOOD, "sent_at": "2017-03-28T10:00:00-07:00",
                                                 "buyer_opted_out": True, "category": "review_request"}])
    assert run("check", blocked, "--format", "json").exit_code == 1
    assert run("check", blocked, "--fail-on", "violation").exit_code == 0
    assert run("audit", blocked, "--fail-on", "violation").exit_code == 0
    assert run("audit", blocked, "--fail-on", "blocked").exit_code == 1


def test_an_audit_whose_every_record_is_rejected_exits_2(tmp_path):
    log = jsonl(tmp_path / "log.jsonl", [{**GOOD, "sent_at": "0001-01-01T00:00:00+01:00"}])
    result = run("audit", log)
    assert result.exit_code == 2 and "all 1 record(s) rejected" in result.stderr.strip().splitlines()[-1]


# ---- signals ------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _audit_with_workers(tmp_path: Path, log: Path, engine: str, results: Path) -> tuple[subprocess.Popen, list[int]]:
    """`msgpolicy audit --jobs 2` in a subprocess (temporary files under tmp_path), once its two
    workers run: the process and the workers' pids."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "audit", str(log), "--engine", engine,
                             "--jobs", "2", "--results", str(results)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(_children(proc.pid)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    return proc, _children(proc.pid)


@pytest.mark.parametrize("engine, signum, status", [("stream", signal.SIGTERM, 143), ("stream", signal.SIGINT, 130),
                                                     ("batch", signal.SIGTERM, 143),
                                                     ("stream", signal.SIGKILL, -signal.SIGKILL)])
def test_a_signal_stops_the_audit_its_workers_and_leaves_earlier_results(tmp_path, engine, signum, status):
    records = [{**GOOD, "message_id": f"M{i}", "buyer_id": f"B{i % 97}", "body": f"Hello {i}"}
               for i in range(200_000)]
    log = jsonl(tmp_path / "log.jsonl", records)
    results = tmp_path / "results.jsonl"
    results.write_text("earlier\n")
    proc, workers = _audit_with_workers(tmp_path, log, engine, results)
    try:
        assert len(workers) >= 2, "the workers never started"
        time.sleep(0.5)
        proc.send_signal(signum)
        assert proc.wait(timeout=30) == status
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]
                   for w in workers)
    assert results.read_text() == "earlier\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl", "results.jsonl"]
    err = proc.stderr.read().decode()
    assert "Traceback" not in err
    if signum != signal.SIGKILL:
        assert err.strip().splitlines()[-1] == ("interrupted" if signum == signal.SIGINT else "terminated")


@pytest.mark.parametrize("n, message", [(70, "can match one message in"), (260, "facts")],
                         ids=["branches", "facts"])
def test_durable_rules_limits_are_policy_errors_at_load(tmp_path, n, message):
    """Past them durable_rules fails on the first message (its errors 302 and 303)."""
    detectors_yaml = "".join(f"          d{i}: {{kind: pattern, fields: [text], patterns: ['q{i}z']}}\n"
                             for i in range(n))
    # Facts in `all` (one branch), or in `any` (one branch each).
    join = "any" if n == 70 else "all"
    rule = ("        rules:\n          - {id: MANY, title: many, outcome: violation, reason: r, sources: [P15], "
            "confidence: H, when: {" + join + ": [" + ", ".join(f"{{fact: d{i}, eq: true}}" for i in range(n))
            + "]}}\n")
    overlay = _overlay(tmp_path, "        detectors:\n" + detectors_yaml + rule)
    log = jsonl(tmp_path / "log.jsonl", [GOOD])
    result = run("check", log, "--overlay", overlay)
    assert result.exit_code == 2 and result.stderr.startswith("policy error: ") and message in result.stderr


def test_a_killed_worker_fails_the_audit_cleanly(tmp_path):
    records = [{**GOOD, "message_id": f"M{i}", "buyer_id": f"B{i % 97}"} for i in range(200_000)]
    log = jsonl(tmp_path / "log.jsonl", records)
    proc, workers = _audit_with_workers(tmp_path, log, "stream", tmp_path / "results.jsonl")
    try:
        assert len(workers) >= 2, "the workers never started"
        os.kill(workers[0], signal.SIGKILL)
        assert proc.wait(timeout=30) == 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    err = proc.stderr.read().decode()
    assert err.startswith("audit error: worker") and "killed by signal 9" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"]


def test_diff_fail_on_counts_only_changes_that_reach_the_level(tmp_path):
    # Judged on 2017-03-30 (rollout) and 2017-04-01 (suspended): the blocked message becomes no_policy.
    log = jsonl(tmp_path / "log.jsonl", [{**GOOD, "sent_at": "2017-03-28T10:00:00-07:00", "buyer_opted_out": True,
                                          "category": "review_request"}])
    sides = ["--baseline", "on=2017-03-30", "--variant", "on=2017-04-01", "--jobs", "1"]
    assert run("diff", log, *sides).exit_code == 1
    assert run("diff", log, *sides, "--fail-on", "blocked").exit_code == 0  # nothing got worse
    assert run("diff", log, "--baseline", "on=2017-04-01", "--variant", "on=2017-03-30", "--jobs", "1",
               "--fail-on", "blocked").exit_code == 1


def test_a_parquet_value_python_cannot_hold_is_a_reject_at_its_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    times = pa.array([1_616_950_800_000_000, 300_000_000_000_000_000, 1_616_950_900_000_000],
                     pa.timestamp("us", tz="UTC"))  # the second is in year 11476
    log = tmp_path / "log.parquet"
    pq.write_table(pa.table({"message_id": ["M1", "M2", "M3"], "order_id": ["O1"] * 3, "buyer_id": ["B1"] * 3,
                             "sent_at": times, "category": ["shipment_confirmation"] * 3}), log)
    result = run("audit", log)
    assert result.exit_code == 1
    assert "log.parquet line 2: a value cannot be read" in result.stderr and "1 record(s) rejected" in result.stderr


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_batch_engine_stops_a_catastrophic_pattern_as_check_does(tmp_path, monkeypatch, jobs):
    """The batch engine's exact matching runs under the same time limit (its workers read it
    from the environment), and says what `check` says."""
    monkeypatch.setattr(detectors, "PATTERN_TIME_LIMIT", 0.5)
    monkeypatch.setenv("MSGPOLICY_PATTERN_TIME_LIMIT", "0.5")
    overlay = _overlay(tmp_path, "        detectors:\n          email_address: "
                                 "{kind: pattern, fields: [text], patterns: ['(a+)+$']}\n")
    records = [{**GOOD, "message_id": "slow", "body": "a" * 101 + "!"},
               {**GOOD, "message_id": "quick", "body": "Thank you for your order."}]
    log = jsonl(tmp_path / "log.jsonl", records)
    checked = run("check", log, "--overlay", overlay, "--format", "json")
    from engine.audit import AuditConfig, audit
    from engine.policyfile import load_policies

    audit(load_policies(overlays=[overlay]), AuditConfig(paths=[log], jobs=jobs, engine="batch",
                                                         results=tmp_path / "r.jsonl"))
    audited = [json.loads(line) for line in (tmp_path / "r.jsonl").read_bytes().splitlines()]
    expected = [json.loads(line) for line in checked.stdout.splitlines()]
    for a, c in zip(audited, expected):
        a.pop("evaluated_at"), c.pop("evaluated_at")
        a.pop("out_of_order", None), c.pop("out_of_order", None)
    assert audited == expected
    assert any("time limit" in f.get("evidence", {}).get("email_address", "") for f in audited[0]["findings"])


def test_a_released_detector_spec_leaves_the_spec_key_memo(policies):
    """The memo of detector keys holds its specs weakly: a dropped policy set's specs are freed."""
    import gc
    import weakref

    from engine import facts

    spec = next(spec for f in policies.families.values() for v in f.versions
                for _, spec in v.detectors_used.values()).model_copy(deep=True)
    key = facts.spec_key(spec)
    ref, ident = weakref.ref(spec), id(spec)
    assert facts._SPEC_KEYS[ident][1] == key
    del spec
    gc.collect()
    assert ref() is None and ident not in facts._SPEC_KEYS
