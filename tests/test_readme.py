"""The README's snippets run as written, with the real model names swapped for tiny checkpoints (CPU, no network).

Every fenced ```python block of README.md runs, in order, in one namespace (as a reader runs them one after another),
in a temporary working folder that has the repository's `assets/`. Before a block runs, each key of
[`SUBSTITUTIONS`] found in it is replaced by its tiny stand-in:

* `"XuminYu/ViQ_weights"` -> a folder in the authors' layout holding a tiny 16k checkpoint; the released sizes are
  1.1B-parameter models, so for this test `ViQConfig.from_preset(size)` gives the tiny architecture with the same
  codebook (that is the only patch; loading, conversion of the keys, encoding and decoding are the real code);
* `"Qwen/Qwen2.5-0.5B-Instruct"` -> a 2-layer Qwen2 with the real Qwen2.5 tokenizer, saved to a folder;
* `"me/viq-vlm"` -> a tiny ViQ VLM and its processor, saved as `push_to_hub` uploads them;
* `"me/viq-16k"` -> the committed smoke checkpoint `examples/tiny-viq` (HF format);
* `"outputs/tiny-sft"` (what the tiny training recipe writes) -> the tiny ViQ VLM above;
* the bundled training images -> their path in the repository (the blocks run in another folder);
* the two full-size sample photographs -> the small ones (the tiny VAE decoder is slow on large images).

A snippet added to the README runs here too. If it names another model or file, add a line to [`SUBSTITUTIONS`]
(a stand-in built by a fixture below); a quoted Hub id (`"owner/name"`) left in a block fails the test, so nothing
here reaches the network. The `viq` and converter command lines of the ```bash blocks are checked against the real
argument parsers.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest
import torch

from transformers_viq import FSQ_LEVEL_PRESETS, ViQConfig, ViQProcessor
from transformers_viq.model_cards import save_for_hub
from transformers_viq.testing import TINY_VAE, make_tiny_vlm, qwen_tokenizer, tiny_config, tiny_text_config
from transformers_viq.testing.reference_checkpoint import make_reference_state_dict


REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# README text -> the stand-in (a function of the fixture's folders). Keys are matched literally, quotes included.
SUBSTITUTIONS = {
    '"XuminYu/ViQ_weights"': lambda f: repr(str(f["authors_layout"])),
    '"Qwen/Qwen2.5-0.5B-Instruct"': lambda f: repr(str(f["qwen"])),
    '"me/viq-vlm"': lambda f: repr(str(f["vlm"])),
    '"me/viq-16k"': lambda f: repr(str(REPO / "examples" / "tiny-viq")),
    '"outputs/tiny-sft"': lambda f: repr(str(f["vlm"])),
    '"training/data/tiny/': lambda f: '"' + str(REPO / "training" / "data" / "tiny") + "/",
    "chelsea_300x451.png": lambda f: "chelsea_small_64x80.png",
    "coffee_200x304.png": lambda f: "coffee_small_48x40.png",
}
HUB_ID = re.compile(r"""["'][A-Za-z0-9][\w.-]*/[\w.-]+["']""")


def blocks(language: str) -> list[tuple[int, str]]:
    """`(line number, code)` of every fenced block of `language` in the README."""
    found, lines = [], README.read_text(encoding="utf-8").splitlines()
    start = None
    for number, line in enumerate(lines, 1):
        if start is None and line.strip() == f"```{language}":
            start = number
        elif start is not None and line.strip() == "```":
            found.append((start + 1, "\n".join(lines[start : number - 1])))
            start = None
    return found


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> dict[str, Path]:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    root = tmp_path_factory.mktemp("readme-models")
    authors_layout = root / "authors"
    checkpoint = authors_layout / "ViQ" / "converted_16k" / "model_viq_fsq_16k.pth"
    checkpoint.parent.mkdir(parents=True)
    torch.save(make_reference_state_dict([8, 8, 8, 6, 5], seed=1, num_layers=2, hidden_size=32, mlp_ratio=2,
                                         fsq_width=16, pos_grid=8, vae_config=TINY_VAE), checkpoint)  # fmt: skip

    tokenizer = qwen_tokenizer()
    torch.manual_seed(0)
    qwen = root / "qwen"
    Qwen2ForCausalLM(Qwen2Config(**tiny_text_config(vocab_size=len(tokenizer)))).save_pretrained(qwen)
    tokenizer.save_pretrained(qwen)

    vlm = root / "vlm"
    save_for_hub([make_tiny_vlm(tokenizer), ViQProcessor(tokenizer=tokenizer)], vlm, card="A tiny test VLM.")
    return {"authors_layout": authors_layout, "qwen": qwen, "vlm": vlm}


def substitute(code: str, stand_ins: dict) -> str:
    for text, stand_in in SUBSTITUTIONS.items():
        code = code.replace(text, stand_in(stand_ins))
    return code


def test_every_python_block_runs(stand_ins, tmp_path, monkeypatch):
    import huggingface_hub.constants

    python = blocks("python")
    assert len(python) >= 6, "the README's Python blocks were not found"
    assert "XuminYu/ViQ_weights" in python[0][1] and "viq_size=" in python[0][1], "the first block loads the weights"
    (tmp_path / "assets").symlink_to(REPO / "assets", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read by transformers at call time
    tiny = classmethod(lambda cls, size, **kwargs: tiny_config(levels=FSQ_LEVEL_PRESETS[size], **kwargs))
    monkeypatch.setattr(ViQConfig, "from_preset", tiny)

    namespace: dict = {"__name__": "__readme__"}
    for line, code in python:
        code = substitute(code, stand_ins)
        left = [match for match in HUB_ID.findall(code) if not Path(match.strip("\"'")).exists()]
        assert not left, f"README.md line {line}: add a stand-in to SUBSTITUTIONS for {left}"
        try:
            exec(compile(code, f"README.md (block at line {line})", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"README.md block at line {line} fails: {type(error).__name__}: {error}") from error
    # what the blocks promise
    assert type(namespace["vlm"]).__name__ == "ViQForConditionalGeneration"
    assert [image.shape[:2] for image in namespace["images"]] == [(64, 80), (48, 40)]  # each photo's own size
    assert (tmp_path / "codes.safetensors").is_file()


def _command_lines(program: str) -> list[tuple[int, list[str]]]:
    found = []
    for line, code in blocks("bash"):
        for offset, text in enumerate(code.replace("\\\n", "  ").splitlines()):  # (continuation lines joined)
            words = shlex.split(text, comments=True)
            if words[: len(program.split())] == program.split():
                found.append((line + offset, words[len(program.split()) :]))
    return found


def test_every_viq_and_converter_command_line_parses():
    from transformers_viq import convert_viq_original_to_hf
    from transformers_viq.cli import build_parser

    commands = _command_lines("viq")
    assert {words[0] for _, words in commands} >= {"encode", "decode", "reconstruct", "convert", "extract"}
    for line, words in commands:
        try:
            build_parser().parse_args(words)
        except SystemExit as stop:
            raise AssertionError(f"README.md line {line}: `viq {' '.join(words)}` does not parse") from stop
    converter = _command_lines("python -m transformers_viq.convert_viq_original_to_hf")
    assert converter
    for line, words in converter:
        convert_viq_original_to_hf.add_arguments(argparse.ArgumentParser()).parse_args(words)


TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt", ".cfg", ".yaml", ".yml", ".json", ".jinja", ".sh"}
SKIPPED = {".venv", ".git", "outputs", ".ruff_cache", ".pytest_cache", "__pycache__"}


def _text_files():
    for path in REPO.rglob("*"):
        if any(part in SKIPPED for part in path.relative_to(REPO).parts) or not path.is_file():
            continue
        if path.suffix in TEXT_SUFFIXES or path.name == "Makefile":
            yield path


def test_nothing_points_to_a_document_users_do_not_have():
    """Every document named in the repository (`docs/x.md`, `eval/README.md`, `NOTES.md`) is in the repository."""
    named = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.md)\b")
    missing = []
    for path in _text_files():
        if path == Path(__file__).resolve():
            continue  # this test names examples
        text = re.sub(r"https?://\S+", "", path.read_text(encoding="utf-8", errors="replace"))
        if "reference-spec" in text or "§" in text:  # sections of the project's private specification
            missing.append(f"{path.relative_to(REPO)}: cites the reference specification")
        for reference in named.findall(text):
            if ("/" not in reference and not reference[0].isupper()) or reference.startswith("outputs/"):
                continue  # a file the code writes (report.md, ...), not a document to read
            if not ((path.parent / reference).exists() or (REPO / reference).exists()):
                missing.append(f"{path.relative_to(REPO)}: {reference}")
    assert not missing, missing
