"""Model cards, preset folders under modeling_cards/, and pushing to a fake Hub (no network)."""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor

from transformers_viq import (
    FSQ_LEVEL_PRESETS,
    ViQConfig,
    ViQForConditionalGeneration,
    ViQImageProcessor,
    ViQProcessor,
    ViQQwenConfig,
    model_cards,
    push_to_hub_with_card,
    render_tokenizer_card,
    render_vlm_card,
)
from transformers_viq.testing import IMAGE_PAD_ID, make_tiny_model, qwen_tokenizer, tiny_config


REPO_ROOT = Path(__file__).resolve().parents[1]
QWEN = "Qwen/Qwen2.5-0.5B-Instruct"
TINY_TEXT = dict(model_type="qwen2", vocab_size=151669, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=64, max_position_embeddings=1024,
                 tie_word_embeddings=True)  # fmt: skip


def front_matter(text: str) -> dict:
    return ModelCard(text).data.to_dict()


# ---------------------------------------------------------------------------------------------------------------
# Cards
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", list(FSQ_LEVEL_PRESETS))
def test_tokenizer_card(size):
    card = render_tokenizer_card(size, repo_id=f"someone/viq-fsq-{size}")
    data = front_matter(str(card))  # parse the rendered text back, as the Hub would
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-feature-extraction"
    assert data["license"] == "apache-2.0"
    assert data["base_model"] == "XuminYu/ViQ_weights"
    assert data["tags"] == ["viq", "visual-tokenizer", "fsq", "siglip2", "image-tokenizer"]

    text = card.text
    levels = list(FSQ_LEVEL_PRESETS[size])
    codebook = ViQConfig.from_preset(size).codebook_size
    assert f"FSQ-{size}" in text and f"`{levels}`" in text and str(codebook) in text
    for snippet in (
        "pip install transformers-viq",
        "import transformers_viq",
        f'AutoModel.from_pretrained("someone/viq-fsq-{size}")',
        f'ViQModel.from_pretrained("XuminYu/ViQ_weights", viq_size="{size}")',
        "model.encode(**inputs)",
        "https://github.com/yuxumin/ViQ",
        "https://huggingface.co/XuminYu/ViQ_weights",
        "Stage 1, text-aligned",
        "Stage 2-2, quantization",
        "Apache License 2.0",
    ):
        assert snippet in text, snippet


def test_tokenizer_card_of_a_custom_config():
    card = render_tokenizer_card(tiny_config(levels=(8, 5, 5, 5)))
    assert "FSQ-custom" in card.text and "`[8, 5, 5, 5]`" in card.text and "1000" in card.text
    assert "width 32, 2 layers" in card.text
    with pytest.raises(ValueError, match="Unknown ViQ size"):
        render_tokenizer_card("3k")


def test_vlm_card():
    config = ViQQwenConfig(vision_config=ViQConfig.from_preset("64k").to_dict(), text_config=dict(TINY_TEXT))
    card = render_vlm_card(
        config,
        base_model=QWEN,
        training_details="SFT on `lmms-lab/LLaVA-OneVision-Data`, 1000 steps, lr 2e-5; projector and LLM trained.",
        repo_id="someone/viq-vlm",
        datasets=["lmms-lab/LLaVA-OneVision-Data"],
        tags=["sft"],
    )
    data = front_matter(str(card))
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-text-to-text"
    assert data["base_model"] == [QWEN, "XuminYu/ViQ_weights"]
    assert data["datasets"] == ["lmms-lab/LLaVA-OneVision-Data"]
    assert {"viq", "vision-language", "qwen2.5", "sft"} <= set(data["tags"])
    assert data["license"] == "apache-2.0"
    text = card.text
    for snippet in (
        "FSQ-64k",
        "`[8, 8, 8, 5, 5, 5]`",
        "64000",
        "import transformers_viq",
        'AutoModelForImageTextToText.from_pretrained("someone/viq-vlm")',
        "ViQForConditionalGeneration",
        "ViQProcessor",
        "image_codes=codes",
        "`(h/2) * (w/2 + 1) + 2`",
        "1000 steps, lr 2e-5",
        f"https://huggingface.co/{QWEN}",
    ):
        assert snippet in text, snippet

    mlp = render_vlm_card(ViQQwenConfig(text_config=dict(TINY_TEXT), projector_type="mlp"), base_model=QWEN)
    assert "`(h/2) * (w/2)`" in mlp.text and "No training details were given" in mlp.text


def test_vlm_card_base_model_from_the_text_config():
    named = ViQQwenConfig(text_config={**TINY_TEXT, "_name_or_path": "Qwen/Qwen2.5-1.5B"})
    assert front_matter(str(render_vlm_card(named)))["base_model"] == ["Qwen/Qwen2.5-1.5B", "XuminYu/ViQ_weights"]
    with pytest.raises(ValueError, match="needs `base_model`"):
        render_vlm_card(ViQQwenConfig(text_config=dict(TINY_TEXT)))


# ---------------------------------------------------------------------------------------------------------------
# Preset folders
# ---------------------------------------------------------------------------------------------------------------


def test_preset_folders_are_in_sync_with_the_code(tmp_path):
    model_cards.write_presets(tmp_path)
    committed = REPO_ROOT / "modeling_cards"
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert folders == sorted(f"viq-fsq-{size}" for size in FSQ_LEVEL_PRESETS)
    for folder in folders:
        names = sorted(p.name for p in (tmp_path / folder).iterdir())
        assert names == ["README.md", "config.json", "preprocessor_config.json"]
        assert (committed / folder).is_dir(), f"modeling_cards/{folder} is missing"
        assert sorted(p.name for p in (committed / folder).iterdir()) == names
        for name in names:
            assert filecmp.cmp(tmp_path / folder / name, committed / folder / name, shallow=False), (
                f"modeling_cards/{folder}/{name} is out of date: run "
                "`python -m transformers_viq.model_cards --write-presets modeling_cards`"
            )


@pytest.mark.parametrize("size", ["2k", "64k"])
def test_preset_folder_loads_with_the_auto_classes(size):
    folder = REPO_ROOT / "modeling_cards" / f"viq-fsq-{size}"
    config = AutoConfig.from_pretrained(folder)
    assert isinstance(config, ViQConfig) and config.preset == size
    assert config.architectures == ["ViQModel"]
    expected = ViQConfig.from_preset(size)
    expected.architectures = ["ViQModel"]
    assert config.to_diff_dict() == expected.to_diff_dict()
    processor = AutoImageProcessor.from_pretrained(folder)
    assert type(processor) is ViQImageProcessor and processor.to_dict() == ViQImageProcessor().to_dict()
    card = ModelCard.load(folder / "README.md")
    assert card.data.pipeline_tag == "image-feature-extraction"


def test_write_presets_command_line(tmp_path, capsys):
    assert model_cards.main(["--write-presets", str(tmp_path), "--sizes", "4k"]) == 0
    assert sorted(p.name for p in (tmp_path / "viq-fsq-4k").iterdir()) == [
        "README.md",
        "config.json",
        "preprocessor_config.json",
    ]
    assert "viq-fsq-4k" in capsys.readouterr().out
    assert json.loads((tmp_path / "viq-fsq-4k" / "config.json").read_text())["fsq_levels"] == [8, 8, 4, 4, 4]


# ---------------------------------------------------------------------------------------------------------------
# Pushing to a fake Hub
# ---------------------------------------------------------------------------------------------------------------


class FakeHfApi:
    """Records the calls `push_to_hub_with_card` makes and keeps the committed files in a folder."""

    instances: list[FakeHfApi] = []

    def __init__(self, *args, store: Path | None = None, **kwargs):
        self.calls = []
        self.files: dict[str, bytes] = {}
        self.store = store
        FakeHfApi.instances.append(self)

    def create_repo(self, repo_id, token=None, private=None, exist_ok=False, **kwargs):
        self.calls.append(("create_repo", repo_id, private, exist_ok))
        return SimpleNamespace(repo_id=repo_id)

    def create_branch(self, repo_id, branch, token=None, exist_ok=False, **kwargs):
        self.calls.append(("create_branch", repo_id, branch, exist_ok))

    def create_commit(self, repo_id, operations, commit_message, token=None, revision=None, create_pr=False, **kw):
        self.calls.append(("create_commit", repo_id, commit_message, revision, create_pr))
        for operation in operations:
            self.files[operation.path_in_repo] = Path(operation.path_or_fileobj).read_bytes()
            if self.store is not None:
                target = self.store / operation.path_in_repo
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(operation.path_or_fileobj, target)
        return SimpleNamespace(oid="0" * 40, commit_url=f"https://huggingface.co/{repo_id}/commit/0")


@pytest.fixture
def fake_hub(monkeypatch):
    FakeHfApi.instances.clear()
    monkeypatch.setattr(model_cards, "HfApi", FakeHfApi)
    return FakeHfApi.instances


def test_push_tokenizer_with_card(fake_hub):
    model = make_tiny_model()
    commit = push_to_hub_with_card([model, ViQImageProcessor()], "someone/tiny-viq", private=True)
    assert commit.oid == "0" * 40
    (api,) = fake_hub
    assert [call[0] for call in api.calls] == ["create_repo", "create_commit"]
    assert api.calls[0] == ("create_repo", "someone/tiny-viq", True, True)
    assert api.calls[1][2] == "Upload ViQModel, ViQImageProcessor with model card"
    weights = {"README.md", "config.json", "model.safetensors", "preprocessor_config.json"}
    code = {"configuration_viq.py", "modeling_viq.py", "image_processing_viq.py"}
    assert weights | code <= set(api.files) and all(name.endswith(".py") for name in set(api.files) - weights)
    assert json.loads(api.files["config.json"])["auto_map"] == {
        "AutoConfig": "configuration_viq.ViQConfig", "AutoModel": "modeling_viq.ViQModel"}  # fmt: skip
    assert json.loads(api.files["preprocessor_config.json"])["auto_map"] == {
        "AutoImageProcessor": "image_processing_viq.ViQImageProcessor"}  # fmt: skip
    assert "trust_remote_code=True" in api.files["README.md"].decode()
    assert model.config.auto_map == {}  # the pushed model itself is unchanged (an empty map, written nowhere)
    data = front_matter(api.files["README.md"].decode())
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-feature-extraction"
    assert data["base_model"] == "XuminYu/ViQ_weights"
    assert "viq" in data["tags"]
    assert 'AutoModel.from_pretrained("someone/tiny-viq")' in api.files["README.md"].decode()


def test_push_without_code_uploads_weights_only_and_the_card_says_what_to_install(fake_hub):
    push_to_hub_with_card([make_tiny_model(), ViQImageProcessor()], "someone/tiny-viq", remote_code=False)
    (api,) = fake_hub
    assert sorted(api.files) == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
    assert "auto_map" not in json.loads(api.files["config.json"])
    readme = api.files["README.md"].decode()
    assert "trust_remote_code" not in readme and "install `transformers-viq` and import it first" in readme


def test_push_vlm_and_processor_then_load_them_back(fake_hub, tmp_path):
    viq = make_tiny_model()
    torch.manual_seed(0)
    config = ViQQwenConfig(vision_config=viq.config.to_dict(), text_config=dict(TINY_TEXT))
    model = ViQForConditionalGeneration(config).eval()
    processor = ViQProcessor(tokenizer=qwen_tokenizer())
    card = render_vlm_card(model.config, base_model=QWEN, training_details="Nothing: a test.", repo_id="me/vlm")

    model_cards.push_to_hub_with_card(
        [model, processor], "me/vlm", card, commit_message="first", revision="dev", api=FakeHfApi(store=tmp_path)
    )
    (api,) = fake_hub
    assert [call[0] for call in api.calls] == ["create_repo", "create_branch", "create_commit"]
    assert api.calls[-1] == ("create_commit", "me/vlm", "first", "dev", False)
    assert {
        "README.md",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "processor_config.json",
        "chat_template.jinja",
        "tokenizer.json",
        "tokenizer_config.json",
    } <= set(api.files)
    data = front_matter(api.files["README.md"].decode())
    assert data["pipeline_tag"] == "image-text-to-text"
    assert data["base_model"] == [QWEN, "XuminYu/ViQ_weights"]
    assert {"viq", "vision-language", "qwen2.5"} <= set(data["tags"])

    # What was committed is a working checkpoint: the Auto classes load it and the processor's output drives it.
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is ViQForConditionalGeneration and type(loaded_processor) is ViQProcessor
    assert loaded.config.image_token_id == loaded_processor.image_token_id == IMAGE_PAD_ID
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
    codes = viq.encode(**ViQImageProcessor(size_divisor=32)(images=[torch.zeros(3, 64, 96, dtype=torch.uint8)],
                                                           return_tensors="pt"))  # fmt: skip
    inputs = loaded_processor.apply_chat_template(
        messages, image_codes=codes.image_codes, image_grid_hw=codes.image_grid_hw, add_generation_prompt=True,
        tokenize=True, return_dict=True, return_tensors="pt",
    )
    with torch.no_grad():
        generated = loaded.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert generated.shape == (1, inputs["input_ids"].shape[1] + 2)


def test_push_errors(fake_hub):
    with pytest.raises(ValueError, match="both write 'preprocessor_config.json'"):
        push_to_hub_with_card([ViQImageProcessor(), ViQImageProcessor(size_divisor=32)], "me/x", "card")
    with pytest.raises(TypeError, match="has no `save_pretrained`"):
        push_to_hub_with_card(object(), "me/x", "card")
    with pytest.raises(ValueError, match="No default model card"):
        push_to_hub_with_card(ViQImageProcessor(), "me/x")
    assert all(not api.calls for api in fake_hub)  # nothing reached the Hub


def test_default_card_of_a_tokenizer_model():
    model = SimpleNamespace(config=ViQConfig.from_preset("8k"))  # only the config is read
    card = model_cards.default_card(model, repo_id="me/viq-8k")
    assert "FSQ-8k" in card.text and card.data.pipeline_tag == "image-feature-extraction"
    assert 'AutoModel.from_pretrained("me/viq-8k")' in card.text


def test_default_cards_of_pushed_models_are_viq_cards(fake_hub):
    model = make_tiny_model()
    push_to_hub_with_card([model, ViQImageProcessor()], "me/tiny-viq")
    torch.manual_seed(0)
    vlm = ViQForConditionalGeneration(ViQQwenConfig(vision_config=model.config.to_dict(), text_config=dict(TINY_TEXT)))
    push_to_hub_with_card([vlm, ViQProcessor(tokenizer=qwen_tokenizer())], "me/vlm", base_model=QWEN,
                          training_details="Two steps of SFT on a toy set.")  # fmt: skip
    tokenizer_api, vlm_api = fake_hub
    assert front_matter(tokenizer_api.files["README.md"].decode())["pipeline_tag"] == "image-feature-extraction"
    assert "preprocessor_config.json" in tokenizer_api.files
    readme = vlm_api.files["README.md"].decode()
    assert front_matter(readme)["pipeline_tag"] == "image-text-to-text"
    assert "Two steps of SFT on a toy set." in readme
    assert {"processor_config.json", "model.safetensors"} <= set(vlm_api.files)


def test_save_for_hub_takes_the_card_arguments_of_push_to_hub(tmp_path):
    save_for_hub = model_cards.save_for_hub
    torch.manual_seed(0)
    vlm = ViQForConditionalGeneration(ViQQwenConfig(vision_config=make_tiny_model().config.to_dict(),
                                                    text_config=dict(TINY_TEXT)))  # fmt: skip
    processor = ViQProcessor(tokenizer=qwen_tokenizer())
    with pytest.raises(ValueError, match=r"needs `base_model`.*to save_for_hub"):  # a local LLM: no parent to name
        save_for_hub([vlm, processor], tmp_path / "no-base")
    files = save_for_hub([vlm, processor], tmp_path / "vlm", base_model=QWEN,
                         training_details="Two steps of SFT on a toy set.")  # fmt: skip
    readme = (tmp_path / "vlm" / "README.md").read_text()
    assert "README.md" in files and QWEN in front_matter(readme)["base_model"]
    assert "Two steps of SFT on a toy set." in readme
    assert AutoModelForImageTextToText.from_pretrained(tmp_path / "vlm").config.projector_type == "pooled"
    with pytest.raises(ValueError, match="either `card` or"):
        save_for_hub(vlm, tmp_path / "both", card="A card.", base_model=QWEN)
    save_for_hub(make_tiny_model(), tmp_path / "tok", base_model="me/viq-weights")  # a tokenizer's source weights
    assert front_matter((tmp_path / "tok" / "README.md").read_text())["base_model"] == "me/viq-weights"
