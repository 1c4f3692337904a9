# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""The paper's nine understanding benchmarks under lmms-eval 0.7.3, and a Markdown table in the layout of its Table 1.

[`BENCHMARKS`] names, for each column of the paper's Table 1, the lmms-eval task, the key of its headline metric in
lmms-eval's `*_results.json` and the factor from lmms-eval's value to the paper's scale (percent; OCRBench's 0-1000).
[`PAPER_ROWS`] are the published ViQ rows, each with where it comes from. [`paper_average`] is the paper's "Avg.":
the plain mean of the nine columns with OCRBench divided by 10 (it reproduces every published average of Table 1).

Pure Python (reads JSON); `eval/benchmarks.py` runs lmms-eval and prints the table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Benchmark:
    """One column of the paper's Table 1."""

    column: str  # the paper's column name
    task: str  # the lmms-eval 0.7.3 task
    metric: str  # key of the headline metric in the task's entry of `*_results.json` ("<metric>,<filter>")
    scale: float  # lmms-eval value * scale = the paper's number
    dataset: str  # the Hub dataset the task reads (its `dataset_path` in lmms-eval 0.7.3)

    @property
    def fixture_task(self) -> str:
        """The offline task under `eval/tasks/` that runs this benchmark's lmms-eval task on a few local rows."""
        return f"{self.task}_fixture"


BENCHMARKS = (
    Benchmark("MMStar", "mmstar", "average,none", 100, "Lin-Chen/MMStar"),
    Benchmark("MMMU", "mmmu_val", "mmmu_acc,none", 100, "lmms-lab-encoder/MMMU"),
    Benchmark("SimpleVQA", "simplevqa", "exact_match,none", 100, "m-a-p/SimpleVQA"),
    Benchmark("InfoVQA", "infovqa_val", "anls,none", 100, "lmms-lab-encoder/DocVQA"),
    Benchmark("TextVQA", "textvqa_val", "exact_match,none", 100, "lmms-lab-encoder/textvqa"),
    Benchmark("DocVQA", "docvqa_val", "anls,none", 100, "lmms-lab-encoder/DocVQA"),
    # lmms-eval reports (correct answers) / 1000; the paper prints the count out of the benchmark's 1000 questions
    Benchmark("OCRBench", "ocrbench", "ocrbench_accuracy,none", 1000, "echo840/OCRBench"),
    # printed "A2D" / "A12D" in the paper
    Benchmark("AI2D", "ai2d", "exact_match,flexible-extract", 100, "lmms-lab-encoder/ai2d"),
    Benchmark("ChartQA", "chartqa", "relaxed_overall,none", 100, "lmms-lab-encoder/ChartQA"),
)


@dataclass(frozen=True)
class TableRow:
    """A row of the table: a name, the nine scores on the paper's scales (`None`: not run) and where they come from."""

    name: str
    scores: tuple[float | None, ...]
    source: str
    published_average: float | None = None  # the paper's own "Avg." for its rows

    @property
    def average(self) -> float | None:
        return paper_average(self.scores)


_PAPER = "ViQ paper, Table 1 (= Table 2), Sec. 4.2"
PAPER_ROWS = (
    TableRow("ViQ + Qwen2.5-1.5B (paper)", (47.8, 42.6, 26.0, 41.6, 74.3, 84.2, 636.0, 69.7, 65.2),
             f"{_PAPER}, Qwen2.5-1.5B block", published_average=57.2),
    TableRow("ViQ + Qwen2.5-7B (paper)", (54.2, 49.1, 28.5, 55.3, 78.5, 88.9, 711.0, 76.7, 72.8),
             f"{_PAPER}, Qwen2.5-7B block", published_average=63.9),
)  # fmt: skip


def paper_average(scores: Sequence[float | None]) -> float | None:
    """The paper's "Avg.": the mean of the nine columns, OCRBench (0-1000) divided by 10; `None` if one is missing."""
    if len(scores) != len(BENCHMARKS):
        columns = ", ".join(benchmark.column for benchmark in BENCHMARKS)
        raise ValueError(f"Expected {len(BENCHMARKS)} scores ({columns}), got {len(scores)}.")
    if any(score is None for score in scores):
        return None
    on_percent = [score / 10 if bench.column == "OCRBench" else score for score, bench in zip(scores, BENCHMARKS)]
    return sum(on_percent) / len(on_percent)


def find_results(path: str | Path) -> Path:
    """The newest lmms-eval `*_results.json` at `path` (a file, or a folder searched recursively)."""
    path = Path(path)
    if path.is_file():
        return path
    found = sorted(path.rglob("*_results.json"), key=lambda candidate: candidate.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"No lmms-eval *_results.json under {path}.")
    return found[-1]


def scores_from_results(results: Mapping, fixtures: bool = False) -> tuple[tuple[float | None, ...], dict[str, str]]:
    """
    The nine scores (paper scales) from a loaded `*_results.json`, and notes on what is missing or partial.

    Args:
        results: The parsed JSON (its `results` and `n-samples` entries are read).
        fixtures: Read the `<task>_fixture` tasks instead of the benchmarks' own.

    Returns:
        `(scores, notes)`: `None` for a benchmark that is not in the results; `notes[column]` says why, or on how many
        of the benchmark's documents it ran (`--limit`).
    """
    scores, notes = [], {}
    for benchmark in BENCHMARKS:
        task = benchmark.fixture_task if fixtures else benchmark.task
        entry = results.get("results", {}).get(task)
        value = None if entry is None else entry.get(benchmark.metric)
        if entry is None:
            notes[benchmark.column] = f"{task}: not in the results"
        elif not isinstance(value, (int, float)) or not math.isfinite(value):
            notes[benchmark.column] = f"{task}: no {benchmark.metric} (got {value!r})"
            value = None
        scores.append(None if value is None else float(value) * benchmark.scale)
        counts = results.get("n-samples", {}).get(task)
        if counts and counts.get("effective") != counts.get("original"):
            notes[benchmark.column] = f"{task}: {counts['effective']} of {counts['original']} documents"
    return tuple(scores), notes


def markdown_table(rows: Sequence[TableRow]) -> str:
    """The rows under the paper's Table 1 header, scores to one decimal (OCRBench 0-1000), with the average."""
    header = ["Model", *(benchmark.column for benchmark in BENCHMARKS), "Avg.", "Source"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 2) + ["---"]) + "|"]
    for row in rows:
        cells = [row.name, *(_cell(score) for score in row.scores), _cell(row.average), row.source]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def load_json(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


__all__ = [
    "BENCHMARKS",
    "PAPER_ROWS",
    "Benchmark",
    "TableRow",
    "find_results",
    "load_json",
    "markdown_table",
    "paper_average",
    "scores_from_results",
]
