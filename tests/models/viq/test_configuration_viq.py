"""ViQConfig: presets, derived codebook size, validation, serialization."""

import pytest
from transformers import AutoConfig

import transformers_viq  # noqa: F401  (registers the Auto classes)
from transformers_viq import FSQ_LEVEL_PRESETS, ViQConfig


@pytest.mark.parametrize(
    "size, levels, codebook_size",
    [
        ("2k", [8, 8, 4, 3, 3], 2304),
        ("4k", [8, 8, 4, 4, 4], 4096),
        ("8k", [8, 8, 8, 4, 4], 8192),
        ("16k", [8, 8, 8, 6, 5], 15360),
        ("64k", [8, 8, 8, 5, 5, 5], 64000),
    ],
)
def test_presets(size, levels, codebook_size):
    config = ViQConfig.from_preset(size)
    assert config.fsq_levels == levels
    assert config.codebook_size == codebook_size
    assert config.preset == size
    vision = config.vision_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (1536, 40, 16)
    assert (vision.intermediate_size, vision.patch_size, vision.position_embedding_size) == (6144, 16, 128)
    assert vision.hidden_act == "gelu" and vision.layer_norm_eps == 1e-6
    assert config.fusion_layer_norm_eps == 1e-5
    assert config.vae_config["base_dim"] == 96 and config.vae_config["z_dim"] == 16


def test_codebook_size_is_derived_not_stored(tmp_path):
    config = ViQConfig.from_preset("64k")
    assert "codebook_size" not in config.to_dict()
    with pytest.raises(ValueError, match="derived from `fsq_levels`"):
        ViQConfig(codebook_size=64000)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, ViQConfig)
    assert loaded.fsq_levels == [8, 8, 8, 5, 5, 5] and loaded.codebook_size == 64000
    assert loaded.vision_config.hidden_size == 1536


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fsq_levels": [8, 1]}, r"fsq_levels.*\[8, 1\]"),
        ({"fsq_levels": []}, "fsq_levels"),
        ({"fsq_levels": "8,8"}, "fsq_levels"),
        ({"fsq_levels": [8, 2.5]}, "fsq_levels"),
        ({"codes_per_patch": 0}, "codes_per_patch.*0"),
        ({"quantizer_attention_dim": 15}, "quantizer_attention_dim.*15"),
        ({"rope_zero_freq_ratio": 1.5}, "rope_zero_freq_ratio.*1.5"),
        ({"vision_config": {"hidden_size": 30, "num_attention_heads": 4}}, r"hidden_size.*30.*num_attention_heads.*4"),
        ({"vision_config": {"patch_size": 0}}, "patch_size.*0"),
        ({"latent_norm_groups": 7}, "latent_norm_groups.*7"),
    ],
)
def test_invalid_values_raise_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ViQConfig(**kwargs)


def test_unknown_preset():
    with pytest.raises(ValueError, match="Unknown ViQ size '32k'.*2k, 4k, 8k, 16k, 64k"):
        ViQConfig.from_preset("32k")


def test_preset_table_is_the_only_source():
    assert set(FSQ_LEVEL_PRESETS) == {"2k", "4k", "8k", "16k", "64k"}
    assert ViQConfig(fsq_levels=[3, 3]).preset is None
