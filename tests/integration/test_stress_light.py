"""A light run of ``scripts/stress.py``: a few hundred jobs while workers are SIGKILLed every second.

The script checks the ledger invariants I1-I3 itself and exits non-zero if one fails; the full
size (20,000 jobs, 8 workers x 4) is run by hand: ``python scripts/stress.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "stress.py"


def test_stress_light_with_worker_kills_keeps_invariants() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--jobs",
            "300",
            "--workers",
            "3",
            "--concurrency",
            "2",
            "--kill-every",
            "1",
            "--lease",
            "1",
            "--heartbeat",
            "0.2",
            "--seed",
            "20240601",
            "--timeout",
            "90",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=150,
    )
    described = f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, described
    assert "invariants I1-I3: OK" in proc.stdout, described
    assert '"completed": 300' in proc.stdout, described
    assert '"kills": 0' not in proc.stdout, f"no worker was killed: the run proved little\n{described}"
