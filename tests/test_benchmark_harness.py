"""benchmarks/harness.py: the JSON report of the one-shot GPU scripts must survive a failing stage and odd values."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def harness():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import harness

        yield harness
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_a_failing_stage_is_recorded_and_the_run_goes_on(harness, tmp_path, capsys):
    path = tmp_path / "out" / "report.json"
    report = harness.StageReport(str(path), harness.RunLog("test"), rows=[])
    with report.stage("first"):
        row = {"nan": math.nan, "dtype": torch.bfloat16, "value": np.float32(2.5), "pair": (1, 2)}
        report.data["rows"].append(row)
        raise RuntimeError("device lost")
    with report.stage("second"):
        report.data["rows"].append({"ok": True})
    report.skip("third", "past the budget")
    report.write()
    data = json.loads(path.read_text())  # strict JSON, written after every stage
    assert [error["stage"] for error in data["errors"]] == ["first"]
    assert "RuntimeError: device lost" in data["errors"][0]["error"]
    assert data["rows"] == [{"nan": "nan", "dtype": "torch.bfloat16", "value": 2.5, "pair": [1, 2]}, {"ok": True}]
    assert data["skipped"] == [{"what": "third", "reason": "past the budget"}]
    log = capsys.readouterr().out
    assert "ERROR in first: RuntimeError: device lost" in log and "second: done in" in log
    assert not list(path.parent.glob(".*"))  # no temporary file left behind
