"""Coverage-guided fuzzing of the JSON Lines and CSV readers (atheris, in a child process,
bounded by runs and seconds); the invariants are in atheris_readers.py."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris is not installed (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(__file__).with_name("atheris_readers.py")
SEEDS = {
    "jsonl": b"\x00" + b'{"message_id":"M1","order_id":"O1","buyer_id":"B1","sent_at":"2021-03-28T10:00:00Z",'
             b'"category":"shipment_confirmation","body":"Hi"}\n'
             b'{"type":"buyer_opt_out","buyer_id":"B1","at":"2021-03-28T10:00:00Z"}\n\nnot json\n',
    "csv": b"\x01message_id,order_id,buyer_id,sent_at,category,body,attachments\n"
           b'M1,O1,B1,2021-03-28T10:00:00Z,shipment_confirmation,Hi,"[{""name"": ""a""}]"\n'
           b"M2,O1,B1,yesterday,review_request,=1+1,\n",
}


def test_readers_under_atheris(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, data in SEEDS.items():
        (corpus / name).write_bytes(data)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # The instrumented engine with its libraries holds over 1 GiB once warm (seen at 1,263 MB in the whole suite): not a leak.
    done = subprocess.run([sys.executable, str(TARGET), "-runs=20000", "-max_total_time=15", "-seed=1",
                           "-rss_limit_mb=4096", f"-artifact_prefix={tmp_path}/", str(corpus)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    tail = (done.stdout + done.stderr)[-3000:]
    assert done.returncode == 0, tail
    runs = re.search(r"Done (\d+) runs in (\d+) second", done.stderr)
    assert runs and int(runs.group(1)) > 0, tail
    print(f"atheris: {runs.group(1)} runs in {runs.group(2)} s")
