"""Every example runs at its tiny size and prints what it promises."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_plain_loop_example_runs_and_prints_a_table():
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "plain_loop.py"), "--size", "tiny", "--seeds", "2"],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    assert "| ProxyAnchor  " in out
    assert "ProxyAnchor + SkewedMean" in out
    assert "paired difference" in out
