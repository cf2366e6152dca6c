"""samples/2017-2025-sample.jsonl is judged as the brief's tables say (E1-E25, CONTRACT §4 for E6)."""
from pathlib import Path

from engine import load_policies
from engine.check import check_log

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = {
    "E1": "blocked", "E2": "allowed", "E3": "violation", "E4": "allowed", "E5": "allowed", "E6": "allowed",
    "E7": "allowed", "E8": "violation", "E9": "blocked", "E10": "blocked",
    "E11": "allowed", "E12": "violation", "E13": "violation", "E14": "violation", "E15": "violation",
    "E16": "violation", "E17": "violation", "E18": "violation", "E19": "violation", "E20": "violation",
    "E21": "allowed", "E22": "violation", "E23": "violation", "E24": "blocked", "E25": "blocked", "E25b": "allowed",
}


def test_sample_spanning_both_eras():
    verdicts, errors = check_log(ROOT / "samples" / "2017-2025-sample.jsonl", load_policies(ROOT / "policies"),
                                 evaluator="reference")
    assert not errors
    got = {v.message_id: v.outcome.value for v in verdicts}
    assert {k: got[k] for k in EXPECTED} == EXPECTED
