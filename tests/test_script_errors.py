"""A mistyped local path reads as one ("no folder X"), before any Hub request, in every command and script; scripts
report expected errors in one line with the `viq` command's exit codes, and `--debug` / `VIQ_DEBUG=1` adds the
traceback. CPU, no network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from transformers_viq import ViQForConditionalGeneration, ViQModel, ViQPipeline
from transformers_viq.cli import main as viq
from transformers_viq.exit_codes import EXIT_HUB, EXIT_USAGE
from transformers_viq.hub_utils import NoSuchFolderError, looks_like_path
from transformers_viq.training import load_vlm


REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "assets" / "samples" / "coffee_200x304.png"
TINY_VIQ = REPO / "examples" / "tiny-viq"


@pytest.fixture
def no_hub(monkeypatch):
    """Any request to the Hub fails the test: a missing folder must be said without asking."""
    from transformers_viq import hub_utils, original_checkpoint, pipeline

    def refuse(*args, **kwargs):
        raise AssertionError(f"the Hub was asked: {args}")

    for module in (hub_utils, original_checkpoint, pipeline):  # (the name each module holds)
        for name in ("probe_file", "ensure_fetchable", "probe_dataset"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", refuse)
    monkeypatch.setattr("huggingface_hub.file_download.get_hf_file_metadata", refuse)
    monkeypatch.chdir(REPO)  # `examples/` exists here, so `examples/tiny-vq` is a path


def test_what_looks_like_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").mkdir()
    assert looks_like_path("examples/tiny-vq")  # its parent folder exists
    assert looks_like_path("./tiny") and looks_like_path("/abs/tiny") and looks_like_path("a/b/c")
    assert not looks_like_path("XuminYu/ViQ_weights") and not looks_like_path("gpt2")  # Hub ids


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    return err[0]


def test_every_command_says_no_folder_first(no_hub, tmp_path, capsys):
    typo = "examples/tiny-vq"
    codes = tmp_path / "c.safetensors"
    for argv in (["encode", str(SAMPLE), "-o", str(codes), "--model", typo],
                 ["reconstruct", str(SAMPLE), "-o", str(tmp_path / "r"), "--model", typo],
                 ["extract", "training/data/tiny/llava.json", "-o", str(tmp_path / "x"), "--model", typo],
                 ["convert", "--size", "16k", "--source", typo, "-o", str(tmp_path / "conv")]):  # fmt: skip
        assert viq(argv) == EXIT_USAGE, argv
        assert _error(capsys) == f"viq: error: no folder {typo}", argv
    assert viq(["encode", str(SAMPLE), "-o", str(codes), "--model", str(TINY_VIQ)]) == 0
    capsys.readouterr()
    assert viq(["decode", str(codes), "-o", str(tmp_path / "d"), "--model", typo]) == EXIT_USAGE
    assert _error(capsys) == f"viq: error: no folder {typo}"


def test_a_size_for_an_hf_folder_is_a_usage_error(tmp_path, capsys):
    argv = ["encode", str(SAMPLE), "-o", str(tmp_path / "c"), "--model", str(TINY_VIQ), "--size", "16k"]
    assert viq(argv) == EXIT_USAGE
    assert "is a folder in HF format (config.json), not the authors' layout: drop --size 16k" in _error(capsys)


def test_the_library_loaders_say_no_folder_first(no_hub):
    typo = "examples/tiny-vq"
    calls = [lambda: ViQModel.from_pretrained(typo), lambda: ViQModel.from_pretrained(typo, viq_size="16k"),
             lambda: ViQForConditionalGeneration.from_pretrained(typo), lambda: ViQPipeline.from_pretrained(typo),
             lambda: load_vlm(viq=typo, llm="examples/tiny-qwen"), lambda: load_vlm(typo)]  # fmt: skip
    for call in calls:
        with pytest.raises(NoSuchFolderError, match=f"^no folder {typo}$"):
            call()


def _script(args, cwd, env=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "src"), **(env or {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
                          stdin=subprocess.DEVNULL)  # fmt: skip


def _last_lines(stderr: str) -> list[str]:
    """stderr without the warnings that libraries print while importing."""
    return [line for line in stderr.strip().splitlines() if line.strip() and "Warning" not in line
            and not line.startswith("  warnings.warn")]  # fmt: skip


def test_sft_before_make_tiny_qwen_names_the_script_in_one_line(tmp_path):
    recipe = REPO / "training" / "recipes" / "tiny_cpu.yaml"
    args = [str(REPO / "training" / "sft.py"), "--config", str(recipe), "--viq_model", str(TINY_VIQ),
            "--dataset_name", str(REPO / "training" / "data" / "tiny" / "llava.json"),
            "--output_dir", str(tmp_path / "out")]  # fmt: skip
    result = _script(args, cwd=tmp_path)  # no outputs/tiny-qwen here
    assert result.returncode == EXIT_USAGE, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [  # nothing else: no traceback, no FutureWarning from the recipe
        "sft.py: error: no folder outputs/tiny-qwen; make it first with "
        "`python examples/make_tiny_qwen.py --output-dir outputs/tiny-qwen`"]  # fmt: skip

    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text() + "\nno_such_option: 1\n")
    result = _script([str(REPO / "training" / "sft.py"), "--config", str(bad)], cwd=tmp_path)
    assert result.returncode == EXIT_USAGE
    assert _last_lines(result.stderr)[-1].startswith("sft.py: error: ") and "Traceback" not in result.stderr
    assert "no_such_option" in result.stderr

    result = _script(args + ["--debug"], cwd=tmp_path)
    assert result.returncode == EXIT_USAGE and "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("sft.py: error: no folder outputs/tiny-qwen")


def test_demo_and_converter_offline_say_it_in_one_line(tmp_path):
    result = _script([str(REPO / "examples" / "demo.py"), "--model", "XuminYu/ViQ_weights", "--size", "16k",
                      "--output-dir", str(tmp_path / "demo")], cwd=tmp_path)  # fmt: skip
    assert result.returncode == EXIT_HUB, result.stderr[-2000:]
    (line,) = _last_lines(result.stderr)
    assert line.startswith("demo.py: error: XuminYu/ViQ_weights: ") and "not in the local Hugging Face cache" in line

    result = _script(["-m", "transformers_viq.convert_viq_original_to_hf", "--size", "16k", "-o", str(tmp_path / "c")],
                     cwd=tmp_path, env={"VIQ_DEBUG": "1"})  # fmt: skip
    assert result.returncode == EXIT_HUB and "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("convert_viq_original_to_hf: error: XuminYu/ViQ_weights")
