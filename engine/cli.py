"""The `msgpolicy` command: a thin layer over the engine API.

Exit status: 0 every judged message is allowed/no_policy; 1 at least one is
blocked, indeterminate or a violation; 2 usage, input or policy error.
"""
from __future__ import annotations

import datetime as dt
import errno
import functools
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

import click
import orjson

from . import __version__
from .check import check_log
from .conditions import describe
from .io import atomic_output, check_outputs
from .model import EARLIEST_INSTANT, LATEST_INSTANT, Outcome, Verdict, check_instant, message_json_schema, verdict_json
from .policyfile import MsgpolicyError, PolicyError, PolicySet, load_policies
from .timeline import in_force_on, timeline_rows

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
EXIT_SIGINT, EXIT_SIGTERM = 130, 143
# The longest history horizon: a century, far past any log and well inside date arithmetic.
MAX_HISTORY_DAYS = 36500


def _parse_when(value: Optional[str]):
    """--on: a date (judged at local noon in each message's marketplace) or an RFC 3339 instant."""
    if value is None:
        return None
    from .whatif import SideError, parse_when

    try:
        when = parse_when(value)
    except SideError as exc:
        raise click.BadParameter(str(exc), param_hint="'--on'") from None
    # A day is read at local noon in any marketplace zone; a margin of two days keeps that inside.
    if isinstance(when, dt.datetime):
        try:
            check_instant(when)
        except ValueError as exc:
            raise click.BadParameter(f"{value!r}: {exc}", param_hint="'--on'") from None
    elif not (EARLIEST_INSTANT.date() + dt.timedelta(days=2) <= when <= LATEST_INSTANT.date() - dt.timedelta(days=2)):
        raise click.BadParameter(f"{value!r}: date out of range (from {EARLIEST_INSTANT.year} up to "
                                 f"{LATEST_INSTANT.year})", param_hint="'--on'")
    return when


# ---- one error path ------------------------------------------------------------------

# Failures the user can act on, beside MsgpolicyError: a file system refusal, a broken encoding.
_EXPECTED = (OSError, UnicodeError)


class _Terminated(SystemExit):
    """SIGTERM as an exception, so cleanup (temporary files, workers) runs on the way out."""


def _on_sigterm(signum, frame):
    raise _Terminated(EXIT_SIGTERM)


def _expected_message(exc: BaseException) -> str:
    if isinstance(exc, MsgpolicyError):
        return f"{exc.kind}: {exc}"
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"error: {where}{exc.strerror}"
    return f"error: {exc}"


def _flush_stdout() -> None:
    """Flush now, inside the handler: a full disk or a closed pipe on stdout is an error to
    report, not an exception ignored at interpreter exit."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
        raise SystemExit(EXIT_ERROR) from None
    except OSError as exc:
        _quiet_stdout()
        click.echo(f"error: standard output: {exc.strerror or exc}", err=True)
        raise SystemExit(EXIT_ERROR) from None


def _quiet_stdout() -> None:
    # Python flushes stdout again at exit; point it at /dev/null so that cannot fail twice.
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


class _ClosedStdout:
    """Standard output when the command was started with it closed (`>&-`): writing to it is an
    output error, as for a full disk, where Python's None would be an internal error."""

    def write(self, data):
        raise OSError(errno.EBADF, "standard output is closed")

    def flush(self):
        pass

    def fileno(self):
        raise ValueError("standard output is closed")


class _Main(click.Group):
    """The one error path of every command: a failure is one line on standard error and exit
    status 2 (never 1, which means findings); the traceback only with --debug."""

    def invoke(self, ctx):
        debug = bool(ctx.params.get("debug")) or os.environ.get("MSGPOLICY_DEBUG") == "1"
        if sys.stdout is None:
            sys.stdout = _ClosedStdout()
        try:
            result = super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except _Terminated:
            click.echo("terminated", err=True)
            raise
        except SystemExit:
            _flush_stdout()
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            raise SystemExit(EXIT_SIGINT) from None
        except BrokenPipeError:
            _quiet_stdout()
            raise SystemExit(EXIT_ERROR) from None
        except (MsgpolicyError, *_EXPECTED) as exc:
            click.echo(_expected_message(exc), err=True)
            if debug:
                import traceback
                click.echo(getattr(exc, "detail", None) or traceback.format_exc(), err=True, nl=False)
            raise SystemExit(EXIT_ERROR) from None
        except Exception as exc:  # noqa: BLE001 - the last resort: never a bare traceback
            click.echo(f"internal error: {type(exc).__name__}: {exc}"
                       + ("" if debug else " (run with --debug for the traceback)"), err=True)
            if debug:
                import traceback
                click.echo(traceback.format_exc(), err=True, nl=False)
            raise SystemExit(EXIT_ERROR) from None
        _flush_stdout()
        return result


def common_options(func=None, *, formats=("text", "json")):
    """Every command takes --policies, --format, --alt and --overlay; `formats` are its choices."""
    if func is None:
        return functools.partial(common_options, formats=formats)

    @click.option("--policies", "policies_dir", type=click.Path(path_type=Path, file_okay=False),
                  help="Policy directory (default: the policies shipped with the package).")
    @click.option("--format", "fmt", type=click.Choice(list(formats)), default="text", show_default=True,
                  help="Human-readable text or machine-readable JSON"
                       + (" (json and jsonl: one object per line)" if "jsonl" in formats else "")
                       + (", or CSV" if "csv" in formats else "") + ".")
    @click.option("--alt", "alternatives", multiple=True, metavar="NAME",
                  help="Select a recorded alternative reading (repeatable); see `msgpolicy timeline`.")
    @click.option("--overlay", "overlays", multiple=True, metavar="PATH",
                  type=click.Path(exists=True, dir_okay=False),
                  help="Apply a draft overlay file on top of the policies (repeatable; see `msgpolicy diff`).")
    @functools.wraps(func)
    def wrapper(*args, policies_dir, alternatives, overlays, **kwargs):
        try:
            policies = load_policies(policies_dir, alternatives=alternatives, overlays=overlays)
        except PolicyError as exc:
            click.echo(f"policy error: {exc}", err=True)
            sys.exit(EXIT_ERROR)
        return func(*args, policies=policies, **kwargs)
    return wrapper


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="msgpolicy")
@click.option("--debug", is_flag=True, help="Print the traceback of a failure (also MSGPOLICY_DEBUG=1).")
def main(debug):
    """Judge seller-to-buyer messages by the marketplace rules in force when they were sent.

    \b
    Start with:
      msgpolicy check samples/2017-sample.jsonl
      msgpolicy audit LOG.jsonl --results results.parquet --format html -o report.html
      msgpolicy COMMAND --help      (examples and exit status of each command)

    Exit status: 0 every message allowed or no_policy; 1 some blocked, indeterminate or
    violation; 2 usage, input or policy error.
    """
    signal.signal(signal.SIGTERM, _on_sigterm)


# --fail-on: which outcomes make the exit status 1 (the default: any outcome that is not clean).
FAIL_ON = {
    "any": frozenset(o for o in Outcome if not o.is_clean),
    "violation": frozenset({Outcome.violation}),
    "indeterminate": frozenset({Outcome.violation, Outcome.indeterminate}),
    "blocked": frozenset({Outcome.violation, Outcome.indeterminate, Outcome.blocked}),
}
fail_on_option = click.option(
    "--fail-on", "fail_on", type=click.Choice(list(FAIL_ON)), default="any", show_default=True,
    help="Exit 1 when a message gets this outcome or a more severe one (violation > indeterminate > "
         "blocked); any = every outcome but allowed and no_policy.")


def _fails(outcomes, fail_on: str) -> bool:
    """Whether any of `outcomes` (Outcome or its value) is at or above the --fail-on level."""
    failing = FAIL_ON[fail_on]
    return any(Outcome(o) in failing for o in outcomes)


def _why_not_a_file(path) -> str:
    """Why an input is not read: missing, or a pipe or device (e.g. `<(cat log)`), which the readers
    cannot read twice (they check the head of a file before reading it)."""
    if not Path(path).exists():
        return "no such file"
    if Path(path).is_dir():
        return "is a directory"
    return "not a regular file (a pipe or a device); give it on standard input as -"


def _config_files(policies_dir: Optional[Path], map_file: Optional[Path]) -> list[Path]:
    """The policy files and the column map a command reads: inputs too, that `-o` must not overwrite."""
    from .policyfile import default_policies_dir

    root = Path(policies_dir) if policies_dir is not None else default_policies_dir()
    files = [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []
    return files + ([Path(map_file)] if map_file is not None else [])


def _write_report(output: Optional[Path], report: str, to_stderr: bool = False) -> None:
    """The report to its file, else to standard output (-o - or no -o), or to standard error
    when a data output (--results -, ...) has standard output."""
    if output is None or str(output) == "-":  # -o - is standard output, as without -o
        click.echo(report, nl=False, err=to_stderr)
        return
    with atomic_output(output, "w", encoding="utf-8") as fh:
        fh.write(report)


# ---- "-": standard input and standard output -----------------------------------------------

STDOUT = "standard output"


def _is_dash(path) -> bool:
    return path is not None and str(path) == "-"


class _Scratch:
    """A private temporary directory (mode 0700, made on first use) holding standard input
    spooled to a file and the data outputs bound for standard output; removed on the way out,
    also on an error, Ctrl-C or SIGTERM. Each engine then reads and writes plain files, so
    `--results -` gives the very bytes `--results FILE` would."""

    def __init__(self):
        self._dir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._dir is not None:
            self._dir.cleanup()

    def path(self, name: str) -> Path:
        if self._dir is None:
            import tempfile

            self._dir = tempfile.TemporaryDirectory(prefix="msgpolicy-")
        return Path(self._dir.name) / name

    def inputs(self, logs) -> tuple[list, dict]:
        """LOGS with `-` replaced by a file holding standard input, and {that file: "-"} to name
        it in rejects and provenance as the user did."""
        if sum(_is_dash(log) for log in logs) > 1:
            raise click.UsageError("- (standard input) can be given only once")
        paths, names = [], {}
        for log in logs:
            if _is_dash(log):
                import shutil

                spooled = self.path("stdin.jsonl")  # standard input is JSON Lines, as for check
                with open(spooled, "wb") as fh:
                    shutil.copyfileobj(sys.stdin.buffer, fh, 1 << 20)
                names[str(spooled)] = "-"
                log = spooled
            paths.append(Path(log))
        return paths, names


def _one_stdout(report: Optional[Path], data: dict) -> bool:
    """Refuse two outputs on standard output; True when a data output (--results -, ...) has it,
    and the report (without -o FILE) then goes to standard error."""
    dashes = [option for option, path in data.items() if _is_dash(path)]
    if len(dashes) > 1 or (dashes and _is_dash(report)):
        both = dashes + (["-o"] if _is_dash(report) else [])
        raise click.UsageError(f"{' and '.join(both)} {'both' if len(both) == 2 else 'all'} name standard "
                               "output (-); give a file to all but one")
    return bool(dashes)


def _copy_to_stdout(path: Path) -> None:
    import shutil

    sys.stdout.flush()
    with open(path, "rb") as fh:
        shutil.copyfileobj(fh, sys.stdout.buffer, 1 << 20)
    sys.stdout.buffer.flush()


def _renamed_jsonl(src: Path, names: dict, dest) -> None:
    """Copy JSON Lines rejects, naming a spooled standard input `-` in their source field."""
    with open(src, "rb") as fh:
        for line in fh:
            if names:
                item = orjson.loads(line)
                item["source"] = names.get(item.get("source"), item.get("source"))
                line = orjson.dumps(item) + b"\n"
            dest.write(line)


# ---- check -----------------------------------------------------------------------


def unchecked_rules(policies: PolicySet) -> frozenset:
    """(policy, version, rule) of the rules the policy files mark `unchecked`: reminders with
    the same words on most messages, so the text names them on each message and gives their
    reasons once, at the end."""
    return frozenset((v.family, v.id, r.id) for family in policies.families.values() for v in family.versions
                     for r in v.rules if r.rule.unchecked)


def _unchecked(f, unchecked: frozenset) -> bool:
    return (f.policy, f.version, f.rule) in unchecked


def _classifier_finding(f) -> bool:
    from .evaluate import CLASSIFIER_POLICY

    return f.policy == CLASSIFIER_POLICY


def verdict_text(v: Verdict, unchecked: frozenset = frozenset()) -> str:
    versions = ", ".join(f"{p.policy}/{p.version}" for p in v.policies) or "no policy in force"
    lines = [f"{v.message_id}  {v.outcome.value.upper()}  at {v.evaluated_at.isoformat()}  [{versions}]"]
    notes: dict[str, list[str]] = {}
    for f in v.findings:
        if _unchecked(f, unchecked):
            notes.setdefault(f"{f.policy}/{f.version}", []).append(f.rule)
            continue
        lines.append(f"  {f.outcome.value:<13} {f.policy}/{f.version} {f.rule}: {f.reason}")
        for fact, span in f.evidence.items():
            # a span that quotes its own phrases (the classifier's evidence) is not quoted again
            lines.append(f"  {'':<13}   {fact}: " + (span if "“" in span else f"“{span}”"))
        if not _classifier_finding(f):  # the classifier's files are listed once, at the end
            lines.append(f"  {'':<13}   sources: {', '.join(f.sources)}")
    if notes:
        lines.append(f"  {'not checked':<13} " + "; ".join(f"{where} {', '.join(rules)}" for where, rules in notes.items())
                     + " (see the end)")
    return "\n".join(lines)


def sources_cited_text(policies: PolicySet, verdicts) -> str:
    """What the text of the verdicts above left to be said once: the reasons of the notes they
    name, the classifier's files, and what the source keys cited stand for."""
    from .sources import label

    out = []
    notes = {}
    unchecked = unchecked_rules(policies)
    for v in verdicts:
        for f in v.findings:
            if _unchecked(f, unchecked):
                notes.setdefault((f.policy, f.version, f.rule), f)
    if notes:
        out.append("\nnot checked by msgpolicy (allowed notes, named on the messages above):\n")
        out.extend(f"  {f.policy}/{f.version} {f.rule}: {f.reason} (sources: {', '.join(f.sources)})\n"
                   for f in notes.values())
    classifier = {}
    for v in verdicts:
        for f in v.findings:
            if _classifier_finding(f):
                classifier.setdefault(f.rule, f.sources)
    if classifier:
        files = list(dict.fromkeys(k for keys in classifier.values() for k in keys))
        out.append(f"\nclassifier files ({', '.join(classifier)} cite them all):\n"
                   + "".join(f"  {k}\n" for k in files))
    keys = dict.fromkeys(k for v in verdicts for f in v.findings for k in f.sources if k in policies.sources)
    if keys:
        out.append("\nsources cited (`msgpolicy sources KEY` for URLs):\n" + "".join(
            f"  {label(policies, k)}\n" for k in keys))
    return "".join(out)


def verdicts_csv(verdicts) -> str:
    """The columns of the audit's CSV results (policies and findings as JSON, and the flat
    `rules`), without the audit's out_of_order."""
    import io

    from .io import SafeCsvWriter
    from .results import CSV_COLUMNS, rules_cell

    buffer = io.StringIO()
    writer = SafeCsvWriter(buffer)
    writer.writerow([c for c in CSV_COLUMNS if c != "out_of_order"])
    for verdict in verdicts:
        line = verdict_json(verdict)
        writer.writerow([line["message_id"], line["evaluated_at"], line["outcome"],
                         orjson.dumps(line["policies"]).decode(), orjson.dumps(line["findings"]).decode(),
                         rules_cell(line["findings"])])
    return buffer.getvalue()


def _load_map(path: Optional[Path]):
    if path is None:
        return None
    from .mapping import MapError, load_map

    try:
        return load_map(path)
    except MapError as exc:
        click.echo(f"map error: {exc}", err=True)
        sys.exit(EXIT_ERROR)


map_option = click.option(
    "--map", "map_file", type=click.Path(path_type=Path, dir_okay=False, exists=True), metavar="MAP.yaml",
    help="Column map for a tool export: renames columns, sets constant fields, names the zone of naive timestamps.")


@main.command(short_help="Judge each message of a file, as sent or on another date.")
@click.argument("file", type=click.Path(allow_dash=True))
@click.option("--on", "on", metavar="DATE|TIMESTAMP",
              help="Judge as if sent at this instant; a date alone means local noon in each message's marketplace.")
@click.option("--evaluator", type=click.Choice(["durable", "reference"]), default="durable", show_default=True,
              help="durable_rules, or the plain-Python reference interpreter (for cross-checking).")
@map_option
@fail_on_option
@common_options(formats=("text", "json", "jsonl", "csv"))
def check(file, on, evaluator, map_file, fail_on, fmt, policies: PolicySet):
    """Judge each message in FILE (a JSON object, or a JSON Lines / CSV / Parquet log; - reads stdin).

    \b
    Examples:
      msgpolicy check samples/2017-sample.jsonl
      msgpolicy check log.jsonl --on 2017-04-01 --format json
      msgpolicy check export.csv --map export.map.yaml
      msgpolicy check - < message.json

    Exit status: 0 every message allowed or no_policy; 1 some blocked, indeterminate or
    violation; 2 usage, input or policy error (nothing is judged).
    """
    at = _parse_when(on)
    mapping = _load_map(map_file)
    if file != "-" and not Path(file).is_file():
        click.echo(f"input error: {file}: {_why_not_a_file(file)}", err=True)
        sys.exit(EXIT_ERROR)
    try:
        verdicts, errors = check_log(file, policies, at=at, evaluator=evaluator, mapping=mapping)
    except PolicyError as exc:  # the classifier's files are read on first need
        click.echo(f"policy error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    if errors:
        for error in errors:
            click.echo(f"input error: {error}", err=True)
        click.echo(f"{len(errors)} bad record(s); nothing was judged", err=True)
        sys.exit(EXIT_ERROR)
    out = sys.stdout
    if fmt == "csv":
        out.write(verdicts_csv(verdicts))
    unchecked = unchecked_rules(policies)
    for verdict in verdicts if fmt != "csv" else ():
        if fmt in ("json", "jsonl"):
            out.write(orjson.dumps(verdict_json(verdict)).decode() + "\n")
        else:
            out.write(verdict_text(verdict, unchecked) + "\n")
    if fmt == "text":
        counts = Counter(v.outcome for v in verdicts)
        summary = ", ".join(f"{counts[o]} {o.value}" for o in Outcome if counts[o])
        out.write(f"\n{len(verdicts)} message(s) judged: {summary or 'none'}\n")
        out.write(sources_cited_text(policies, verdicts))
    sys.exit(EXIT_FINDINGS if _fails((v.outcome for v in verdicts), fail_on) else EXIT_CLEAN)


# ---- classify ---------------------------------------------------------------------------


@main.command(short_help="Show the inferred category and language of raw records.")
@click.argument("file", type=click.Path(allow_dash=True))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "jsonl", "csv"]), default="text",
              show_default=True, help="Human-readable text, JSON Lines (json and jsonl alike), or CSV.")
@click.option("--policies", "policies_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Policy directory (default: the policies shipped with the package).")
@map_option
def classify(file, fmt, policies_dir, map_file):
    """The category and language of each message in FILE, inferred where the record gives none.

    \b
    Examples:
      msgpolicy classify export.csv --map export.map.yaml
      msgpolicy classify raw.jsonl --format csv > categories.csv

    Exit status: 0 classified; 2 usage, input or policy error (nothing is classified).
    """
    from .classify import classify_log, rows_csv, row_json, row_text

    mapping = _load_map(map_file)
    if file != "-" and not Path(file).is_file():
        click.echo(f"input error: {file}: {_why_not_a_file(file)}", err=True)
        sys.exit(EXIT_ERROR)
    try:
        policies = load_policies(policies_dir)
        rows, errors = classify_log(file, policies, mapping)
    except PolicyError as exc:
        click.echo(f"policy error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    if errors:
        for error in errors:
            click.echo(f"input error: {error}", err=True)
        click.echo(f"{len(errors)} bad record(s); nothing was classified", err=True)
        sys.exit(EXIT_ERROR)
    if fmt == "csv":
        sys.stdout.write(rows_csv(rows))
    else:
        if fmt == "text" and rows:  # the columns are not self-evident: which confidence is 0.51?
            sys.stdout.write("message_id  category  confidence (of the category)  language  evidence\n")
        for row in rows:
            sys.stdout.write((orjson.dumps(row_json(row)).decode() if fmt in ("json", "jsonl") else row_text(row)) + "\n")
    sys.exit(EXIT_CLEAN)


# ---- timeline, rules, schema ---------------------------------------------------------


@main.command(short_help="List the policy versions, their intervals and alternatives.")
@common_options
def timeline(fmt, policies: PolicySet):
    """The policy versions, their half-open intervals [from, to) and the recorded alternatives.

    \b
    Examples:
      msgpolicy timeline
      msgpolicy timeline --alt no-suspension-2017-03-31 --format json

    Exit status: 0; 2 usage or policy error.
    """
    rows = timeline_rows(policies)
    alternatives = [
        {"name": a.name, "policy": f.id, "title": a.title, "confidence": a.confidence, "sources": a.sources}
        for f in policies.families.values() for a in f.file.alternatives
    ]
    if fmt == "json":
        click.echo(orjson.dumps({"versions": rows, "alternatives": alternatives,
                                 "selected_alternatives": list(policies.alternatives)},
                                option=orjson.OPT_INDENT_2).decode())
        return
    click.echo("Dates are local midnight in each message's marketplace; intervals are [from, to).")
    click.echo(CONFIDENCE_LEGEND)
    for family in policies.families.values():
        click.echo(f"\n{family.id}: {family.file.title}")
        echo_table(("interval", "version", "marketplaces", "conf", "title"),
                   [(f"[{r['effective_from']}, {r['effective_to'] or '…'})", r["version"],
                     ", ".join(r["marketplaces"]).replace("*", "all"), r["confidence"], r["title"])
                    for r in rows if r["policy"] == family.id], wrap="title")
    if alternatives:
        click.echo("\nRecorded alternatives (select with --alt NAME):")
        echo_table(("alternative", "policy", "conf", "title"),
                   [(a["name"], a["policy"], a["confidence"], a["title"]) for a in alternatives], wrap="title")
    if policies.alternatives:
        click.echo(f"\nSelected: {', '.join(policies.alternatives)}")


@main.command(short_help="List the rules in force on a date, with their sources.")
@click.option("--on", "on", metavar="DATE|TIMESTAMP",
              help="Date, or an instant read on the marketplace's calendar (default: today).")
@click.option("--marketplace", default="US", show_default=True, help="Marketplace calendar to read the date in.")
@common_options
def rules(on, marketplace, fmt, policies: PolicySet):
    """The rules in force on a date in a marketplace, their conditions in words, and their sources.

    \b
    Examples:
      msgpolicy rules --on 2017-04-01
      msgpolicy rules --on 2021-01-01T08:00:00+01:00 --marketplace DE --format json

    Exit status: 0; 2 usage or policy error.
    """
    when = _parse_when(on) or dt.date.today()
    if marketplace not in policies.marketplaces:
        raise click.BadParameter(f"unknown marketplace {marketplace!r} (known: {', '.join(sorted(policies.marketplaces))})",
                                 param_hint="'--marketplace'")
    day = when if isinstance(when, dt.date) and not isinstance(when, dt.datetime) else None
    if day is None:
        from .timeline import local_date
        day = local_date(policies, when, marketplace)
    versions = in_force_on(policies, day, marketplace)
    data = []
    for v in versions:
        data.append({
            "policy": v.family, "version": v.id, "title": v.version.title,
            "effective_from": v.effective_from.isoformat(),
            "effective_to": v.effective_to.isoformat() if v.effective_to else None,
            "rules": [{
                "rule": r.id, "title": r.rule.title, "outcome": r.rule.outcome.value,
                "condition": describe(r.condition), "reason": r.rule.reason,
                "confidence": r.rule.confidence, "sources": r.rule.sources,
            } for r in v.enabled_rules],
        })
    if fmt == "json":
        click.echo(orjson.dumps({"date": day.isoformat(), "marketplace": marketplace, "versions": data},
                                option=orjson.OPT_INDENT_2).decode())
        return
    if not data:
        click.echo(f"No modelled policy is in force on {day} in {marketplace}.")
        return
    click.echo(CONFIDENCE_LEGEND + "\n")  # first, like timeline's: the tables' conf column uses the letters
    for v in data:
        to = v["effective_to"] or "…"
        click.echo(f"{v['policy']}/{v['version']}: {v['title']}  [{v['effective_from']}, {to})")
        echo_table(("rule", "outcome", "conf", "title, condition and sources"),
                   [(r["rule"], r["outcome"], r["confidence"],
                     f"{r['title']}\nwhen {r['condition']}\nsources: {', '.join(r['sources'])}") for r in v["rules"]],
                   wrap="title, condition and sources")
        click.echo("")
    click.echo("Source keys: `msgpolicy sources KEY` gives each one's title, publisher, date and URL.")


@main.command(short_help="Print the JSON Schema of the message record (or of a result line).")
@click.option("--result", "of_result", is_flag=True,
              help="The schema of a verdict line instead: `check --format json`, `audit --results *.jsonl`.")
def schema(of_result):
    """The JSON Schema of the message record, or with --result of a verdict line, generated from
    the engine's models.

    \b
    Examples:
      msgpolicy schema > message.schema.json
      msgpolicy schema --result > result.schema.json

    Exit status: 0.
    """
    if of_result:
        from .results import ResultLine

        document = ResultLine.model_json_schema(mode="serialization")
    else:
        document = message_json_schema()
    click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


def echo_table(headers, rows, wrap: str) -> None:
    """Rows as a rich table whose `wrap` column folds long text within the terminal's width (100
    columns when stdout is not a terminal), printed without rich's trailing padding."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 100, highlight=False)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header in headers:
        table.add_column(header, no_wrap=header != wrap, overflow="fold" if header == wrap else "ellipsis")
    for row in rows:
        table.add_row(*row)
    with console.capture() as captured:
        console.print(table, markup=False)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


# The meaning of the letters, as docs/concepts.md gives it ("Confidence: H, M, L").
CONFIDENCE_LEGEND = ("conf: how well its sources support a version, rule or alternative:\n"
                     "  H several consistent sources (or an article and an Amazon page), M one or two secondary\n"
                     "  sources, L its only source is vague or contested.")


@main.command(short_help="Show what the source keys that findings cite stand for.")
@click.argument("keys", nargs=-1, metavar="[ID]...")
@common_options
def sources(keys, fmt, policies: PolicySet):
    """Each source a finding can cite (P22, 000_9b4961320dbaa2d2.txt, ...): its title, publisher,
    date, URL or file, and the versions and rules that cite it. With IDs, only those.

    \b
    Examples:
      msgpolicy sources
      msgpolicy sources P22 000_9b4961320dbaa2d2.txt
      msgpolicy sources --format json

    Exit status: 0; 2 an unknown ID, a usage or policy error.
    """
    from .sources import source_rows

    try:
        rows = source_rows(policies, keys)
    except KeyError as exc:
        raise click.BadParameter(f"unknown source {exc.args[0]} (see `msgpolicy sources`)", param_hint="ID") from None
    if fmt == "json":
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    for row in rows:
        title = row["title"].removeprefix(f"{row['key']}: ")  # titles may repeat their key
        click.echo(f"{row['key']}  {title}")
        click.echo(f"    publisher: {row['publisher'] or 'unknown'} · "
                   + (f"dated {row['date']}" if row["date"] else "date unknown"))
        click.echo(f"    url: {row['url']}" if row["url"] else f"    file: {row['file']} (an article kept as a file)")
        if row["note"]:
            click.echo(f"    note: {row['note']}")
        for where, rule_ids in row["cited_by"].items():
            click.echo(f"    cited by {where}" + (f": {', '.join(rule_ids)}" if rule_ids else ""))


@main.command(short_help="Print a shell completion script (bash, zsh or fish).")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell):
    """Print the completion script for SHELL; commands, options and choices then complete on TAB.

    \b
    Examples:
      eval "$(msgpolicy completion bash)"                        # in ~/.bashrc
      eval "$(msgpolicy completion zsh)"                         # in ~/.zshrc
      msgpolicy completion fish > ~/.config/fish/completions/msgpolicy.fish

    Exit status: 0; 2 an unknown shell.
    """
    from click.shell_completion import get_completion_class

    # click's own completion: the script calls back `msgpolicy` with _MSGPOLICY_COMPLETE set.
    script = get_completion_class(shell)(main, {}, "msgpolicy", "_MSGPOLICY_COMPLETE").source()
    click.echo(script)


# ---- audit ---------------------------------------------------------------------------


@main.command(short_help="Audit whole logs: summary report, per-message results, rejects.")
@click.argument("logs", nargs=-1, required=True, type=click.Path(path_type=Path, allow_dash=True))
@click.option("--on", "on", metavar="DATE|TIMESTAMP",
              help="Judge every message as if sent at this instant (what-if); default: as sent.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv", "html"]), default="text",
              show_default=True, help="Format of the summary report.")
@click.option("-o", "--output", "output", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
              help="Write the summary report here (default, or -: standard output).")
@click.option("--results", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
              help="Per-message results, fields as `check --format json`; .jsonl, .csv or .parquet "
                   "(-: JSON Lines on standard output, the report then on standard error).")
@click.option("--rejects", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
              help="Rejected records as JSON Lines (source, line, message_id, field, reason; -: standard "
                   "output, the report then on standard error); default: reported on standard error.")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Worker processes (records are partitioned by buyer; output does not depend on it).")
@click.option("--history-days", type=click.IntRange(1, MAX_HISTORY_DAYS), default=400, show_default=True,
              help="Forget per-buyer/per-order history not touched for this many days of log time.")
@click.option("--policies", "policies_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Policy directory (default: the policies shipped with the package).")
@click.option("--alt", "alternatives", multiple=True, metavar="NAME",
              help="Select a recorded alternative reading (repeatable); see `msgpolicy timeline`.")
@click.option("--sensitivity", is_flag=True,
              help="Also audit under each recorded alternative and flag the messages whose verdict "
                   "depends on a disputed point, with both verdicts (adds a section to the report).")
@click.option("--engine", "engine_name", type=click.Choice(["auto", "stream", "batch"]), default="auto",
              show_default=True,
              help="batch: the log as columns, its buyers split over --jobs processes (several times faster; "
                   "memory grows with the log); stream: records one by one over --jobs workers (memory bounded "
                   "by the active history); auto: batch for JSON Lines logs from 8 MiB up to what the "
                   "available memory holds, stream otherwise. The same results either way.")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress bar and no closing line on standard error (errors are still reported).")
@map_option
@fail_on_option
def audit(logs, on, fmt, output, results, rejects, jobs, history_days, policies_dir, alternatives, sensitivity,
          engine_name, map_file, quiet, fail_on):
    """Judge whole logs (JSON Lines, CSV, Parquet; - reads JSON Lines from standard input) as a
    stream; bad records are set aside, never fatal.

    History follows file order (a real export is sorted by sent_at); a message sent before a
    record already seen for its buyer is judged with the history so far and flagged out_of_order.
    A progress bar goes to standard error when it is a terminal (not with --quiet).

    \b
    Examples:
      msgpolicy audit samples/2017-2025-sample.jsonl
      msgpolicy audit log.jsonl --results results.parquet --format html -o report.html
      msgpolicy audit export.csv --map export.map.yaml --rejects rejects.jsonl
      zcat log.jsonl.gz | msgpolicy audit - --results - | jq -c 'select(.outcome == "violation")'

    With --results - (or --rejects -) standard output carries only those JSON Lines; the
    report goes to -o FILE, or else to standard error.

    Exit status: 0 all clean, 1 findings (see --fail-on), 2 usage/input error, every record
    rejected, or read != judged + rejected + events.
    """
    from .audit import AuditConfig, audit as run_audit
    from .report import render
    from .results import RESULT_SUFFIXES

    try:
        policies = load_policies(policies_dir, alternatives=alternatives)
    except PolicyError as exc:
        click.echo(f"policy error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    at = _parse_when(on)
    report_to_stderr = _one_stdout(output, {"--results": results, "--rejects": rejects})
    for log in logs:
        if not _is_dash(log) and not log.is_file():
            click.echo(f"input error: {log}: {_why_not_a_file(log)}", err=True)
            sys.exit(EXIT_ERROR)
    check_outputs([*logs, *_config_files(policies_dir, map_file)],
                  {"-o": output, "--results": results, "--rejects": rejects},
                  {"--results": RESULT_SUFFIXES, "--rejects": (".jsonl", ".json", ".ndjson")})
    with _Scratch() as scratch:
        paths, names = scratch.inputs(logs)
        # The engines write plain files: "-" outputs, and rejects whose source is standard input
        # (renamed "-" on the way out), go through the scratch directory.
        results_file = scratch.path("results.jsonl") if _is_dash(results) else results
        rejects_file = scratch.path("rejects.jsonl") if rejects is not None and (names or _is_dash(rejects)) \
            else rejects
        cfg = AuditConfig(paths=paths, at=at, jobs=jobs, history_days=history_days, results=results_file,
                          rejects=rejects_file, mapping=_load_map(map_file), engine=engine_name)
        # The bar goes to standard error whenever that is a terminal, even with stdout piped.
        from .progress import AuditProgress, progress_wanted

        interactive = progress_wanted(sys.stderr, quiet)
        results_label = STDOUT if _is_dash(results) else results
        try:
            if interactive:
                from rich.console import Console

                with AuditProgress(paths, Console(stderr=True), results_label) as progress:
                    result = run_audit(policies, cfg, progress)
            else:
                result = run_audit(policies, cfg)
        except RuntimeError as exc:
            # Not a finding: exit 2 so a script never mistakes a failed audit for status 1.
            click.echo(f"audit error: {exc}", err=True)
            sys.exit(EXIT_ERROR)
        if names:
            result.provenance["inputs"] = {names.get(k, k): h for k, h in result.provenance["inputs"].items()}
            for item in result.rejects:
                item["source"] = names.get(item["source"], item["source"])
        if rejects_file is not None and rejects_file != rejects:
            if _is_dash(rejects):
                _renamed_jsonl(rejects_file, names, sys.stdout.buffer)
            else:
                with atomic_output(rejects, "wb") as fh:
                    _renamed_jsonl(rejects_file, names, fh)
        if _is_dash(results):
            _copy_to_stdout(results_file)
        for item in result.rejects:
            click.echo("input error: " + _reject_text(item), err=True)
        report = render(fmt, result, policies)
        if sensitivity:
            report = _with_sensitivity(fmt, report, paths, policies_dir, alternatives, at, jobs, history_days,
                                       results_file, cfg.mapping)
    _write_report(output, report, to_stderr=report_to_stderr)
    s = result.summary
    if not s.balanced:
        click.echo(f"audit error: read {s.read} != judged {s.judged} + rejected {s.rejected} "
                   f"+ buyer events {s.events}", err=True)
        sys.exit(EXIT_ERROR)
    rejects_label = STDOUT if _is_dash(rejects) else rejects
    if s.rejected:
        where = f" (see {rejects_label})" if rejects else ""
        if s.judged == 0 and s.events == 0:
            click.echo(f"audit error: all {s.rejected} record(s) rejected{where}; nothing was judged", err=True)
            sys.exit(EXIT_ERROR)
        click.echo(f"{s.rejected} record(s) rejected{where}", err=True)
    if interactive:
        from .progress import written_line

        report_file = output if output is not None and str(output) != "-" else None
        line = written_line(report_file, results_label, s.judged, rejects_label, s.rejected)
        if line:
            click.echo(line, err=True)
    sys.exit(EXIT_FINDINGS if _fails((o for o, n in s.outcomes.items() if n), fail_on) else EXIT_CLEAN)


def _with_sensitivity(fmt, report, logs, policies_dir, alternatives, at, jobs, history_days, results,
                      mapping=None) -> str:
    from .report.diff import render_sensitivity
    from .whatif import sensitivity

    reuse = results if results is not None and results.suffix.lower() in (".jsonl", ".json", ".ndjson") else None
    try:
        sens = sensitivity(list(logs), policies_dir, on=at, jobs=jobs, history_days=history_days,
                           baseline_results=reuse, base_alternatives=alternatives, mapping=mapping)
    except (OSError, RuntimeError, PolicyError) as exc:
        click.echo(f"audit error: sensitivity: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    return render_sensitivity(fmt, sens, report)


def _reject_text(item: dict) -> str:
    where = item["source"] + (f" line {item['line']}" if item.get("line") is not None else "")
    if item.get("message_id"):
        where += f" (message_id {item['message_id']})"
    field = f": field '{item['field']}'" if item.get("field") else ""
    return f"{where}{field}: {item['reason']}"


# ---- diff (what-if) ------------------------------------------------------------------------

EXIT_SAME, EXIT_DIFFERENT = 0, 1


@main.command(short_help="Compare two readings on a log, or over every possible message.")
@click.argument("logs", nargs=-1, type=click.Path(path_type=Path, allow_dash=True))
@click.option("--baseline", "baseline", multiple=True, metavar="SPEC",
              help="The reference side (default: shipped policies, judged as sent). SPEC items, comma-"
                   "separated or in repeated options: on=DATE|TIMESTAMP, alt:NAME, overlay:PATH.")
@click.option("--variant", "variant", multiple=True, metavar="SPEC", required=True,
              help="The side compared with the baseline; same items as --baseline.")
@click.option("--exhaustive", is_flag=True,
              help="Compare over every possible message (the finite fact space) instead of a log.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv", "html"]), default="text",
              show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
              help="Write the report here (default, or -: standard output).")
@click.option("--changes", "changes_path", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
              help="Log mode: write every changed message as JSON Lines here (-: standard output, the "
                   "report then on standard error unless -o FILE).")
@click.option("--summary-only", is_flag=True, help="Log mode: leave the list of changed messages out of the report.")
@click.option("--max-regions", type=click.IntRange(1, None), default=3, show_default=True,
              help="Exhaustive mode: regions listed (each with a witness) per change.")
@click.option("--no-witnesses", is_flag=True, help="Exhaustive mode, text: do not print the witness records.")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Log mode: audit worker processes per side.")
@click.option("--history-days", type=click.IntRange(1, MAX_HISTORY_DAYS), default=400, show_default=True,
              help="Log mode: as for `msgpolicy audit`.")
@click.option("--policies", "policies_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Policy directory for both sides (default: the shipped policies).")
@map_option
@click.option("--fail-on", "fail_on", type=click.Choice(["change", *FAIL_ON]), default="change", show_default=True,
              help="Exit 1 on any difference (change), or only when the variant gives some message this "
                   "outcome or a more severe one that the baseline did not (see `check --fail-on`).")
def diff(logs, baseline, variant, exhaustive, fmt, output, changes_path, summary_only, max_regions, no_witnesses,
         jobs, history_days, policies_dir, map_file, fail_on):
    """What changes between a baseline and a variant: on LOGS (- reads JSON Lines from standard
    input), or --exhaustive over every possible message.

    \b
    Examples:
      msgpolicy diff log.jsonl --baseline on=2017-03-30 --variant on=2017-04-01
      msgpolicy diff log.jsonl --variant alt:guidelines-from-2020-11-06
      msgpolicy diff log.jsonl --variant overlay:draft.yaml,alt:window-anchor-order-placed
      msgpolicy diff --exhaustive --variant overlay:draft.yaml
      msgpolicy diff log.jsonl --variant on=2021-01-01 --changes - | jq -r .message_id

    Exit status: 0 no differences, 1 differences, 2 usage, input or policy error.
    """
    import time

    from .whatif import SideError, parse_side

    try:
        side_a = parse_side(baseline, "--baseline")
        side_b = parse_side(variant, "--variant")
    except SideError as exc:
        raise click.UsageError(str(exc)) from None
    if exhaustive and logs:
        raise click.UsageError("--exhaustive compares over every possible message: give no LOGS")
    if not exhaustive and not logs:
        raise click.UsageError("give one or more LOGS, or --exhaustive")
    if exhaustive and changes_path is not None:
        raise click.UsageError("--changes lists changed messages of LOGS: not with --exhaustive")
    report_to_stderr = _one_stdout(output, {"--changes": changes_path})
    for log in logs:
        if not _is_dash(log) and not log.is_file():
            click.echo(f"input error: {log}: {_why_not_a_file(log)}", err=True)
            sys.exit(EXIT_ERROR)
    check_outputs([*logs, *_config_files(policies_dir, map_file)], {"-o": output, "--changes": changes_path},
                  {"--changes": (".jsonl", ".json", ".ndjson")} if changes_path is not None else None)
    start = time.perf_counter()
    with _Scratch() as scratch:
        report, differs = _diff_run(scratch, logs, side_a, side_b, exhaustive, fmt, changes_path, summary_only,
                                    max_regions, no_witnesses, jobs, history_days, policies_dir, map_file, fail_on,
                                    start, _text_width(output))
    _write_report(output, report, to_stderr=report_to_stderr)
    sys.exit(EXIT_DIFFERENT if differs else EXIT_SAME)


def _diff_run(scratch, logs, side_a, side_b, exhaustive, fmt, changes_path, summary_only, max_regions,
              no_witnesses, jobs, history_days, policies_dir, map_file, fail_on, start, width):
    """The report and whether the sides differ (enough for --fail-on)."""
    import time

    from .report.diff import render_exhaustive, render_log_diff
    from .whatif import JoinError, diff_logs

    try:
        if exhaustive:
            from .exhaustive import exhaustive_diff
            result = exhaustive_diff(side_a, side_b, policies_dir, max_regions=max_regions)
            report = render_exhaustive(fmt, result, max_regions, witnesses=not no_witnesses,
                                       width=width)
            differs = result.differs if fail_on == "change" else _worsens(
                ((r.label["from"], r.label["to"]) for r in result.outcomes), fail_on)
            sp = result.space
            click.echo(f"exhaustive: {sp['vectors']:,} fact vectors, {sp['differing_contexts']} context(s) "
                       f"explored, {sp['leaves']:,} leaves, {sp['regions']:,} regions, "
                       f"{sp['unrealised']} unrealised witness(es), {time.perf_counter() - start:.1f} s", err=True)
        else:
            paths, names = scratch.inputs(logs)
            changes_file = scratch.path("changes.jsonl") if _is_dash(changes_path) else changes_path
            result = diff_logs(paths, side_a, side_b, policies_dir, jobs=jobs, history_days=history_days,
                               changes_path=changes_file, mapping=_load_map(map_file))
            if names:
                result.provenance["inputs"] = {names.get(k, k): h for k, h in result.provenance["inputs"].items()}
                for item in result.rejects:
                    item["source"] = names.get(item["source"], item["source"])
            if _is_dash(changes_path):
                _copy_to_stdout(changes_file)
            report = render_log_diff(fmt, result, include_changes=not summary_only)
            differs = result.summary.changed > 0 if fail_on == "change" else _worsens(
                (pair for pair, n in result.summary.changed_by_transition.items() if n), fail_on)
            for item in result.rejects:
                click.echo("input error: " + _reject_text(item), err=True)
            click.echo(f"diff: {result.summary.judged:,} messages judged under each side, "
                       f"{result.summary.changed:,} changed, {time.perf_counter() - start:.1f} s", err=True)
    except PolicyError as exc:
        click.echo(f"policy error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except (RuntimeError, JoinError) as exc:
        click.echo(f"diff error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    return report, differs


def _text_width(output) -> int:
    """Fold text reports at the terminal's width when they go to one, else at 100 columns."""
    from .report.diff import TEXT_WIDTH

    if (output is None or _is_dash(output)) and sys.stdout.isatty():
        import shutil

        return shutil.get_terminal_size((TEXT_WIDTH, 24)).columns
    return TEXT_WIDTH


def _worsens(transitions, fail_on: str) -> bool:
    """Whether some (baseline outcome, variant outcome) pair newly reaches the --fail-on level."""
    failing = FAIL_ON[fail_on]
    return any(Outcome(b) in failing and Outcome(a) not in failing for a, b in transitions)


# ---- test (policy tests for users) -------------------------------------------------------------


@main.command("test", short_help="Run policy tests: records with the outcome and rules they must get.")
@click.argument("cases", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "junit"]), default="text", show_default=True,
              help="Text, one JSON report, or JUnit XML for CI systems.")
@click.option("--run", "run_pattern", metavar="REGEX",
              help="Judge only the cases whose name this regular expression matches (searched, not anchored).")
@click.option("--coverage", "show_coverage", is_flag=True,
              help="Also name the rules no case exercises, per policy version.")
@click.option("--policies", "policies_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Policy directory (default: the shipped policies).")
@click.option("-v", "--verbose", is_flag=True, help="Text: also list the cases that pass.")
def test_cases(cases, fmt, run_pattern, show_coverage, policies_dir, verbose):
    """Run policy tests: each case is a record with the outcome and rules it must get.

    \b
    Examples:
      msgpolicy test cases.yaml -v
      msgpolicy test cases.yaml --run emoji
      msgpolicy test cases.yaml --coverage
      msgpolicy test cases/*.yaml --format junit > msgpolicy-tests.xml

    Exit status: 0 every case passes, 1 at least one fails, 2 the file or the policies are invalid
    (nothing is judged then). See "Write policy tests" in the documentation for the file format.
    """
    import re

    from .policytest import CasesError, coverage, junit_xml, run_file

    try:
        select = re.compile(run_pattern) if run_pattern is not None else None
    except re.error as exc:
        raise click.BadParameter(f"not a regular expression: {exc}", param_hint="--run") from None
    runs = []
    for path in cases:
        if _is_dash(path):  # a case's overlay paths are read relative to its file
            raise click.UsageError("test cases are read from files (their overlay paths are relative to "
                                   "the file): give a path, not -")
        if not path.is_file():
            click.echo(f"input error: {path}: {_why_not_a_file(path)}", err=True)
            sys.exit(EXIT_ERROR)
        try:
            runs.append((path, run_file(path, policies_dir, select)))
        except (CasesError, PolicyError) as exc:
            click.echo(f"input error: {exc}", err=True)
            sys.exit(EXIT_ERROR)
    failed = sum(not r.passed for _, run in runs for r in run.results)
    total = sum(len(run.results) for _, run in runs)
    deselected = sum(len(run.deselected) for _, run in runs)
    covered = coverage(run for _, run in runs) if show_coverage else None
    if fmt == "junit":
        click.echo(junit_xml(runs), nl=False)
    elif fmt == "json":
        report = {"passed": total - failed, "failed": failed, "deselected": deselected, "files": [
            {"file": str(p), "cases": [{"name": r.name, "passed": r.passed, "variant": r.side,
                                        "expected": r.expected, "got": r.got, "problems": r.problems}
                                       for r in run.results]} for p, run in runs]}
        if covered is not None:
            report["coverage"] = covered
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        for path, run in runs:
            for r in run.results:
                if r.passed and not verbose:
                    continue
                status = "PASS" if r.passed else "FAIL"
                click.echo(f"{status} {path}: {r.name}" + ("" if r.side == "shipped" else f"  [{r.side}]"))
                for problem in r.problems:
                    click.echo(f"     {problem}")
                if not r.passed:
                    click.echo(f"     got {r.got['outcome']} [{', '.join(r.got['rules']) or 'no findings'}]")
        click.echo(f"{total - failed}/{total} case(s) passed" + (f", {failed} failed" if failed else "")
                   + (f" ({deselected} not selected by --run)" if deselected else ""))
        if covered is not None:
            click.echo(f"rule coverage: {covered['exercised']}/{covered['rules']} rules exercised"
                       + ("; no case exercises:" if covered["not_exercised"] else ""))
            for version, rules in covered["not_exercised"].items():
                click.echo(f"  {version}: {', '.join(rules)}")
    sys.exit(EXIT_FINDINGS if failed else EXIT_CLEAN)


# ---- serve, replay (engine/serve) --------------------------------------------------------------


@main.group(invoke_without_command=True,
            short_help="Check messages before sending, over HTTP, with a history database.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --tokens.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--store", "store_url", metavar="URL",
              help="History database: a SQLite path (default: under the user data directory) or postgresql://…")
@click.option("--tokens", "tokens_file", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="File of salted token hashes (`msgpolicy serve token add`); without it: localhost only.")
@click.option("--policies", "policies_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Policy directory (default: the policies shipped with the package).")
@click.option("--alt", "alternatives", multiple=True, metavar="NAME",
              help="Select a recorded alternative reading for every request (repeatable).")
@click.pass_context
def serve(ctx, host, port, store_url, tokens_file, policies_dir, alternatives):
    """Check messages before they are sent, over HTTP, with the history kept in a database.

    \b
    Examples:
      msgpolicy serve --store history.sqlite3
      msgpolicy serve --host 0.0.0.0 --tokens tokens.txt --store postgresql://msgpolicy@db/msgpolicy
      msgpolicy serve token add shop-1 --tokens tokens.txt

    Exit status: 0 after a clean shutdown; 2 usage, policy, store or token file error.
    """
    if ctx.invoked_subcommand is not None:
        return
    from .serve import StoreError, run
    from .serve.tokens import TokenFileError

    try:
        run(host, port, store_url, tokens_file, policies_dir, alternatives)
    except PolicyError as exc:
        click.echo(f"policy error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except (StoreError, TokenFileError, OSError) as exc:
        click.echo(f"serve error: {exc}", err=True)
        sys.exit(EXIT_ERROR)


@serve.group("token")
def serve_token():
    """Bearer tokens for `msgpolicy serve --tokens FILE`."""


@serve_token.command("add")
@click.argument("name")
@click.option("--tokens", "tokens_file", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="The token file (created if missing); only a salted hash is written to it.")
def serve_token_add(name, tokens_file):
    """Create a token named NAME: its hash goes to the file, the token is printed once."""
    from .serve.tokens import TokenFileError, add_token

    try:
        click.echo(add_token(tokens_file, name))
    except (TokenFileError, OSError) as exc:
        click.echo(f"token error: {exc}", err=True)
        sys.exit(EXIT_ERROR)


@main.command(short_help="Judge logged decisions again; report those that would differ.")
@click.argument("file", required=False, type=click.Path(path_type=Path, dir_okay=False, exists=True, allow_dash=True))
@click.option("--store", "store_url", metavar="URL", help="Replay the decision log of this store instead of FILE.")
@click.option("--order-id", help="Only the decisions on this order.")
@click.option("--since", metavar="TIMESTAMP", help="Only the decisions made at or after this UTC instant.")
@click.option("--export", "export_path", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
              help="Write the selected decisions as JSON Lines here (-: standard output) instead of replaying them.")
@click.option("--policies", "policies_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Policy directory to judge with (default: the shipped policies).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def replay(file, store_url, order_id, since, export_path, policies_dir, fmt):
    """Judge logged decisions again (from FILE, exported JSON Lines, - for standard input, or --store)
    and report those that differ.

    \b
    Examples:
      msgpolicy replay --store history.sqlite3 --since 2026-01-01T00:00:00Z
      msgpolicy replay --store history.sqlite3 --export decisions.jsonl
      msgpolicy replay decisions.jsonl --policies ./draft-policies

    Exit status: 0 none differs, 1 some differ, 2 usage, input or policy error.
    """
    from .serve import StoreError, open_store
    from .serve.replay import decisions_from_file, decisions_from_store, export, replay as run_replay

    if (file is None) == (store_url is None):
        raise click.UsageError("give FILE or --store, not both")
    check_outputs([file] if file is not None else [], {"--export": export_path})
    with _Scratch() as scratch:
        names: dict = {}
        try:
            if file is not None:
                (path,), names = scratch.inputs([file])
                decisions = decisions_from_file(path)
            else:
                store = open_store(store_url)
                decisions = decisions_from_store(store, order_id, since)
            if export_path is not None:
                target = scratch.path("decisions.jsonl") if _is_dash(export_path) else export_path
                n = export(decisions, target)
                if _is_dash(export_path):
                    _copy_to_stdout(target)
                click.echo(f"{n} decision(s) written to {STDOUT if _is_dash(export_path) else export_path}",
                           err=True)
                sys.exit(EXIT_CLEAN)
            result = run_replay(load_policies(policies_dir), decisions)
        except PolicyError as exc:
            click.echo(f"policy error: {exc}", err=True)
            sys.exit(EXIT_ERROR)
        except (StoreError, ValueError, OSError) as exc:
            message = str(exc)
            for spooled, name in names.items():  # errors name standard input as the user did
                message = message.replace(spooled, name)
            click.echo(f"replay error: {message}", err=True)
            sys.exit(EXIT_ERROR)
    if fmt == "json":
        click.echo(orjson.dumps({"replayed": result.replayed, "changed": len(result.changed),
                                 "policy_content_changed": result.hash_changed,
                                 "differences": result.changed}).decode())
    else:
        for c in result.changed:
            then_rules = ",".join(sorted({f["rule"] for f in c["then"]["findings"]})) or "-"
            now_rules = ",".join(sorted({f["rule"] for f in c["now"]["findings"]})) or "-"
            click.echo(f"{c['message_id']}  request {c['request_id']}#{c['index']}  "
                       f"{c['then']['outcome']} [{then_rules}] -> {c['now']['outcome']} [{now_rules}]")
        click.echo(f"{result.replayed} decision(s) replayed, {len(result.changed)} would now differ, "
                   f"{result.hash_changed} made by a policy version whose content has changed")
    sys.exit(EXIT_FINDINGS if result.changed else EXIT_CLEAN)


if __name__ == "__main__":
    main()
