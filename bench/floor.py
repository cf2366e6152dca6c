"""What an audit cannot avoid: the cost per line of the stages every record goes through.

    python bench/floor.py LOG [--lines N]

Times, on one process and over the first N lines of LOG, cumulative stages:

1. read the line and parse its JSON (orjson);
2. validate it into the pydantic record (`engine.io.to_record`), as the design requires;
3. one pass over the message text: HTML to text, case folding and the RE2 literal
   set that gates every regex detector (`TextViews.literal_hits`);
4. language detection (lingua, models preloaded) for the records that lack
   `language` but give `buyer_language` while a version that reads it is in force.

No fact is derived, no rule evaluated, no history kept and nothing written, so
the figures are a lower bound for `msgpolicy audit`; `audit_bench.py` measures
the whole command. The report scales them to 1,000,000 lines on two cores
(perfect split, no routing cost): the best any audit built on these stages
could do on this machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.classifier import classifier_for  # noqa: E402
from engine.classifier.language import preload  # noqa: E402
from engine.detectors import TextViews  # noqa: E402
from engine.io import to_record  # noqa: E402
from engine.model import Message  # noqa: E402
from engine.policyfile import load_policies  # noqa: E402
from engine.timeline import in_force  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path)
    ap.add_argument("--lines", type=int, default=200_000)
    args = ap.parse_args()

    policies = load_policies()
    classifier = classifier_for(policies)
    settings = classifier.settings.language_detection
    preload(tuple(settings.languages), settings.accuracy)

    raws = []
    with open(args.log, "rb") as fh:
        for raw in fh:
            raws.append(raw)
            if len(raws) >= args.lines:
                break

    # Warm the detectors once so the literal set is compiled with every detector's literals.
    from engine.audit import AuditJudge

    judge = AuditJudge(policies)
    for raw in raws[:2000]:
        try:
            record = to_record(orjson.loads(raw), "warm", 0)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, Message) and record.marketplace in policies.marketplaces:
            versions = in_force(policies, record.sent_at, record.marketplace)
            if versions:
                judge.facts(record, versions)

    # Streamed like the audit (nothing kept), each stage timed around its own call.
    names = ("1 parse JSON", "2 validate (pydantic)", "3 text pass (HTML, fold, RE2 set)", "4 language detection")
    spent = [0.0, 0.0, 0.0, 0.0]
    counts = {"messages": 0, "needing_language_detection": 0}
    clock = time.perf_counter
    reads_language: dict = {}
    for n, raw in enumerate(raws):
        t0 = clock()
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            spent[0] += clock() - t0
            continue
        t1 = clock()
        record = to_record(obj, "floor", n)
        t2 = clock()
        spent[0] += t1 - t0
        spent[1] += t2 - t1
        if not isinstance(record, Message) or record.marketplace not in policies.marketplaces:
            continue
        counts["messages"] += 1
        t2 = clock()
        TextViews(record).literal_hits()
        spent[2] += clock() - t2
        if record.language is None and record.buyer_language is not None:
            day = (record.sent_at.date(), record.marketplace)
            if day not in reads_language:
                versions = in_force(policies, record.sent_at, record.marketplace)
                reads_language[day] = any(v.reads_language for v in versions)
            if reads_language[day]:
                counts["needing_language_detection"] += 1
                t3 = clock()
                classifier.detect_language(record)
                spent[3] += clock() - t3
    stages = dict(zip(names, spent))

    n = len(raws)
    per_line = {name: seconds / n * 1e6 for name, seconds in stages.items()}
    total = sum(per_line.values())
    report = {
        "log": str(args.log), "lines": n, **counts,
        "us_per_line": {k: round(v, 2) for k, v in per_line.items()},
        "us_per_line_total": round(total, 2),
        # µs per line × 1e6 lines = seconds on one core; two cores halve it.
        "floor_s_for_1M_lines_on_2_cores": round(total / 2, 2),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
