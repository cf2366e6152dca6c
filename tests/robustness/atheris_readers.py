"""atheris target for the JSON Lines and CSV log readers (run by test_atheris_readers.py).

The first byte picks the format, the rest is the file. Invariants: nothing but LogError
escapes (a whole file refused); every line is a message, an event or a reject, in line
order; and read = messages + events + rejects (blank lines aside)."""
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports(include=["engine"]):
    from engine.io import InputError, LogError, log_items, read_records
    from engine.model import BuyerEvent, Message

DIR = tempfile.mkdtemp(prefix="msgpolicy-atheris-")
PATHS = {0: os.path.join(DIR, "log.jsonl"), 1: os.path.join(DIR, "log.csv")}


def one_input(data: bytes) -> None:
    if not data:
        return
    path = PATHS[data[0] & 1]
    with open(path, "wb") as fh:
        fh.write(data[1:])
    try:
        read = sum(obj is not None for _, obj, _ in log_items(path))
        messages = events = rejects = 0
        last = 0
        for line, item in read_records(path):
            assert line > last, f"line {line} after {last}"
            last = line
            if isinstance(item, Message):
                messages += 1
            elif isinstance(item, BuyerEvent):
                events += 1
            elif isinstance(item, InputError):
                rejects += 1
            else:
                raise AssertionError(f"line {line}: neither record nor reject: {item!r}")
    except LogError:
        return  # the file refused as a whole, with the project's own message
    assert read == messages + events + rejects, (read, messages, events, rejects)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
