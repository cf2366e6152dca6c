"""Issue 8: column maps for tool exports (engine/mapping.py) and `check --map`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.io import InputError, to_record
from engine.mapping import ColumnMap, MapError, apply_map, load_map

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "export-de.csv"
SAMPLE_MAP = ROOT / "samples" / "export-de.map.yaml"

RAW = {"Order ID": "111-0000001-0000001", "Msg": "M1", "Buyer": "B1", "Sent Date": "2021-07-01 09:30:00",
       "body": "Hello"}
MAP = ColumnMap(columns={"Order ID": "order_id", "Msg": "message_id", "Buyer": "buyer_id", "Sent Date": "sent_at"},
                constants={"marketplace": "DE"}, naive_timestamps="Europe/Berlin")


def test_apply_map_renames_sets_constants_and_reads_naive_time_in_zone():
    out = apply_map(RAW, MAP)
    assert out["order_id"] == "111-0000001-0000001" and out["message_id"] == "M1" and out["body"] == "Hello"
    assert out["marketplace"] == "DE"
    assert out["sent_at"] == "2021-07-01T09:30:00+02:00"  # Berlin summer time
    assert apply_map({**RAW, "Sent Date": "2021-01-01 09:30:00"}, MAP)["sent_at"] == "2021-01-01T09:30:00+01:00"
    assert RAW["Sent Date"] == "2021-07-01 09:30:00"  # pure: the row is not changed


def test_timestamps_with_an_offset_are_kept():
    assert apply_map({**RAW, "Sent Date": "2021-07-01T09:30:00-07:00"}, MAP)["sent_at"] == "2021-07-01T09:30:00-07:00"


def test_without_a_map_a_naive_timestamp_stays_an_input_error():
    data = apply_map(RAW, ColumnMap(columns=MAP.columns))
    record = to_record(data, "x.csv", 2)
    assert isinstance(record, InputError) and record.field == "sent_at" and "no UTC offset" in record.reason
    assert not isinstance(to_record(RAW, "x.csv", 2, MAP), InputError)


def test_timestamp_format():
    m = ColumnMap(columns=MAP.columns, naive_timestamps="Europe/Berlin", timestamp_format="%d.%m.%Y %H:%M")
    assert apply_map({**RAW, "Sent Date": "01.07.2021 09:30"}, m)["sent_at"] == "2021-07-01T09:30:00+02:00"


@pytest.mark.parametrize("text,field,message", [
    ("naive_timestamps: Mars/Olympus\n", "naive_timestamps", "IANA"),
    ("columns: {A: order_id, B: order_id}\n", "columns", "both map to"),
    ("colums: {A: order_id}\n", "colums", "Extra inputs"),
    ("columns: {A: marketplace}\nconstants: {marketplace: DE}\n", None, "also the target"),
])
def test_map_errors_name_file_and_field(tmp_path, text, field, message):
    path = tmp_path / "map.yaml"
    path.write_text(text)
    with pytest.raises(MapError) as info:
        load_map(path)
    assert info.value.file == str(path) and info.value.field == field and message in str(info.value)


def test_check_with_the_sample_map():
    runner = CliRunner()
    plain = runner.invoke(main, ["check", str(SAMPLE)])
    assert plain.exit_code == 2 and "no message_id column" in plain.stderr and "--map" in plain.stderr
    result = runner.invoke(main, ["check", str(SAMPLE), "--map", str(SAMPLE_MAP), "--format", "json"])
    assert result.exit_code in (0, 1), result.output
    verdicts = [json.loads(line) for line in result.stdout.splitlines()]
    assert [v["message_id"] for v in verdicts] == ["N-1", "N-2", "N-3", "N-4"]
    assert verdicts[0]["evaluated_at"] == "2021-06-01T09:30:00+02:00"
    assert all(any(f["rule"] == "INFER-CATEGORY" for f in v["findings"]) for v in verdicts)


def test_bad_map_is_exit_2(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text("naive_timestamps: Nowhere/Town\n")
    result = CliRunner().invoke(main, ["check", str(SAMPLE), "--map", str(path)])
    assert result.exit_code == 2 and "map error" in result.stderr and "naive_timestamps" in result.stderr
