"""The micro-benchmark script runs and reports every case (figures are not judged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_micro_bench_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "micro.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "micro.py"), "--quick",
                           "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    cases = [r["case"] for r in json.loads(out.read_text())]
    assert any(c.startswith("chunk reader") for c in cases)
    assert any(c.startswith("fan-out") for c in cases)
    # every message fed to the chunk reader came out of it
    for r in json.loads(out.read_text()):
        if r["case"].startswith("chunk reader"):
            assert r["messages"] == 300
