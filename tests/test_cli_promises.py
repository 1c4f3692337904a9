"""What `viq` promises a new user: exit codes (with --debug too), one code for every Hub failure, no overwriting,
messages in terms of the command's flags, optional extras named, quiet means quiet (CPU, tiny models, no network)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transformers_viq import ViQCodes
from transformers_viq.cli import EXIT_HUB, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, build_parser, main


REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "examples" / "tiny-viq")
SAMPLE = REPO / "assets" / "samples" / "coffee_small_48x40.png"
MODEL_ARGS = ["--model", TINY, "--device", "cpu", "--quiet"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("viq: error: ") and "Traceback" not in err
    return lines[0]


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "in" / "photo.png"
    path.parent.mkdir()
    shutil.copy(SAMPLE, path)
    return path


# ------------------------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------------------------
def test_encode_refuses_an_image_name_and_completes_a_bare_one(tmp_path, image, capsys):
    assert main(["encode", str(image), "-o", str(tmp_path / "x.png"), *MODEL_ARGS]) == EXIT_USAGE
    line = _error_line(capsys)
    assert "-o" in line and ".safetensors" in line and "viq reconstruct" in line
    assert not (tmp_path / "x.png").exists()
    assert main(["encode", str(image), "-o", str(tmp_path / "codes.npz"), *MODEL_ARGS]) == EXIT_USAGE
    assert ".safetensors" in _error_line(capsys)
    assert main(["encode", str(image), "-o", str(tmp_path / "codes"), *MODEL_ARGS]) == EXIT_OK
    assert ViQCodes.load(tmp_path / "codes.safetensors").num_images == 1


def test_no_command_writes_over_an_input_or_an_existing_file(tmp_path, image, capsys):
    codes = tmp_path / "codes.safetensors"
    assert main(["encode", str(image), "-o", str(codes), *MODEL_ARGS]) == EXIT_OK
    before = codes.read_bytes()
    assert main(["encode", str(image), "-o", str(codes), *MODEL_ARGS]) == EXIT_USAGE
    assert "exists; pass --overwrite" in _error_line(capsys)
    assert codes.read_bytes() == before
    assert main(["encode", str(image), "-o", str(codes), "--overwrite", *MODEL_ARGS]) == EXIT_OK

    # an image that happens to carry the codes-file extension is still an input
    disguised = tmp_path / "photo.safetensors"
    shutil.copy(image, disguised)
    assert main(["encode", str(disguised), "-o", str(disguised), "--overwrite", *MODEL_ARGS]) == EXIT_USAGE
    assert "is one of the inputs" in _error_line(capsys)

    # reconstruct into the inputs' own folder would replace photo.png by its reconstruction, even with --overwrite
    folder = image.parent
    assert main(["reconstruct", str(image), "-o", str(folder), "--overwrite", *MODEL_ARGS]) == EXIT_USAGE
    assert "would overwrite the input" in _error_line(capsys) and image.read_bytes() == SAMPLE.read_bytes()

    decoded = tmp_path / "decoded"
    assert main(["decode", str(codes), "-o", str(decoded), *MODEL_ARGS]) == EXIT_OK
    assert main(["decode", str(codes), "-o", str(decoded), *MODEL_ARGS]) == EXIT_USAGE
    assert "already holds photo.png; pass --overwrite" in _error_line(capsys)
    assert main(["decode", str(codes), "-o", str(decoded), "--overwrite", *MODEL_ARGS]) == EXIT_OK
    assert main(["decode", str(codes), "-o", str(codes), *MODEL_ARGS]) == EXIT_USAGE  # a file, not a folder
    assert "is a file; give a folder" in _error_line(capsys)


def test_convert_refuses_its_source_folder_and_an_existing_conversion(tmp_path, authors_layout, capsys):
    from transformers_viq.testing import tiny_config

    config = tmp_path / "tiny.json"
    tiny_config().to_json_file(config)
    base = ["convert", "--size", "16k", "--source", str(authors_layout), "--config", str(config), "-q",
            "--check-image", str(SAMPLE)]  # fmt: skip
    assert main([*base, "-o", str(authors_layout)]) == EXIT_USAGE
    assert "is the --source folder" in _error_line(capsys)
    assert not (authors_layout / "config.json").exists()
    out = tmp_path / "hf"
    assert main([*base, "-o", str(out)]) == EXIT_OK
    assert main([*base, "-o", str(out)]) == EXIT_USAGE
    assert "already holds config.json, model.safetensors, preprocessor_config.json" in _error_line(capsys)
    assert main([*base, "-o", str(out), "--overwrite"]) == EXIT_OK


def test_the_converter_script_and_viq_convert_take_the_same_options():
    from transformers_viq import convert_viq_original_to_hf

    def options(parser) -> set[str]:
        return {option for action in parser._actions for option in action.option_strings}

    script = options(convert_viq_original_to_hf.add_arguments(argparse.ArgumentParser()))
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    command = options(subparsers.choices["convert"])
    assert command - {"--quiet", "-q", "--debug"} == script
    assert {"--size", "--source", "--output-dir", "-o", "--push-to-hub", "--overwrite", "--revision"} <= script


# ------------------------------------------------------------------------------------------------------------------
# Messages and exit codes
# ------------------------------------------------------------------------------------------------------------------
def test_messages_name_the_flags_not_python_arguments(image, tmp_path, capsys):
    assert main(["encode", str(image), "-o", str(tmp_path / "c.safetensors"), "--no-resize", "--max-pixels", "100",
                 *MODEL_ARGS]) == EXIT_USAGE  # fmt: skip
    line = _error_line(capsys)
    assert "photo.png" in line and "--max-pixels 1920" in line and "--no-resize" in line
    assert "max_pixels" not in line and "do_resize" not in line
    two_sizes = tmp_path / "two-sizes"  # the authors' layout with two sizes, neither the default: which one?
    for size in ("2k", "4k"):
        (two_sizes / "ViQ" / f"converted_{size}").mkdir(parents=True)
        (two_sizes / "ViQ" / f"converted_{size}" / f"model_viq_fsq_{size}.pth").touch()
    assert main(["encode", str(image), "-o", str(tmp_path / "c.safetensors"), "--model", str(two_sizes)]) == EXIT_USAGE
    assert _error_line(capsys).endswith("with sizes 2k, 4k: choose one, e.g. --size 4k.")


def test_a_checkpoint_that_does_not_match_names_its_keys(authors_layout, image, tmp_path, capsys):
    # the tiny checkpoint read as the released 16k architecture: every key is named by the loader's first line
    argv = ["encode", str(image), "-o", str(tmp_path / "c.safetensors"), "--model", str(authors_layout), "--size",
            "16k", "--device", "cpu", "-q"]  # fmt: skip
    assert main(argv) == EXIT_RUNTIME
    line = _error_line(capsys)
    assert "does not match" in line and "shape mismatches (" in line and "embeddings.patch_embedding" in line
    assert not line.rstrip().endswith(":")
    # --debug adds the traceback and keeps the code
    assert main([*argv, "--debug"]) == EXIT_RUNTIME
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1] == line


def test_a_missing_extra_is_named_and_leaves_no_output_folder(image, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # scikit-image (the `eval` extra) is not installed
    out = tmp_path / "recon"
    assert main(["reconstruct", str(image), "-o", str(out), *MODEL_ARGS]) == EXIT_RUNTIME
    assert "pip install 'transformers-viq[eval]'" in _error_line(capsys)
    assert not out.exists()
    assert main(["reconstruct", str(image), "-o", str(out), *MODEL_ARGS, "--debug"]) == EXIT_RUNTIME
    assert "Traceback" in capsys.readouterr().err and not out.exists()


def test_extract_names_its_missing_extra_before_loading_anything(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `datasets` (the `eval` extra) is not installed
    out = tmp_path / "codes"
    assert main(["extract", "someone/images", "-o", str(out), *MODEL_ARGS]) == EXIT_RUNTIME
    assert "pip install 'transformers-viq[eval]'" in _error_line(capsys)
    assert not out.exists()


def test_extract_takes_hub_dataset_names_and_refuses_missing_local_ones(tmp_path, capsys):
    parser = build_parser()
    for name in ("someone/images", "mnist"):  # Hub ids go to datasets.load_dataset, not to "no such dataset"
        assert parser.parse_args(["extract", name, "-o", str(tmp_path / "o")]).dataset == name
    for missing in ("./nowhere", "a/b/c", "data.json"):
        assert main(["extract", missing, "-o", str(tmp_path / "o"), *MODEL_ARGS]) == EXIT_USAGE
        assert _error_line(capsys) == f"viq: error: no such dataset: {missing}"
    assert not (tmp_path / "o").exists()


QUIET_SCRIPT = """
import sys
from transformers_viq.cli import main

def encode(*extra):
    assert main(["encode", IMAGE, "-o", OUT, "--overwrite", "--model", TINY, "--device", "cpu", *extra]) == 0

def show_a_datasets_bar(phase):
    import datasets
    sys.stderr.write(f"@@ {phase}\\n")
    datasets.Dataset.from_dict({"a": list(range(8))}).map(lambda row: row)

if DATASETS_FIRST:
    import datasets
    encode()
    show_a_datasets_bar("default")
encode("-q")
from huggingface_hub.utils import are_progress_bars_disabled
from transformers.utils import logging as hf_logging
from transformers_viq.logging_utils import progress_bars_enabled
assert not progress_bars_enabled() and not hf_logging.is_progress_bar_enabled() and are_progress_bars_disabled()
show_a_datasets_bar("quiet")
"""


@pytest.mark.parametrize("datasets_first", [True, False], ids=["datasets-imported-first", "datasets-imported-later"])
def test_quiet_turns_off_every_progress_bar_datasets_included(datasets_first, image, tmp_path):
    values = {"IMAGE": str(image), "OUT": str(tmp_path / "c.safetensors"), "TINY": TINY,
              "DATASETS_FIRST": datasets_first}  # fmt: skip
    code = "".join(f"{name} = {value!r}\n" for name, value in values.items()) + QUIET_SCRIPT
    env = {key: value for key, value in os.environ.items() if key != "HF_DATASETS_DISABLE_PROGRESS_BARS"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    phases = {part.split("\n", 1)[0]: part for part in result.stderr.split("@@ ")[1:]}
    if datasets_first:
        assert "Map" in phases["default"]  # without -q, datasets shows a bar (so the check below can fail)
    assert "Map" not in phases["quiet"], result.stderr


# ------------------------------------------------------------------------------------------------------------------
# The Hub: offline, no network
# ------------------------------------------------------------------------------------------------------------------
NETWORK_SCRIPT = """
import json, socket, sys
attempts = []
real_connect = socket.socket.connect
def counting_connect(self, address):
    attempts.append(address)
    return real_connect(self, address)
socket.socket.connect = counting_connect
from transformers_viq.cli import main
results = {}
for name, argv in json.loads(sys.argv[1]).items():
    attempts.clear()
    results[name] = [main(argv), len(attempts)]
print(json.dumps(results))
"""


@pytest.mark.parametrize("network", ["offline", "refused"])
def test_every_command_fails_fast_with_one_exit_code_when_the_hub_is_out_of_reach(network, image, tmp_path):
    records = tmp_path / "recorded.safetensors"
    ViQCodes(torch.zeros(4, dtype=torch.long), [[1, 1]], [8, 8, 8, 6, 5], model="XuminYu/ViQ_weights",
             viq_size="16k").save(records)  # fmt: skip
    out = tmp_path / "out"
    commands = {
        "encode": ["encode", str(image), "-o", str(out / "c.safetensors")],  # the default model, not cached
        "decode": ["decode", str(records), "-o", str(out / "decoded")],  # the model recorded in the file
        "reconstruct": ["reconstruct", str(image), "-o", str(out / "recon")],
        "convert": ["convert", "--size", "16k", "-o", str(out / "converted")],
        "hf-format repo": ["encode", str(image), "-o", str(out / "c.safetensors"), "--model", "someone/viq-16k"],
        "extract a Hub dataset": ["extract", "someone/images", "-o", str(out / "codes"), *MODEL_ARGS, "-q"],
    }
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home")}  # an empty Hugging Face cache
    env.pop("HF_HUB_OFFLINE", None)
    if network == "offline":
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens on the discard port: connection refused
    result = subprocess.run([sys.executable, "-c", NETWORK_SCRIPT, json.dumps(commands)], capture_output=True,
                            text=True, timeout=300, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == len(commands) and all(line.startswith("viq: error: ") for line in errors), result.stderr
    for (name, (code, attempts)), line in zip(outcome.items(), errors):
        assert code == EXIT_HUB, (name, line)
        if network == "offline":
            assert attempts == 0 and "HF_HUB_OFFLINE=1" in line, (name, line)
        else:  # one request, no retries (huggingface_hub alone retries 5 times, for half a minute)
            assert 1 <= attempts <= 2, (name, attempts)
            assert "cannot reach the Hugging Face Hub at http://127.0.0.1:9" in line, (name, line)
    assert not out.exists()  # nothing was created
