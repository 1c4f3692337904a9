"""The paper's nine understanding benchmarks for a ViQ VLM through lmms-eval, and its Table 1 with our row beside it.

Runs `lmms-eval --model viq_qwen` on mmstar, mmmu_val, simplevqa, infovqa_val, textvqa_val, docvqa_val, ocrbench,
ai2d and chartqa (one lmms-eval run; several processes with `--num-processes`), reads the results JSON and writes
`table.md` (also printed): the paper's nine columns, OCRBench on its 0-1000 scale, the paper's average, and the
published ViQ rows with their source.

    python eval/benchmarks.py --model me/viq-qwen2.5-7b                            # one GPU
    python eval/benchmarks.py --model me/viq-qwen2.5-7b --num-processes 8          # 8 GPUs (accelerate launch)
    python eval/benchmarks.py --model /tmp/tiny-vlm --fixtures --device cpu        # offline fixtures (eval/tasks)
    python eval/benchmarks.py --results outputs/benchmarks                         # table of an earlier run

lmms-eval exits 0 even when a task fails, so the script checks the results: it exits 1 when one of the nine has no
score. Benchmark data that is neither in the local Hugging Face cache nor reachable on the Hub ends the run at once,
before lmms-eval starts, with exit code 4 (as `viq`). Needs lmms-eval 0.7.3 installed with `--no-deps` (README,
"Evaluating a VLM").
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from transformers_viq.hub_utils import check_local_folder
from transformers_viq.integrations.lmms_eval_report import (
    BENCHMARKS,
    PAPER_ROWS,
    TableRow,
    find_results,
    load_json,
    markdown_table,
    scores_from_results,
)

from eval_utils import run_script


FIXTURE_TASKS = Path(__file__).resolve().parent / "tasks"


def lmms_eval_command(args: argparse.Namespace) -> list[str]:
    """The `lmms-eval` call (under `accelerate launch` for several processes)."""
    model_args = [f"pretrained={args.model}", f"image_input={args.image_input}"]
    model_args += [f"{key}={value}" for key, value in (("max_pixels", args.max_pixels), ("dtype", args.dtype))
                   if value is not None]  # fmt: skip
    if args.model_args:
        model_args.append(args.model_args)
    tasks = [benchmark.fixture_task if args.fixtures else benchmark.task for benchmark in selected(args.benchmarks)]
    command = ["-m", "lmms_eval", "--model", "viq_qwen", "--model_args", ",".join(model_args),
               "--tasks", ",".join(tasks), "--batch_size", str(args.batch_size),
               "--output_path", str(args.output_dir), "--log_samples"]  # fmt: skip
    if args.fixtures:
        command += ["--include_path", str(FIXTURE_TASKS)]
    if args.limit is not None:
        command += ["--limit", str(args.limit)]
    if args.device is not None:
        command += ["--device", args.device]
    if args.num_processes > 1:
        launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(args.num_processes),
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                  "--main_process_port", str(free_port())]  # fmt: skip
        return [sys.executable, *launch, *command]
    return [sys.executable, *command]


def selected(names: str | None) -> list:
    """The benchmarks named in `--benchmarks` (paper column or lmms-eval task names, comma-separated), or all nine."""
    if not names:
        return list(BENCHMARKS)
    by_name = {name.lower(): benchmark for benchmark in BENCHMARKS for name in (benchmark.column, benchmark.task)}
    unknown = [name for name in names.split(",") if name.strip().lower() not in by_name]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; choose from {', '.join(sorted(by_name))}")
    chosen = {by_name[name.strip().lower()] for name in names.split(",")}
    return [benchmark for benchmark in BENCHMARKS if benchmark in chosen]


def check_benchmark_data(wanted: list) -> None:
    """
    Before lmms-eval starts (it retries each download for about 40 s before it fails): every dataset of the wanted
    benchmarks is in the local Hugging Face cache, or the Hub answers for it (one request each, no retries). Offline
    or without a network, a `HubUnreachableError` (exit 4) that says how to run the offline fixtures instead.
    """
    from transformers_viq.hub_utils import HubUnreachableError, cached_dataset, probe_dataset

    for dataset in dict.fromkeys(benchmark.dataset for benchmark in wanted):
        if cached_dataset(dataset):
            continue
        try:
            probe_dataset(dataset)
        except HubUnreachableError as error:
            raise HubUnreachableError(
                f"the benchmark data {dataset} is not in the local Hugging Face cache and the Hub cannot be reached "
                f"({error}); run the offline fixtures instead: python eval/benchmarks.py --model ... --fixtures "
                "--device cpu"
            ) from error


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def report(results_path: Path, fixtures: bool, label: str | None, wanted: list) -> tuple[str, list[str]]:
    """The Markdown report of a results file, and the wanted benchmarks without a score."""
    results = load_json(results_path)
    fixtures = fixtures or any(benchmark.fixture_task in results.get("results", {}) for benchmark in BENCHMARKS)
    scores, notes = scores_from_results(results, fixtures=fixtures)
    name = label or results.get("config", {}).get("model_args", "").split(",")[0].removeprefix("pretrained=") or "ours"
    where = "offline fixtures (eval/tasks), a few rows each" if fixtures else "lmms-eval 0.7.3"
    ours = TableRow(f"{name} (ours)", scores, f"{where}: {results_path}")
    lines = ["# Multi-modal understanding (layout of the ViQ paper's Table 1)", ""]
    lines += [markdown_table([ours, *PAPER_ROWS]), ""]
    lines.append(
        "OCRBench is on its 0-1000 scale (correct answers out of the benchmark's 1000); Avg. is the paper's: the mean "
        "of the nine columns with OCRBench divided by 10."
    )
    if fixtures:
        lines.append(
            "The fixtures are a few generated rows per benchmark: they check the wiring, their scores say nothing "
            "about a model (and OCRBench counts correct answers, so at most the number of rows)."
        )
    if notes:
        lines += ["", "Notes on our row:"] + [f"- {column}: {note}" for column, note in notes.items()]
    missing = [bench.column for bench, score in zip(BENCHMARKS, scores) if score is None and bench in wanted]
    return "\n".join(lines) + "\n", missing


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a saved ViQForConditionalGeneration (folder or Hub repo) with its processor")
    parser.add_argument("--results", type=Path, help="only print the table of an earlier run (folder or JSON)")
    parser.add_argument("--fixtures", action="store_true", help="the offline fixture tasks of eval/tasks")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/benchmarks"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-processes", type=int, default=1, help="> 1: accelerate launch, one model per process")
    parser.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda when there is one)")
    parser.add_argument("--dtype", help="bfloat16 (default on GPU), float16, float32 (default on CPU) or auto")
    parser.add_argument("--max-pixels", type=int, help="largest image area (default: the processor's)")
    parser.add_argument("--image-input", choices=("pixels", "codes"), default="pixels")
    parser.add_argument("--model-args", help="more viq_qwen model_args, e.g. attn_implementation=flash_attention_2")
    parser.add_argument("--benchmarks", help="a comma-separated subset, e.g. MMStar,OCRBench (default: all nine)")
    parser.add_argument("--limit", type=int, help="documents per benchmark (a quick check, not the paper's numbers)")
    parser.add_argument("--label", help="name of our row (default: the model)")
    return parser


def run(args: argparse.Namespace) -> None:
    if (args.model is None) == (args.results is None):
        raise ValueError("give --model (run the nine benchmarks) or --results (the table of an earlier run)")
    wanted = selected(args.benchmarks)
    if args.results is not None:
        results_path = find_results(args.results)
    else:
        check_local_folder(args.model)  # a mistyped folder says so, not lmms-eval's Hub retries
        if not args.fixtures:
            check_benchmark_data(wanted)
        args.output_dir.mkdir(parents=True, exist_ok=True)
        command = lmms_eval_command(args)
        print("+ " + " ".join(command), file=sys.stderr, flush=True)
        started = time.time()
        completed = subprocess.run(command, env=os.environ.copy(), check=False)
        if completed.returncode != 0:
            raise RuntimeError(f"lmms-eval failed (exit code {completed.returncode})")
        results_path = find_results(args.output_dir)
        if results_path.stat().st_mtime < started:
            raise RuntimeError(f"lmms-eval wrote no results under {args.output_dir}")
    text, missing = report(results_path, args.fixtures, args.label, wanted)
    table_path = (args.output_dir if args.results is None else results_path.parent) / "table.md"
    table_path.write_text(text, encoding="utf-8")
    print(text)
    print(f"written to {table_path}", file=sys.stderr)
    if missing:  # lmms-eval exits 0 when a task fails: its log above says why
        raise RuntimeError(f"no score for {', '.join(missing)} (see lmms-eval's log above)")


def main(argv: list[str] | None = None) -> int:
    return run_script("benchmarks.py", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
