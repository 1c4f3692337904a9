"""Loading the authors' published layout (`ViQ/converted_<size>/model_viq_fsq_<size>.pth`), and conversion to HF
format.

The checkpoints here are tiny but written with the published key names and layout by `reference_checkpoint`
(written from the reference specification, independently of this package's key table).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel

import transformers_viq.convert_viq_original_to_hf as convert
import transformers_viq.original_checkpoint as original_checkpoint
from transformers_viq import ViQImageProcessor, ViQModel
from transformers_viq.testing import TINY_VAE, make_tiny_model, tiny_config
from transformers_viq.testing.reference_checkpoint import make_reference_state_dict


TINY_ARCH = {"num_layers": 2, "hidden_size": 32, "mlp_ratio": 2, "fsq_width": 16, "pos_grid": 8,
             "vae_config": TINY_VAE}
REPO_ID = "XuminYu/ViQ_weights"


def tiny_original_state_dict(levels=(8, 8, 8, 6, 5)):
    return make_reference_state_dict(list(levels), seed=1, **TINY_ARCH)


def write_original(root, state_dict, size="16k"):
    path = root / "ViQ" / f"converted_{size}" / f"model_viq_fsq_{size}.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, path)
    return root


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, size=(4, 5, 3)), np.ones((12, 12, 1))).astype(np.uint8)
    return [rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8), smooth]


def encode(model, images):
    inputs = ViQImageProcessor(do_resize=False)(images=images, return_tensors="pt")
    return model.eval().encode(**inputs)


def test_every_published_key_has_one_rule():
    config = tiny_config()
    for key in tiny_original_state_dict():
        new = original_checkpoint.rename_original_key(key)
        assert new is not None, key
    renamed = [original_checkpoint.rename_original_key(k) for k in tiny_original_state_dict()]
    assert len(set(renamed)) == len(renamed)
    expected = set(ViQModel(config).state_dict())
    assert set(renamed) == expected


def test_load_local_folder_in_authors_layout(tmp_path, images):
    original = tiny_original_state_dict()
    write_original(tmp_path, original)
    model = ViQModel.from_pretrained(tmp_path, viq_size="16k", config=tiny_config())
    # the weights really are the file's (renamed), and fp32
    torch.testing.assert_close(model.quantizer.project_in.weight, original["fusion_block.vq_low.project_in.weight"])
    torch.testing.assert_close(model.embeddings.position_embedding.weight, original["pos_embed"][0])
    assert model.dtype == torch.float32
    out = encode(model, images)
    assert out.image_codes.unique().numel() > 10
    assert model.quantizer.fsq.basis.tolist() == [1, 8, 64, 512, 3072]  # buffers rebuilt after loading
    # the Auto route with an explicit preset config reaches the same loader
    auto = AutoModel.from_pretrained(tmp_path, config=tiny_config())
    assert isinstance(auto, ViQModel)
    assert torch.equal(encode(auto, images).image_codes, out.image_codes)


def test_load_without_the_decoder(tmp_path, images):
    write_original(tmp_path, tiny_original_state_dict())
    full = ViQModel.from_pretrained(tmp_path, viq_size="16k", config=tiny_config())
    encoder_only = ViQModel.from_pretrained(tmp_path, viq_size="16k", config=tiny_config(include_decoder=False))
    assert encoder_only.vae is None and encoder_only.latent_head is None
    assert torch.equal(encode(encoder_only, images).image_codes, encode(full, images).image_codes)


def test_fp32_bf16_mix_in_the_file(tmp_path, images):
    original = tiny_original_state_dict()  # values are bf16-exact, as in the release
    write_original(tmp_path / "fp32", original)
    mixed = {k: (v.to(torch.bfloat16) if i % 2 else v) for i, (k, v) in enumerate(original.items())}
    write_original(tmp_path / "mixed", mixed)
    a = ViQModel.from_pretrained(tmp_path / "fp32", viq_size="16k", config=tiny_config())
    b = ViQModel.from_pretrained(tmp_path / "mixed", viq_size="16k", config=tiny_config())
    assert all(p.dtype == torch.float32 for p in b.parameters())
    assert torch.equal(encode(a, images).image_codes, encode(b, images).image_codes)
    half = ViQModel.from_pretrained(tmp_path / "mixed", viq_size="16k", config=tiny_config(), dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda sd: sd.pop("blocks.1.mlp.fc2.bias"),
         r"does not match .*: 1 missing keys \(encoder.layers.1.mlp.fc2.bias\)"),
        (lambda sd: sd.update({"blocks.7.attn.qkv.weight": torch.zeros(96, 32)}),
         r": 1 unexpected keys \(blocks.7.attn.qkv"),
        (lambda sd: sd.update({"vae_head.global_step": torch.zeros(1)}),
         r"1 unexpected keys \(vae_head.global_step\)"),
        (lambda sd: sd.update({"fusion_block.vq_low.project_in.weight": torch.zeros(6, 32)}),
         r"1 shape mismatches \(fusion_block.vq_low.project_in.weight -> quantizer.project_in.weight: "
         r"file \(6, 32\), model \(5, 32\)\)"),
    ],
)
def test_bad_checkpoints_fail_loudly_listing_keys(tmp_path, damage, message):
    original = tiny_original_state_dict()
    damage(original)
    write_original(tmp_path, original)
    with pytest.raises(ValueError, match=message):
        ViQModel.from_pretrained(tmp_path, viq_size="16k", config=tiny_config())


def test_wrong_size_or_missing_file(tmp_path):
    write_original(tmp_path, tiny_original_state_dict())
    with pytest.raises(FileNotFoundError, match="converted_64k"):
        ViQModel.from_pretrained(tmp_path, viq_size="64k", config=tiny_config(levels=(8, 8, 8, 5, 5, 5)))
    with pytest.raises(ValueError, match="viq_size='64k' needs fsq_levels"):
        ViQModel.from_pretrained(tmp_path, viq_size="64k", config=tiny_config())
    with pytest.raises(ValueError, match="Unknown ViQ size '3k'"):
        ViQModel.from_pretrained(tmp_path, viq_size="3k", config=tiny_config())


def fake_hub_cache(root, state_dict, size="16k"):
    """The Hugging Face cache layout after `hf_hub_download` of the one file (nothing else of the repo)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / "models--XuminYu--ViQ_weights"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    write_original(repo / "snapshots" / commit, state_dict, size)
    return root


def test_hub_id_loads_offline_from_the_cache_only_the_needed_file(tmp_path, images, monkeypatch):
    import huggingface_hub.constants

    cache = fake_hub_cache(tmp_path / "hub", tiny_original_state_dict())
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = ViQModel.from_pretrained(REPO_ID, viq_size="16k", config=tiny_config(), cache_dir=cache)
    local = ViQModel.from_pretrained(
        cache / "models--XuminYu--ViQ_weights" / "snapshots" / "0123456789abcdef0123456789abcdef01234567",
        viq_size="16k", config=tiny_config(),
    )
    assert torch.equal(encode(model, images).image_codes, encode(local, images).image_codes)
    files = sorted(p.name for p in (cache / "models--XuminYu--ViQ_weights").rglob("*") if p.is_file())
    assert files == ["main", "model_viq_fsq_16k.pth"]  # embedder.pth / index_drawer.pth are never needed
    # an explicit preset config finds the cached authors' file too (the AutoModel path)
    assert original_checkpoint.is_original_layout(REPO_ID, "16k", cache_dir=cache)
    assert original_checkpoint.original_layout_sizes("me/mirror", cache_dir=cache) == []  # offline: not provable


def test_converter_writes_hf_format_and_proves_identical_codes(tmp_path, images):
    write_original(tmp_path / "orig", tiny_original_state_dict())
    result = convert.convert_viq_checkpoint(
        str(tmp_path / "orig"), "16k", tmp_path / "hf", config=tiny_config(), check_images=images
    )
    assert result["codes_identical"] == result["codes_checked"] > 0
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        assert (tmp_path / "hf" / name).is_file()
    # the small pixel budget of the check does not leak into the saved processor
    assert ViQImageProcessor.from_pretrained(tmp_path / "hf").to_dict() == ViQImageProcessor().to_dict()
    reloaded = AutoModel.from_pretrained(tmp_path / "hf")
    source = ViQModel.from_pretrained(tmp_path / "orig", viq_size="16k", config=tiny_config())
    assert torch.equal(encode(reloaded, images).image_codes, encode(source, images).image_codes)


# ---- the authors' layout: one decision, subfolders, dtype, offline, damaged files --------------------------------
def test_one_function_decides_the_layout(tmp_path):
    write_original(tmp_path / "orig", tiny_original_state_dict())
    write_original(tmp_path / "orig", tiny_original_state_dict(levels=(8, 8, 8, 5, 5, 5)), size="64k")
    assert original_checkpoint.original_layout_sizes(tmp_path / "orig") == ["16k", "64k"]
    assert original_checkpoint.is_original_layout(tmp_path / "orig", "64k")
    assert not original_checkpoint.is_original_layout(tmp_path / "orig", "2k")
    # a folder with a config.json is HF format, whatever else it holds
    (tmp_path / "orig" / "config.json").write_text("{}")
    assert original_checkpoint.original_layout_sizes(tmp_path / "orig") == []
    assert original_checkpoint.original_layout_sizes(tmp_path / "missing") == []
    assert original_checkpoint.is_original_layout(REPO_ID, "16k")  # the authors' repo: known without a request


def test_subfolder_and_dtype_auto(tmp_path, images):
    original = tiny_original_state_dict()
    write_original(tmp_path / "repo" / "weights", original)
    assert original_checkpoint.is_original_layout(tmp_path / "repo", "16k", subfolder="weights")
    model = ViQModel.from_pretrained(tmp_path / "repo", viq_size="16k", config=tiny_config(), subfolder="weights",
                                     dtype="auto")  # fmt: skip
    assert model.dtype == torch.float32  # the file's dtype
    reference = ViQModel.from_pretrained(tmp_path / "repo" / "weights", viq_size="16k", config=tiny_config())
    assert torch.equal(encode(model, images).image_codes, encode(reference, images).image_codes)
    # the Auto route with a preset config finds the file in the subfolder too
    auto = AutoModel.from_pretrained(tmp_path / "repo", config=tiny_config(), subfolder="weights")
    assert torch.equal(encode(auto, images).image_codes, encode(reference, images).image_codes)


def test_offline_never_asks_the_network(tmp_path, images, monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants

    def no_network(*args, **kwargs):
        raise AssertionError("the network was asked although the caller is offline")

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", no_network)
    monkeypatch.setattr(huggingface_hub, "file_exists", no_network)
    cache = fake_hub_cache(tmp_path / "hub", tiny_original_state_dict())
    # local_files_only, as asked by the caller
    model = ViQModel.from_pretrained(REPO_ID, viq_size="16k", config=tiny_config(), cache_dir=cache,
                                     local_files_only=True)  # fmt: skip
    assert encode(model, images).image_codes.numel() > 0
    assert original_checkpoint.original_layout_sizes("someone/else", cache_dir=cache, local_files_only=True) == []
    # HF_HUB_OFFLINE=1 in the environment
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert original_checkpoint.original_layout_sizes("someone/else", cache_dir=cache) == []
    with pytest.raises(Exception, match="(?i)offline|cannot find|local"):
        ViQModel.from_pretrained("someone/else", viq_size="16k", config=tiny_config(), cache_dir=cache)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_checkpoint_names_the_file_and_says_what_to_do(tmp_path, damage):
    write_original(tmp_path, tiny_original_state_dict())
    path = tmp_path / "ViQ" / "converted_16k" / "model_viq_fsq_16k.pth"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"<html>502 Bad Gateway</html>",
                      "empty": b""}[damage])  # fmt: skip
    with pytest.raises(OSError, match="damaged") as info:
        ViQModel.from_pretrained(tmp_path, viq_size="16k", config=tiny_config())
    message = str(info.value)
    assert str(path) in message and "download it again" in message and "force_download=True" in message


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_hf_format_weights_file_names_the_folder_and_says_what_to_do(tmp_path, damage):
    from transformers_viq import ViQForConditionalGeneration
    from transformers_viq.testing import make_tiny_vlm

    for name, model in (("viq", make_tiny_model()), ("vlm", make_tiny_vlm())):
        folder = tmp_path / name
        model.save_pretrained(folder)
        weights = folder / "model.safetensors"
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"<html>502 Bad Gateway</html>")
        cls = ViQModel if name == "viq" else ViQForConditionalGeneration
        with pytest.raises(OSError, match="damaged or incomplete") as info:
            cls.from_pretrained(folder)
        assert str(folder) in str(info.value) and "force_download=True" in str(info.value)


def test_a_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "ViQ" / "converted_16k" / "model_viq_fsq_16k.pth"
    path.parent.mkdir(parents=True)
    torch.save({"weights": tiny_original_state_dict(), "step": np.int64(7)}, path)  # a NumPy scalar: not a tensor
    with pytest.raises(ValueError, match="objects other than tensors"):
        original_checkpoint.load_original_state_dict(path)


def test_module_converter_and_viq_convert_share_their_options_and_log_progress(tmp_path, images, capsys):
    import argparse

    from transformers_viq.cli import build_parser
    from transformers_viq.logging_utils import configure

    module_options = {o for a in convert.add_arguments(argparse.ArgumentParser())._actions for o in a.option_strings}
    cli = build_parser()
    convert_parser = next(a for a in cli._actions if isinstance(a, argparse._SubParsersAction)).choices["convert"]
    cli_options = {o for a in convert_parser._actions for o in a.option_strings}
    assert module_options - {"-h", "--help"} <= cli_options
    assert {"--config", "--size", "--source", "--output-dir", "--push-to-hub", "--check-image"} <= module_options
    write_original(tmp_path / "orig", tiny_original_state_dict())
    tiny_config().to_json_file(tmp_path / "tiny.json")
    try:
        argv = ["--source", str(tmp_path / "orig"), "--size", "16k", "--config", str(tmp_path / "tiny.json"),
                "--output-dir", str(tmp_path / "hf")]  # fmt: skip
        assert convert.main(argv) == 0
    finally:
        configure("warning")
    captured = capsys.readouterr()
    assert "Loading" in captured.err and "identical codes" in captured.err  # the info lines show
    assert "codes identical" in captured.out
