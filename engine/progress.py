"""The audit's progress bar on standard error, and the records it counts towards.

Shown only when standard error is a terminal (a pipe or a log file gets nothing)
and not under --quiet; rich leaves colours out under NO_COLOR. The total is the
number of records, counted beside the audit in a thread so the bar starts at
once: non-blank lines of JSON Lines, rows of a CSV file (quoted line breaks
included) and of a Parquet file. The audit engine reports records read; once all
are read, the remaining time goes to writing the results, and the bar says so.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterable, Optional

_CHUNK = 1 << 24


def count_records(paths: Iterable[Path]) -> Optional[int]:
    """How many records the logs hold (None when a file cannot be counted)."""
    total = 0
    try:
        for path in map(Path, paths):
            suffix = path.suffix.lower()
            if suffix == ".parquet":
                import pyarrow.parquet as pq

                total += pq.ParquetFile(path).metadata.num_rows
            elif suffix == ".csv":
                total += _csv_rows(path)
            else:
                total += _nonblank_lines(path)
    except Exception:  # noqa: BLE001 - a count is a courtesy: the audit itself names a bad file
        return None
    return total


def _nonblank_lines(path: Path) -> int:
    import numpy as np

    lines = 0
    last = b"\n"  # as if a line ended just before the file: a blank first line is blank
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            newline = np.frombuffer(last + chunk, dtype=np.uint8) == 10
            # lines ending in this chunk, less the empty ones (a line break right after another)
            lines += int(np.count_nonzero(newline[1:])) - int(np.count_nonzero(newline[1:] & newline[:-1]))
            last = chunk[-1:]
    if last != b"\n":
        lines += 1  # a last line without a line break
    return lines


def _csv_rows(path: Path) -> int:
    import pyarrow.csv as pacsv

    # One column parsed in C++, quoted line breaks allowed: the rows the reader will see.
    with open(path, "rb") as fh:
        header = fh.readline().decode("utf-8-sig").rstrip("\r\n")
    first = next(iter(__import__("csv").reader([header])), [""])[0]
    table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True),
                           convert_options=pacsv.ConvertOptions(include_columns=[first],
                                                                column_types={first: "string"}))
    return table.num_rows


def progress_wanted(stream, quiet: bool) -> bool:
    return not quiet and hasattr(stream, "isatty") and stream.isatty()


class AuditProgress:
    """A rich progress bar fed by the audit's on_progress(records read) callback."""

    def __init__(self, paths, console, results: Optional[Path] = None):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self._results = results
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                  TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=True)
        self._task = self._progress.add_task("auditing", total=None, rate="")
        self._start = time.monotonic()
        self._total: Optional[int] = None
        self._counter = threading.Thread(target=self._count, args=(list(paths),), daemon=True)

    def _count(self, paths) -> None:
        total = count_records(paths)
        if total is not None:
            self._total = total
            self._progress.update(self._task, total=max(total, 1))

    def __enter__(self) -> "AuditProgress":
        self._progress.__enter__()
        self._counter.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def __call__(self, done: int) -> None:
        rate = done / max(time.monotonic() - self._start, 1e-6)
        fields = {"rate": f"{rate:,.0f} records/s"}
        if self._total is not None and done >= self._total:
            # every record read: what is left is merging and writing the results, then the report
            fields["description"] = (f"writing results to {self._results}" if self._results is not None
                                     else "writing the report")
        self._progress.update(self._task, completed=done, **fields)


def written_line(report: Optional[Path], results: Optional[Path], written: int, rejects: Optional[Path],
                 rejected: int) -> Optional[str]:
    """The last line of an audit: what was written where (None when everything went to stdout)."""
    parts = []
    if report is not None:
        parts.append(f"report to {report}")
    if results is not None:
        parts.append(f"{written:,} per-message result(s) to {results}")
    if rejects is not None:
        parts.append(f"{rejected:,} reject(s) to {rejects}")
    return "wrote " + ", ".join(parts) if parts else None
