"""A tiny run of ``scripts/soak.py`` (2,000 jobs, 200 drained, 1,000 purged), so the script does
not rot; the full size (10,000,000 / 1,000,000 / 5,000,000) and ``--small`` are run by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "soak.py"


def test_soak_runs_every_phase_and_reports_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--jobs", "2000", "--drain", "200", "--purge", "1000"]
        + ["--dir", str(tmp_path / "q"), "--json", str(out), "--idle-baseline", "2"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["fill"]["completed_inserted"] == 800
    assert figures["fill"]["pending_enqueued"] == 1200
    assert figures["drain"]["jobs"] == 200 and figures["drain"]["window"] == 20
    # every completed job goes: the 800 inserted, the 200 drained and the probes' claims
    probes = 2 * figures["probe_claims"]
    assert figures["purge"]["deleted"] == 1000 + probes
    assert figures["purge"]["heartbeats_idle"]["heartbeats"] >= 2  # the watch saw the workers beat
    for when in ("start", "end", "after_purge"):
        assert figures[f"claim_finish_{when}"]["full_ms"] > 0
    assert figures["disk_filled"]["bytes_per_job"] > 0
    assert not (tmp_path / "q").exists()  # removed without --keep
