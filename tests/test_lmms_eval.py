"""lmms-eval 0.7.3 with the `viq_qwen` plugin on the paper's nine benchmarks, offline (fixtures under eval/tasks).

* lmms-eval resolves `viq_qwen` through the package's entry point (it only warns when a plugin fails to load);
* the fixture tasks are lmms-eval's own tasks with a local dataset (same prompts, processing and metrics);
* `lmms-eval --model viq_qwen` runs all nine fixtures with a tiny untrained VLM, in one process and in two
  (`accelerate launch`, results gathered on rank 0), and `eval/benchmarks.py` turns the results into the table;
* a VLM whose generation answers known strings gets, on each fixture, the score worked out by hand from the
  benchmark's rules: the metric wiring, through both the chat-messages and the prompt classes;
* `loglikelihood` scores a continuation like one forward pass over prompt + continuation.

The command line exits 0 even when an evaluation fails, so the tests read the results JSON.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from transformers_viq import ViQProcessor
from transformers_viq.integrations.lmms_eval_report import BENCHMARKS, PAPER_ROWS, paper_average
from transformers_viq.testing import IM_END_ID, make_tiny_vlm, qwen_tokenizer


REPO = Path(__file__).resolve().parents[1]
TASKS_DIR = REPO / "eval" / "tasks"
FIXTURES = [benchmark.fixture_task for benchmark in BENCHMARKS]
LMMS_EVAL = str(Path(sys.executable).parent / "lmms-eval")


def fixture_rows(task: str) -> list[dict]:
    """The rows of a fixture's parquet file, without decoding images."""
    (path,) = (TASKS_DIR / task).glob("*.parquet")
    table = pq.read_table(path)
    return table.drop([name for name in table.column_names if name.startswith("image")]).to_pylist()


def offline_env(tmp_path: Path) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_CACHE": str(tmp_path / "datasets"), "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "datasets"),
            "TQDM_DISABLE": "1"}  # fmt: skip


def read_results(output_dir: Path) -> tuple[dict, dict[str, list[dict]]]:
    (results_path,) = output_dir.rglob("*_results.json")
    samples = {}
    for path in results_path.parent.glob("*_samples_*.jsonl"):
        task = re.sub(r"^.*_samples_", "", path.stem)
        samples[task] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(results_path.read_text()), samples


def assert_every_fixture_scored(results: dict, samples: dict[str, list[dict]], tasks=tuple(FIXTURES)):
    for benchmark in (benchmark for benchmark in BENCHMARKS if benchmark.fixture_task in tasks):
        task, rows = benchmark.fixture_task, len(fixture_rows(benchmark.fixture_task))
        value = results["results"].get(task, {}).get(benchmark.metric)
        assert isinstance(value, (int, float)) and math.isfinite(value), (task, results["results"].get(task))
        assert 0 <= value <= (rows / 1000 if benchmark.column == "OCRBench" else 1)
        assert results["n-samples"][task] == {"original": rows, "effective": rows}
        assert sorted(sample["doc_id"] for sample in samples[task]) == list(range(rows))  # each document once


def load_report_script(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "eval"))  # as `python eval/benchmarks.py` runs it: eval_utils beside it
    spec = importlib.util.spec_from_file_location("eval_benchmarks", REPO / "eval" / "benchmarks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-vlm")
    make_tiny_vlm(qwen_tokenizer()).save_pretrained(folder)
    ViQProcessor(tokenizer=qwen_tokenizer()).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------------------------------
# Registration and the fixture tasks
# ---------------------------------------------------------------------------------------------------------------


def test_lmms_eval_resolves_viq_qwen():
    from lmms_eval.models import MODEL_REGISTRY_V2, get_model

    from transformers_viq.integrations.lmms_eval import ViQQwen, ViQQwenChat

    assert "viq_qwen" in MODEL_REGISTRY_V2.list_model_names()
    assert get_model("viq_qwen") is ViQQwenChat  # lmms-eval's default: the chat class
    assert get_model("viq_qwen", force_simple=True) is ViQQwen


def test_lmms_eval_start_up_does_not_import_the_plugin():
    """Loading the entry point (at every lmms-eval start) must not import the model classes: only the manifest."""
    code = ("import sys, lmms_eval.models as m; assert 'viq_qwen' in m.list_available_models(); "
            "print(sorted(name for name in sys.modules if name.startswith('transformers_viq')))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = set(ast.literal_eval(out.stdout.strip().splitlines()[-1]))
    assert "transformers_viq.integrations" in loaded
    heavy = {"transformers_viq.integrations.lmms_eval", "transformers_viq.pipeline", "transformers_viq.extraction",
             "transformers_viq.training", "transformers_viq.model_cards"}  # fmt: skip
    assert not loaded & heavy, sorted(loaded & heavy)


def test_fixture_tasks_are_lmms_eval_tasks_on_local_data():
    """Each fixture YAML is its benchmark's lmms-eval task with only the dataset swapped for the local parquet."""
    import lmms_eval.tasks
    from lmms_eval.utils import load_yaml_config

    real_files = {"mmstar": "mmstar/mmstar.yaml", "mmmu_val": "mmmu/mmmu_val.yaml",
                  "simplevqa": "simplevqa/simplevqa.yaml", "infovqa_val": "infovqa/infovqa_val.yaml",
                  "textvqa_val": "textvqa/textvqa_val.yaml", "docvqa_val": "docvqa/docvqa_val.yaml",
                  "ocrbench": "ocrbench/ocrbench.yaml", "ai2d": "ai2d/ai2d.yaml",
                  "chartqa": "chartqa/chartqa.yaml"}  # fmt: skip
    dataset_keys = {"task", "dataset_path", "dataset_name", "dataset_kwargs", "test_split", "tag", "include"}

    def comparable(value):
        """Functions and classes by name and defining file (the real YAMLs load `utils.py` by path)."""
        if inspect.isclass(value):
            method = next(item for item in vars(value).values() if inspect.isfunction(item))
            return (value.__qualname__, Path(method.__code__.co_filename).resolve())
        if callable(value):
            return (value.__qualname__, Path(value.__code__.co_filename).resolve())
        if isinstance(value, dict):
            return {key: comparable(item) for key, item in value.items()}
        if isinstance(value, list):
            return [comparable(item) for item in value]
        return value

    for benchmark in BENCHMARKS:
        real = load_yaml_config(str(Path(lmms_eval.tasks.__file__).parent / real_files[benchmark.task]))
        (fixture_yaml,) = (TASKS_DIR / benchmark.fixture_task).glob("*.yaml")
        fixture = load_yaml_config(str(fixture_yaml))
        assert fixture["task"] == benchmark.fixture_task
        assert fixture["dataset_path"] == "parquet" and fixture["test_split"] == real["test_split"]
        (split_file,) = fixture["dataset_kwargs"]["data_files"].values()
        assert (fixture_yaml.parent / split_file).is_file()
        real = {key: value for key, value in real.items() if key not in dataset_keys}
        fixture = {key: value for key, value in fixture.items() if key not in dataset_keys}
        assert comparable(fixture) == comparable(real), benchmark.task


def test_fixture_generator_is_reproducible(tmp_path):
    spec = importlib.util.spec_from_file_location("make_fixtures", TASKS_DIR / "make_fixtures.py")
    make_fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_fixtures)
    for task in ("mmmu_val", "docvqa_val"):
        written = make_fixtures.write(task, tmp_path)
        committed = TASKS_DIR / f"{task}_fixture" / written.name
        assert pq.read_table(written).equals(pq.read_table(committed)), task


def test_paper_average_reproduces_the_published_averages():
    for row in PAPER_ROWS:
        assert round(row.average, 1) == row.published_average, row.name
    # Table 1's other Qwen2.5-1.5B rows, with their published averages
    others = {(44.9, 40.7, 21.3, 24.2, 58.9, 52.9, 460.0, 68.1, 55.0): 45.8,
              (48.5, 42.1, 23.7, 35.2, 75.5, 80.1, 690.0, 70.7, 67.8): 57.0,
              (39.9, 36.9, 13.7, 14.8, 45.1, 12.2, 290.0, 61.9, 14.1): 29.7}  # fmt: skip
    for scores, average in others.items():
        assert round(paper_average(scores), 1) == average
    assert paper_average((50.0,) * 6 + (None,) + (50.0,) * 2) is None
    with pytest.raises(ValueError, match="9 scores"):
        paper_average((50.0,) * 8)


def test_report_reads_each_headline_metric_on_the_paper_scale(tmp_path, monkeypatch, capsys):
    """The table from a results file: each task's headline metric, percent and 0-1000 scales, average, exit code."""
    values = {"mmstar": ("average,none", 0.5), "mmmu_val": ("mmmu_acc,none", 0.4),
              "simplevqa": ("exact_match,none", 0.3), "infovqa_val": ("anls,none", 0.6),
              "textvqa_val": ("exact_match,none", 0.7),
              "docvqa_val": ("anls,none", 0.8), "ocrbench": ("ocrbench_accuracy,none", 0.65),
              "ai2d": ("exact_match,flexible-extract", 0.75), "chartqa": ("relaxed_overall,none", 0.55)}  # fmt: skip
    results = {"results": {task: {"alias": task, metric: value, f"{metric.split(',')[0]}_stderr,none": 0.01}
                           for task, (metric, value) in values.items()},
               "n-samples": {task: {"original": 100, "effective": 100} for task in values},
               "config": {"model_args": "pretrained=me/viq-qwen,image_input=pixels"}}  # fmt: skip
    results["results"]["ai2d"]["exact_match,none"] = 0.0  # the unfiltered metric is not the headline one
    results["n-samples"]["chartqa"]["effective"] = 10
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x_results.json").write_text(json.dumps(results))
    report = load_report_script(monkeypatch)

    assert report.main(["--results", str(tmp_path / "run")]) == 0
    table = (tmp_path / "run" / "table.md").read_text()
    average = (50 + 40 + 30 + 60 + 70 + 80 + 65 + 75 + 55) / 9
    row = f"| me/viq-qwen (ours) | 50.0 | 40.0 | 30.0 | 60.0 | 70.0 | 80.0 | 650.0 | 75.0 | 55.0 | {average:.1f} |"
    assert row in table
    assert "- ChartQA: chartqa: 10 of 100 documents" in table

    del results["results"]["docvqa_val"]
    (tmp_path / "run" / "x_results.json").write_text(json.dumps(results))
    assert report.main(["--results", str(tmp_path / "run"), "--label", "mine"]) == 1
    partial = "| mine (ours) | 50.0 | 40.0 | 30.0 | 60.0 | 70.0 | - | 650.0 | 75.0 | 55.0 | - |"
    assert partial in capsys.readouterr().out
    assert report.main(["--results", str(tmp_path / "run"), "--benchmarks", "MMStar,ocrbench"]) == 0
    assert report.main(["--results", str(tmp_path / "run"), "--benchmarks", "VQAv2"]) == 2


def test_real_benchmarks_offline_fail_at_once_with_exit_4(tiny_vlm, tmp_path, monkeypatch, capsys):
    """No Hub and no cached benchmark data: one line at once (before lmms-eval starts), exit 4, the fixtures named."""
    import time

    report = load_report_script(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_lmms_eval(*args, **kwargs):
        raise AssertionError("lmms-eval was started")

    monkeypatch.setattr(report.subprocess, "run", no_lmms_eval)
    started = time.perf_counter()
    assert report.main(["--model", str(tiny_vlm), "--output-dir", str(tmp_path / "out"), "--benchmarks",
                        "MMStar,DocVQA"]) == 4  # fmt: skip
    assert time.perf_counter() - started < 10
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("benchmarks.py: error: the benchmark data Lin-Chen/MMStar is not in the local Hugging Face")
    assert "--fixtures" in line
    assert {benchmark.dataset for benchmark in BENCHMARKS} >= {"Lin-Chen/MMStar", "lmms-lab-encoder/DocVQA"}

    assert report.main(["--model", str(tmp_path / "no-such-vlm"), "--fixtures"]) == 2  # a typo: said first
    assert capsys.readouterr().err.strip() == f"benchmarks.py: error: no folder {tmp_path / 'no-such-vlm'}"


# ---------------------------------------------------------------------------------------------------------------
# End to end: the command line, one process and two
# ---------------------------------------------------------------------------------------------------------------


def test_lmms_eval_command_line_runs_the_nine_fixtures(tiny_vlm, tmp_path, monkeypatch):
    command = [LMMS_EVAL, "--model", "viq_qwen", "--model_args", f"pretrained={tiny_vlm},max_new_tokens=16",
               "--tasks", ",".join(FIXTURES), "--include_path", str(TASKS_DIR), "--device", "cpu",
               "--batch_size", "3", "--output_path", str(tmp_path / "out"), "--log_samples"]  # fmt: skip
    run = subprocess.run(command, env=offline_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results, samples = read_results(tmp_path / "out")
    assert results["config"]["model_backend"].endswith("ViQQwenChat (chat)")
    assert_every_fixture_scored(results, samples)

    # The report of that run: the paper's columns, our row and the published ViQ rows with their sources.
    report = load_report_script(monkeypatch)
    assert report.main(["--results", str(tmp_path / "out")]) == 0
    table = (next((tmp_path / "out").rglob("table.md"))).read_text()
    columns = "MMStar | MMMU | SimpleVQA | InfoVQA | TextVQA | DocVQA | OCRBench | AI2D | ChartQA"
    assert f"| Model | {columns} | Avg. | Source |" in table
    ours = next(line for line in table.splitlines() if "(ours)" in line)
    assert all(re.fullmatch(r"\d+\.\d", cell.strip()) for cell in ours.split("|")[2:12])
    paper_7b = "| ViQ + Qwen2.5-7B (paper) | 54.2 | 49.1 | 28.5 | 55.3 | 78.5 | 88.9 | 711.0 | 76.7 | 72.8 | 63.9 |"
    assert paper_7b in table
    assert "Table 1" in table and "offline fixtures" in table


def test_two_processes_gather_on_rank_zero(tiny_vlm, tmp_path):
    """`accelerate launch` with two CPU processes (gloo): each answers its share, rank 0 writes every document."""
    command = [sys.executable, str(REPO / "eval" / "benchmarks.py"), "--model", str(tiny_vlm), "--fixtures",
               "--benchmarks", "MMMU,ocrbench,AI2D", "--device", "cpu", "--num-processes", "2", "--batch-size", "2",
               "--image-input", "codes", "--model-args", "max_new_tokens=16",
               "--output-dir", str(tmp_path / "out")]  # fmt: skip
    run = subprocess.run(command, env=offline_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Running on rank 1 (local rank 1)" in run.stdout + run.stderr  # lmms-eval logs each rank
    results, samples = read_results(tmp_path / "out")
    assert "image_input=codes" in results["config"]["model_args"]
    assert sorted(results["results"]) == ["ai2d_fixture", "mmmu_val_fixture", "ocrbench_fixture"]
    assert_every_fixture_scored(results, samples, tasks=results["results"])
    ours = next(line for line in run.stdout.splitlines() if "(ours)" in line).split("|")[2:12]
    assert [cell.strip() == "-" for cell in ours] == [True, False, True, True, True, True, False, False, True, True]


# ---------------------------------------------------------------------------------------------------------------
# Known answers: the metric wiring of each fixture
# ---------------------------------------------------------------------------------------------------------------

# Per fixture: the answer given to each row (in file order) and the scores those answers must get.
KNOWN_ANSWERS = {
    # MMStar averages per l2 category, then over categories: "image scene and topic" 1/3, "object counting" 1.
    "mmstar_fixture": (["A", "A", "B", "The answer is (B)."],
                       {"average,none": (1 / 3 + 1) / 2, "coarse perception,none": 1 / 3,
                        "fine-grained perception,none": 1.0}),
    # two images in the Art question; the open question is parsed for its number
    "mmmu_val_fixture": (["B", "A", "There are 3 balls.", "A"], {"mmmu_acc,none": 0.75}),
    # EvalAI normalisation: "Red." == "red", "three" == "3"
    "simplevqa_fixture": (["Red.", "K", "square", "three"], {"exact_match,none": 0.75}),
    # ANLS: exact, 1 - 3/18 ("renewable energies" vs "renewable energy"), below the 0.5 threshold
    "infovqa_val_fixture": (["1250", "renewable energies", "europe"], {"anls,none": (1 + (1 - 3 / 18) + 0) / 3}),
    # VQA accuracy: 10 x "stop" -> 1; 2 of 10 annotators said "coca cola" -> (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    "textvqa_val_fixture": (["Stop", "coca cola", "8"], {"exact_match,none": (1 + 0.6 + 0) / 3}),
    # the answer is cut at the task's stop string "\n\n"; ANLS 1 - 1/13 for a missing comma
    "docvqa_val_fixture": (["$42.00\n\nThe total is on the last line.", "march 3 1999", "jones"],
                           {"anls,none": (1 + (1 - 1 / 13) + 0) / 3}),
    # OCRBench counts correct answers out of its 1000 (HME100k ignores spaces; others: answer inside the reply)
    "ocrbench_fixture": (["hello", "x ^ 2 + 1", "The report is from 1999.", "SUM"],
                         {"ocrbench_accuracy,none": 3 / 1000}),
    # the option letter is extracted from "B. the sun"; options are B, A, C
    "ai2d_fixture": (["B. the sun", "A", "D. rain"], {"exact_match,flexible-extract": 2 / 3}),
    # relaxed accuracy: 41 is within 5% of 40, 0.25 == 25%, "blue" == "Blue"; 15 is not 12
    "chartqa_fixture": (["41", "0.25", "blue", "15"],
                        {"relaxed_overall,none": 0.75, "relaxed_human_split,none": 1.0,
                         "relaxed_augmented_split,none": 0.5}),
}  # fmt: skip


def question_key(question: str) -> str:
    """The first text of a question that reaches the prompt whole (images may split it; TextVQA capitalises it)."""
    pieces = [piece.strip() for piece in re.split(r"<image \d+>", question) if piece.strip()]
    return pieces[0].split("\n")[0].lower()


@pytest.fixture(scope="module")
def fixture_task_manager():
    from lmms_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False, model_name="viq_qwen")


@pytest.mark.parametrize("style,image_input", [("chat", "pixels"), ("simple", "codes")])
def test_known_answers_get_the_expected_scores(tiny_vlm, fixture_task_manager, tmp_path, monkeypatch, style,
                                               image_input):  # fmt: skip
    import lmms_eval.tasks.ocrbench.utils as ocrbench_utils
    from lmms_eval.evaluator import simple_evaluate

    from transformers_viq.integrations.lmms_eval import ViQQwen, ViQQwenChat

    answers = {}
    for task, (task_answers, _) in KNOWN_ANSWERS.items():
        rows = fixture_rows(task)
        assert len(rows) == len(task_answers), task
        answers.update({question_key(row["question"]): answer for row, answer in zip(rows, task_answers)})
    assert len(answers) == sum(len(task_answers) for task_answers, _ in KNOWN_ANSWERS.values())

    model_class = ViQQwenChat if style == "chat" else ViQQwen
    lm = model_class(pretrained=str(tiny_vlm), device="cpu", batch_size=3, image_input=image_input)
    tokenizer, real_generate = lm.processor.tokenizer, lm.model.generate
    calls = []

    def generate(**inputs):
        """Check the batch on the real model (one step), then answer each prompt's known string."""
        calls.append(inputs)
        assert ("image_codes" in inputs) == (image_input == "codes") and "image_grid_hw" in inputs
        real_generate(**{**inputs, "max_new_tokens": 1})  # the real model accepts the batch
        rows = []
        for ids in inputs["input_ids"]:
            prompt = tokenizer.decode(ids, skip_special_tokens=True).lower()
            (answer,) = [answer for key, answer in answers.items() if key in prompt]
            rows.append(tokenizer(answer, add_special_tokens=False)["input_ids"] + [IM_END_ID])
        new_tokens = torch.full((len(rows), max(map(len, rows))), tokenizer.pad_token_id)
        for row, ids in enumerate(rows):
            new_tokens[row, : len(ids)] = torch.tensor(ids)
        return torch.cat([inputs["input_ids"], new_tokens], dim=1)

    monkeypatch.setattr(lm.model, "generate", generate)
    monkeypatch.setattr(ocrbench_utils, "OCRBench_score", dict.fromkeys(ocrbench_utils.OCRBench_score, 0))  # a global
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.chdir(tmp_path)  # without command-line arguments, OCRBench and TextVQA write their files here
    out = simple_evaluate(model=lm, tasks=list(KNOWN_ANSWERS), task_manager=fixture_task_manager, batch_size=3,
                          log_samples=False)  # fmt: skip

    for task, (_, expected) in KNOWN_ANSWERS.items():
        for metric, value in expected.items():
            assert out["results"][task][metric] == pytest.approx(value, abs=1e-6), (task, metric)
    # batches mixed image sizes, and the MMMU document with two images went in with both
    assert any(len(set(map(tuple, call["image_grid_hw"].tolist()))) > 1 for call in calls)
    assert sum(len(call["image_grid_hw"]) for call in calls) == sum(len(r) for r, _ in KNOWN_ANSWERS.values()) + 1


# ---------------------------------------------------------------------------------------------------------------
# Log-likelihood
# ---------------------------------------------------------------------------------------------------------------


def test_loglikelihood_scores_continuations_like_one_forward_pass(tiny_vlm):
    from lmms_eval.api.instance import Instance

    from transformers_viq.integrations.lmms_eval import ViQQwen

    rng = np.random.default_rng(3)
    docs = [{"images": [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]}
            for sizes in ([(64, 64)], [(96, 32), (32, 64)], [(64, 96)])]  # fmt: skip
    cases = [("What is drawn here?", "A red circle"), ("Compare the two pictures in detail, please.", "Same"),
             ("Name it.", "")]  # fmt: skip
    lm = ViQQwen(pretrained=str(tiny_vlm), device="cpu", batch_size=2)
    lm.task_dict = {"task": {"test": docs}}
    requests = [Instance(request_type="loglikelihood", idx=0, metadata={"task": "task", "doc_id": i, "repeats": 1},
                         arguments=(context, continuation, lambda doc: doc["images"], i, "task", "test"))
                for i, (context, continuation) in enumerate(cases)]  # fmt: skip
    scores = lm.loglikelihood(requests)

    processor = lm.processor
    for (context, continuation), doc, (log_prob, greedy) in zip(cases, docs, scores):
        if not continuation:
            assert (log_prob, greedy) == (0.0, True)
            continue
        content = [{"type": "image"}] * len(doc["images"]) + [{"type": "text", "text": context}]
        prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        inputs = processor(images=doc["images"], text=[prompt + continuation], return_tensors="pt")
        target = processor.tokenizer(continuation, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        with torch.no_grad():
            logits = lm.model(**inputs).logits[0, -len(target) - 1 : -1].float()
        expected = logits.log_softmax(-1).gather(-1, target[:, None]).sum().item()
        assert log_prob == pytest.approx(expected, abs=1e-4)
        assert greedy == bool((logits.argmax(-1) == target).all())
        assert log_prob < 0


# ---------------------------------------------------------------------------------------------------------------
# Model arguments
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_args, message",
    [
        ({"image_input": "jpeg"}, "image_input"),
        ({"batch_size": "auto"}, "batch_size"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"dtype": "int8"}, "dtype"),
        ({"temperature": 0.7}, "Unknown model_args for viq_qwen: \\['temperature'\\]"),
    ],
)
def test_bad_model_args_are_refused(tiny_vlm, model_args, message):
    from lmms_eval.models import get_model

    with pytest.raises(ValueError, match=message):
        get_model("viq_qwen").create_from_arg_string(
            ",".join(f"{key}={value}" for key, value in {"pretrained": tiny_vlm, **model_args}.items()),
            {"device": "cpu"},
        )


def test_a_processor_for_another_projector_is_refused(tiny_vlm, tmp_path):
    from transformers_viq.integrations.lmms_eval import ViQQwen

    ViQProcessor(tokenizer=qwen_tokenizer(), projector_type="mlp").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'mlp' projector but the model has a 'pooled' one"):
        ViQQwen(pretrained=str(tiny_vlm), processor=str(tmp_path), device="cpu")


def test_max_pixels_caps_the_image_area(tiny_vlm):
    from transformers_viq.integrations.lmms_eval import ViQQwen

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 192, 3), dtype=np.uint8))
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    grids = []
    for max_pixels in (None, 64 * 64):
        lm = ViQQwen(pretrained=str(tiny_vlm), device="cpu", max_pixels=max_pixels)
        grids.append(lm._model_inputs([conversation], [image], padding_side="left")["image_grid_hw"].tolist())
    assert grids[0] == [[16, 12]]  # native size (multiples of 32)
    assert grids[1][0][0] * grids[1][0][1] * 16 * 16 <= 64 * 64


def test_document_images_are_decoded_as_the_processor_decodes_them(tmp_path):
    """EXIF orientation and transparency, as `viq encode` sees the same files (not a bare `.convert("RGB")`)."""
    from transformers_viq.integrations.lmms_eval import _images

    turned = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: upright it is 10 wide and 20 high
    Image.new("RGB", (20, 10), (200, 30, 30)).save(turned, exif=exif)
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # fully transparent: white once composed, black if just dropped
    images = _images([str(turned), clear], "task")
    assert images[0].size == (10, 20) and images[0].mode == "RGB"
    assert np.asarray(images[1]).min() == 255
    with pytest.raises(ValueError, match="viq_qwen reads images; task 'task' gave a int"):
        _images([3], "task")
