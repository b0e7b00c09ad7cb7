"""The short fuzz run of `make test` (the long one is `make fuzz`): no crash in the protocol codec."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris is a dev dependency (pip install -e '.[dev]')")
HERE = Path(__file__).parent


@pytest.mark.timeout(180)
def test_short_coverage_guided_fuzz_run_finds_no_crash(tmp_path):
    work = tmp_path / "corpus"
    work.mkdir()
    r = subprocess.run([sys.executable, str(HERE / "fuzz_protocol.py"), str(work), str(HERE / "corpus"),
                        "-max_total_time=25", "-print_final_stats=1", f"-artifact_prefix={tmp_path}/"],
                       capture_output=True, text=True, timeout=170)
    assert r.returncode == 0, r.stderr[-4000:]
    runs = int(re.search(r"stat::number_of_executed_units:\s+(\d+)", r.stderr).group(1))
    cov = re.findall(r"cov: (\d+)", r.stderr)
    assert runs > 10_000 and cov and int(cov[-1]) > 100
    assert not list(tmp_path.glob("crash-*"))
