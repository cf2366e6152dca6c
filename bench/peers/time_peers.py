"""Times the 2017 opt-out decision in each peer engine on realistic facts.

    python bench/peers/time_peers.py --facts 100000
    python bench/peers/time_peers.py --facts 100000 --from-log bench/out/log.jsonl
    python bench/peers/time_peers.py --facts 100000 --ours somemodule:decide

Facts come from the generator's distribution: by default a log of the 2017
opt-out era (2017-03-27 .. 2017-12-31) is simulated in memory; with
--from-log they are read from a generated JSONL file (its valid 2017 seller
messages). Each peer decides the whole list several times in one process;
the figure quoted is the median run, per decision. Every peer's outcomes are
checked against the plain-Python reference before its time is reported.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import platform
import re
import statistics
import sys
import time
from datetime import date, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import decide_2017  # noqa: E402

ROLLOUT = datetime.fromisoformat("2017-03-27T00:00:00+00:00")
YEAR_END = datetime.fromisoformat("2018-01-01T00:00:00+00:00")
_WHITESPACE = re.compile(r"\s+")


def _collapse(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def _unquote(text: str) -> str:
    """Drops the "> " prefix of quoted lines before comparing texts."""
    return "\n".join(line[1:].lstrip() if line.startswith(">") else line for line in text.splitlines())


def facts_from_records(records) -> list[dict]:
    """Flat decision facts for the seller messages among `records` (a log in
    time order). Opt-out state: the message's own flag, else the buyer's
    events so far, else not opted out (the two-state table has no unknown)."""
    opted_out: dict[str, bool] = {}
    buyer_texts: dict[str, tuple[str, str]] = {}
    facts = []
    for record in records:
        if record.get("type") in ("buyer_opt_out", "buyer_opt_in"):
            opted_out[record["buyer_id"]] = record["type"] == "buyer_opt_out"
            continue
        if record.get("initiated_by", "seller") == "buyer":
            buyer_texts[record["message_id"]] = (record["buyer_id"], _collapse(record.get("body", "")))
            continue
        subject = record.get("subject") or ""
        state = record.get("buyer_opted_out")
        question = buyer_texts.get(record.get("reply_to") or "")
        facts.append({
            "opted_out": state if isinstance(state, bool) else opted_out.get(record["buyer_id"], False),
            "category": record["category"],
            "channel": record.get("channel") or "email",
            "subject_air": subject.strip().casefold() == "additional information required",
            "subject_important": "[important]" in subject.casefold(),  # honoured until 2025-04-25
            "is_quoted_reply": question is not None and question[0] == record["buyer_id"]
            and bool(question[1]) and question[1] in _collapse(_unquote(record.get("body") or "")),
        })
    return facts


def _valid_2017(record) -> bool:
    if not isinstance(record, dict):
        return False
    stamp = record.get("at") if "type" in record else record.get("sent_at")
    try:
        instant = datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return False
    if instant.tzinfo is None or not ROLLOUT <= instant < YEAR_END:
        return False
    return "type" in record or record.get("category") in decide_2017.CATEGORIES


def facts_from_log(path: Path) -> list[dict]:
    import orjson

    def records():
        with open(path, "rb") as handle:
            for line in handle:
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if _valid_2017(record):
                    yield record

    return facts_from_records(records())


def facts_from_generator(count: int, seed: int) -> list[dict]:
    import generate

    low = generate._epoch(date(2017, 3, 27))
    high = generate._epoch(date(2018, 1, 1))
    lines = int(count * 1.15) + 200  # events and buyer messages are not facts
    simulator = generate.LogSimulator(lines, seed, low, high, low - generate.WARM_UP)
    return facts_from_records(record for record, _ in simulator.records())


def _resize(facts: list[dict], count: int) -> list[dict]:
    if not facts:
        raise SystemExit("no 2017 seller messages found to build facts from")
    return [facts[i % len(facts)] for i in range(count)]


def time_peer(decide, facts: list[dict], runs: int) -> list[float]:
    decide(facts[:100])  # builds the engine's handles outside the timed runs
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        decide(facts)
        seconds.append(time.perf_counter() - started)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--facts", type=int, default=100_000, help="decisions per run")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per peer (median reported)")
    parser.add_argument("--seed", type=int, default=2017)
    parser.add_argument("--from-log", type=Path, help="take facts from a generated JSONL log")
    parser.add_argument("--cross-product", action="store_true",
                        help="cycle through every input combination instead (half opted out: "
                             "a harder mix than real logs)")
    parser.add_argument("--ours", action="append", default=[], metavar="MODULE:FUNCTION",
                        help="also time a callable with the same signature (list of facts -> outcomes)")
    parser.add_argument("--only", action="append", default=[], help="time only these peers")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    if args.cross_product:
        facts, source = decide_2017.all_facts(), "cross product of the inputs"
    elif args.from_log:
        facts, source = facts_from_log(args.from_log), f"from {args.from_log}"
    else:
        facts, source = facts_from_generator(args.facts, args.seed), f"generated 2017 log, seed {args.seed}"
    facts = _resize(facts, args.facts)
    expected = decide_2017.decide_reference(facts)
    mix = {o: expected.count(o) for o in decide_2017.OUTCOMES}
    print(f"{len(facts)} facts ({source}); "
          f"reference outcomes {mix}; opted out {sum(f['opted_out'] for f in facts)}")
    print(f"Python {platform.python_version()} on {platform.machine()}, {args.runs} runs each, median quoted")

    peers = dict(decide_2017.PEERS)
    for spec in args.ours:
        module_name, _, function = spec.partition(":")
        peers[f"ours ({spec})"] = (module_name, getattr(importlib.import_module(module_name), function))
    if args.only:
        peers = {name: peer for name, peer in peers.items() if name in args.only}

    rows = []
    width = max(len(name) for name in peers) + 1
    print(f"{'peer':<{width}} {'version':<10} {'µs/decision':>12} {'decisions/s':>14} {'min..max µs':>18}")
    for name, (module, decide) in peers.items():
        if module and importlib.util.find_spec(module) is None:
            print(f"{name:<{width}} not installed")
            rows.append({"peer": name, "installed": False})
            continue
        got = decide(facts[:5000])
        if got != expected[:5000]:
            print(f"{name:<{width}} DISAGREES with the reference; not timed")
            rows.append({"peer": name, "installed": True, "agrees": False})
            continue
        seconds = time_peer(decide, facts, args.runs)
        median = statistics.median(seconds)
        version = _version(module)
        per = median / len(facts) * 1e6
        spread = f"{min(seconds) / len(facts) * 1e6:.2f}..{max(seconds) / len(facts) * 1e6:.2f}"
        print(f"{name:<{width}} {version:<10} {per:>12.2f} {len(facts) / median:>14,.0f} {spread:>18}")
        rows.append({"peer": name, "installed": True, "agrees": True, "version": version,
                     "us_per_decision": per, "decisions_per_second": len(facts) / median,
                     "run_seconds": seconds})
    if args.json:
        args.json.write_text(json.dumps({"facts": len(facts), "source": source, "runs": args.runs,
                                         "outcomes": mix, "peers": rows}, indent=2))
    return 0


def _version(module: str) -> str:
    from importlib import metadata

    distribution = {"cedarpy": "cedarpy", "zen": "zen-engine", "rule_engine": "rule-engine"}.get(module)
    if not distribution:
        return platform.python_version() if not module else "-"
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
