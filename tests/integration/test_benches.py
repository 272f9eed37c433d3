"""Every benchmark in bench/ still starts: its imports resolve and its arguments parse (`--help`).
The benchmarks themselves are too long for the suite; a moved module must not break them
silently."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.name != "harness.py")


def test_the_benchmarks_are_found() -> None:
    assert {p.stem for p in SCRIPTS} >= {"llm_router", "memory", "recall", "transactions"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_a_benchmark_starts(script: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
