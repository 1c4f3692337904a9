"""Loading what users name first: the authors' layout (no config.json) says which call works; models pushed with
this package load where only transformers is installed (`trust_remote_code=True`). CPU, tiny models, no network."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel

import transformers_viq
from transformers_viq import (
    FSQ_LEVEL_PRESETS,
    ViQConfig,
    ViQForConditionalGeneration,
    ViQImageProcessor,
    ViQModel,
    ViQProcessor,
)
from transformers_viq.model_cards import save_for_hub
from transformers_viq.original_checkpoint import OriginalLayoutError
from transformers_viq.testing import make_tiny_model, make_tiny_vlm, qwen_tokenizer, tiny_config


@pytest.fixture
def tiny_presets(monkeypatch):
    """The released sizes as tiny architectures (same codebooks), so that suggested calls can be run here."""
    tiny = classmethod(lambda cls, size, **kwargs: tiny_config(levels=FSQ_LEVEL_PRESETS[size], **kwargs))
    monkeypatch.setattr(ViQConfig, "from_preset", tiny)


def _suggested_calls(message: str) -> list[str]:
    return re.findall(r"\w+\.from_pretrained\([^()]*(?:\([^()]*\))?[^()]*\)", message)


PACKAGE = Path(transformers_viq.__file__).parent


def test_the_authors_layout_without_a_size_says_which_call_works(authors_layout, tiny_presets):
    with pytest.raises(OriginalLayoutError) as info:
        ViQModel.from_pretrained(authors_layout)
    message = str(info.value)
    assert "authors' published layout" in message and "no config.json" in message and "size 16k" in message
    calls = _suggested_calls(message)
    assert calls == [f"ViQModel.from_pretrained({str(authors_layout)!r}, viq_size='16k')",
                     f"AutoModel.from_pretrained({str(authors_layout)!r}, config=ViQConfig.from_preset('16k'))"]
    for call in calls:  # each call the message names does load the model
        model = eval(call, {"ViQModel": ViQModel, "AutoModel": AutoModel, "ViQConfig": ViQConfig})
        assert type(model) is ViQModel and model.config.fsq_levels == [8, 8, 8, 6, 5]
    assert f"viq convert --source {authors_layout} --size 16k" in message

    # the config alone does not silently become the default architecture either
    with pytest.raises(OriginalLayoutError, match="viq_size='16k'"):
        ViQConfig.from_pretrained(authors_layout)
    # a config that is not a released preset: still told what the folder is
    with pytest.raises(OriginalLayoutError, match="viq_size='16k'"):
        ViQModel.from_pretrained(authors_layout, config=tiny_config(levels=(5, 5)))
    # a VLM cannot come from the tokenizer's layout: the message says how to build one
    with pytest.raises(OriginalLayoutError, match=r"ViQForConditionalGeneration\.from_viq_and_qwen\("):
        ViQForConditionalGeneration.from_pretrained(authors_layout)


def test_the_bare_auto_call_needs_a_config_and_a_folder_without_one_is_an_error(authors_layout, tmp_path):
    # transformers' own refusal, which the README explains: the Auto classes read the model type from config.json
    with pytest.raises(ValueError, match="model_type"):
        AutoModel.from_pretrained(authors_layout)
    with pytest.raises(OSError, match="has no config.json: it is neither a model in Hugging Face format nor"):
        ViQModel.from_pretrained(tmp_path)


def test_a_converted_folder_loads_with_the_bare_auto_call(tmp_path):
    model = make_tiny_model()
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is ViQModel
    torch.testing.assert_close(loaded.state_dict()["head.probe"], model.state_dict()["head.probe"])


# ------------------------------------------------------------------------------------------------------------------
# The remote-code route
# ------------------------------------------------------------------------------------------------------------------
WITHOUT_THE_PACKAGE = """
import importlib.abc, sys
class NoTransformersViq(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "transformers_viq" or name.startswith("transformers_viq."):
            raise ModuleNotFoundError("transformers_viq is not installed here")
sys.meta_path.insert(0, NoTransformersViq())
try:
    import transformers_viq
    raise SystemExit("transformers_viq is importable")
except ModuleNotFoundError:
    pass
"""

LOAD_WITH_REMOTE_CODE = """
import json, sys
import numpy as np, torch
from transformers import AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoProcessor
from transformers import AutoModelForImageTextToText
tokenizer_dir, vlm_dir, inputs_file = sys.argv[1:4]
result = {}
try:
    AutoModelForImageTextToText.from_pretrained(vlm_dir)
except ValueError as error:
    result["without_trust"] = str(error)
viq = AutoModel.from_pretrained(tokenizer_dir, trust_remote_code=True).eval()
image_processor = AutoImageProcessor.from_pretrained(tokenizer_dir, trust_remote_code=True)
image = np.load(inputs_file)
with torch.no_grad():
    result["codes"] = viq.encode(**image_processor(images=[image], return_tensors="pt")).image_codes.tolist()
vlm = AutoModelForImageTextToText.from_pretrained(vlm_dir, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(vlm_dir, trust_remote_code=True)
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(images=[image], text=prompt, return_tensors="pt")
with torch.no_grad():
    result["logits"] = vlm(**inputs).logits[0, -1, :50].tolist()
    result["generated"] = vlm.generate(**inputs, max_new_tokens=3, do_sample=False)[0].tolist()
result["causal_lm"] = type(AutoModelForCausalLM.from_pretrained(vlm_dir, trust_remote_code=True)).__name__
result["classes"] = [type(o).__module__ for o in (viq, image_processor, vlm, processor)]
print("\\nRESULT " + json.dumps(result))
"""


def test_pushed_bundles_carry_model_files_only(tmp_path):
    """The code that travels with a pushed model: at most 5 files for a tokenizer, 8 for a VLM, all from `models/`."""
    tokenizer = qwen_tokenizer()
    viq = save_for_hub([make_tiny_model(), ViQImageProcessor()], tmp_path / "viq", card="A tiny tokenizer.")
    vlm = save_for_hub([make_tiny_vlm(tokenizer), ViQProcessor(tokenizer=tokenizer)], tmp_path / "vlm", card="A VLM.")
    viq_code, vlm_code = ({name for name in files if name.endswith(".py")} for files in (viq, vlm))
    model_files = {path.name for path in (PACKAGE / "models").rglob("*.py")} - {"__init__.py"}
    assert viq_code <= model_files and vlm_code <= model_files, (viq_code | vlm_code) - model_files
    assert {"configuration_viq.py", "modeling_viq.py", "image_processing_viq.py"} <= viq_code and len(viq_code) <= 5
    assert viq_code | {"configuration_viq_qwen.py", "modeling_viq_qwen.py", "processing_viq.py"} == vlm_code
    assert len(vlm_code) <= 8
    for name in vlm_code:  # flat: no import reaches outside the folder the files land in
        source = (tmp_path / "vlm" / name).read_text()
        assert not re.search(r"^\s*from \.\.", source, flags=re.MULTILINE), name
        assert "transformers_viq" not in re.findall(r"^\s*(?:from|import) (\w+)", source, flags=re.MULTILINE), name


def test_pushed_models_load_with_transformers_alone(tmp_path):
    tokenizer = qwen_tokenizer()
    viq, image_processor = make_tiny_model(), ViQImageProcessor(max_pixels=64 * 64)
    vlm, processor = make_tiny_vlm(tokenizer), ViQProcessor(tokenizer=tokenizer)
    files = save_for_hub([viq, image_processor], tmp_path / "viq", card="A tiny tokenizer.")
    save_for_hub([vlm, processor], tmp_path / "vlm", card="A tiny VLM.")
    assert {"configuration_viq.py", "modeling_viq.py", "image_processing_viq.py"} <= set(files)
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    np.save(tmp_path / "image.npy", image)

    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_PACKAGE + LOAD_WITH_REMOTE_CODE, str(tmp_path / "viq"),
         str(tmp_path / "vlm"), str(tmp_path / "image.npy")],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.split("\nRESULT ")[-1])
    assert all(module.startswith("transformers_modules.") for module in got["classes"]), got["classes"]
    assert "trust_remote_code=True" in got["without_trust"]  # not a dead end: transformers says what to pass

    # the code that travelled with the files computes what this package computes
    with torch.no_grad():
        codes = viq.encode(**image_processor(images=[image], return_tensors="pt")).image_codes
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
        inputs = processor(images=[image], text=processor.apply_chat_template(messages, add_generation_prompt=True),
                           return_tensors="pt")  # fmt: skip
        logits = vlm(**inputs).logits[0, -1, :50]
        generated = vlm.generate(**inputs, max_new_tokens=3, do_sample=False)[0]
    assert got["codes"] == codes.tolist()
    torch.testing.assert_close(torch.tensor(got["logits"]), logits, rtol=1e-4, atol=1e-5)
    assert got["generated"] == generated.tolist()
    assert got["causal_lm"] == "ViQForConditionalGeneration"
    config = json.loads((tmp_path / "vlm" / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM",
                                       "AutoModelForImageTextToText"}  # fmt: skip
    # saving for the Hub leaves the objects themselves as they were: a later plain save writes no auto_map
    vlm.save_pretrained(tmp_path / "plain")
    assert "auto_map" not in json.loads((tmp_path / "plain" / "config.json").read_text())
    assert not list((tmp_path / "plain").glob("*.py"))
