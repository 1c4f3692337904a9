"""
The VLM, its processor and the image processor behave as transformers' in-tree VLMs do where transformers' common
tests look (issue 20, point 6). Each behaviour is asserted here directly, so that the default suite checks it without
the common tests (tests/models/viq_qwen/test_common_viq_qwen.py, which need transformers' sdist).
"""

from __future__ import annotations

import copy
import inspect
import json
import warnings

import numpy as np
import pytest
import torch
from transformers import DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPooling

from transformers_viq import ViQImageProcessor, ViQProcessor, get_num_image_tokens
from transformers_viq.testing import make_tiny_vlm, qwen_tokenizer


IMAGE = 5  # image token id of the tiny vocabulary of `make_tiny_vlm()`


@pytest.fixture(scope="module")
def vlm():
    return make_tiny_vlm()


def pixels(sizes=((64, 96), (32, 64))):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in sizes]
    return ViQImageProcessor(size_divisor=32)(images=images, return_tensors="pt")


def prompt(grids, pieces=((1, 2), (3, 4), (6, 7))):
    """One sample's ids: text pieces with each image's run of placeholder tokens between them."""
    ids = list(pieces[0])
    for (h, w), piece in zip(grids, pieces[1:]):
        ids += [IMAGE] * get_num_image_tokens(h, w) + list(piece)
    return ids


# ---- get_image_features and the image outputs ------------------------------------------------------------------


def test_get_image_features_returns_pooled_embeddings_per_image(vlm):
    inputs = pixels()
    grids = inputs["image_grid_hw"].tolist()
    out = vlm.get_image_features(**inputs)
    assert isinstance(out, BaseModelOutputWithPooling)
    vision_hidden = vlm.config.vision_config.vision_config.hidden_size
    assert out.last_hidden_state.shape == (sum(h * w for h, w in grids), vision_hidden)
    assert [tuple(e.shape) for e in out.pooler_output] == [(get_num_image_tokens(h, w), 32) for h, w in grids]

    as_tuple = vlm.get_image_features(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], out.last_hidden_state)

    # the codes give the same embeddings (no trunk run, no trunk hidden states)
    codes = vlm.model.vision_tower.encode(**inputs, return_pooler_output=False).image_codes
    from_codes = vlm.get_image_features(image_codes=codes, image_grid_hw=inputs["image_grid_hw"])
    for a, b in zip(from_codes.pooler_output, out.pooler_output):
        torch.testing.assert_close(a, b)
    assert from_codes.hidden_states is None


def test_outputs_carry_the_image_outputs(vlm):
    inputs = pixels()
    input_ids = torch.tensor([prompt(inputs["image_grid_hw"].tolist())])
    for model in (vlm.model, vlm):
        out = model(input_ids=input_ids, **inputs)
        assert isinstance(out.image_outputs, BaseModelOutputWithPooling)
        assert len(out.image_outputs.pooler_output) == 2
        torch.testing.assert_close(out.image_hidden_states, torch.cat(out.image_outputs.pooler_output))
        assert model(input_ids=torch.tensor([[1, 2, 3]])).image_outputs is None


def test_pre_encoded_images_give_the_same_logits(vlm):
    inputs = pixels()
    input_ids = torch.tensor([prompt(inputs["image_grid_hw"].tolist())])
    encoded = vlm.model.get_image_features(**inputs)
    direct = vlm(input_ids=input_ids, **inputs).logits
    torch.testing.assert_close(vlm(input_ids=input_ids, mm_encoder_outputs={"image": encoded}).logits, direct)
    with pytest.raises(ValueError, match="not both"):
        vlm(input_ids=input_ids, mm_encoder_outputs={"image": encoded}, **inputs)


# ---- return_dict, the cache name ------------------------------------------------------------------------------


def test_return_dict_false_gives_tuples(vlm):
    inputs = pixels()
    input_ids = torch.tensor([prompt(inputs["image_grid_hw"].tolist())])
    out = vlm(input_ids=input_ids, **inputs)
    as_tuple = vlm(input_ids=input_ids, return_dict=False, **inputs)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], out.logits)
    base = vlm.model(input_ids=input_ids, return_dict=False, **inputs)
    assert isinstance(base, tuple)
    torch.testing.assert_close(base[0], vlm.model(input_ids=input_ids, **inputs).last_hidden_state)

    # the config's `return_dict=False` as well (the base model inside still hands its fields over by name)
    config = copy.deepcopy(vlm.config)
    config.return_dict = False
    model = type(vlm)(config).eval()
    model.load_state_dict(vlm.state_dict())
    from_config = model(input_ids=input_ids, **inputs)
    assert isinstance(from_config, tuple)
    torch.testing.assert_close(from_config[0], out.logits)


def test_past_key_values_is_the_deprecated_name_of_cache(vlm):
    input_ids = torch.tensor([[1, 2, 3, 4]])
    text_config = vlm.config.get_text_config(decoder=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = vlm(input_ids=input_ids, past_key_values=DynamicCache(config=text_config), use_cache=True)
    assert any("`past_key_values` is deprecated" in str(w.message) for w in caught)
    new = vlm(input_ids=input_ids, cache=DynamicCache(config=text_config), use_cache=True)
    torch.testing.assert_close(old.logits, new.logits)
    assert old.cache.get_seq_length() == new.cache.get_seq_length() == 4


# ---- image tokens without images ------------------------------------------------------------------------------


def test_image_token_without_images_is_an_ordinary_token(vlm):
    ids = torch.tensor([[1, IMAGE, 2, IMAGE]])
    logits = vlm(input_ids=ids).logits
    embeds = vlm.get_input_embeddings()(ids)
    torch.testing.assert_close(logits, vlm(inputs_embeds=embeds).logits)
    # with images, the count check stays
    inputs = pixels()
    with pytest.raises(ValueError, match="do not match"):
        vlm(input_ids=ids, **inputs)


def test_tied_lm_head_is_sharded_with_its_embedding(vlm):
    assert vlm.config.tie_word_embeddings and vlm.lm_head.weight is vlm.get_input_embeddings().weight
    plan = vlm.tp_plan
    assert plan.get("lm_head") == "colwise_gather_output"
    assert "model.language_model.embed_tokens" in plan  # both sides of the tie are split by vocabulary


# ---- generation -----------------------------------------------------------------------------------------------


def generation_inputs():
    inputs = pixels(((32, 32), (32, 64)))
    grids = inputs["image_grid_hw"].tolist()
    first = [1, 2] + [IMAGE] * get_num_image_tokens(*grids[0]) + [3]
    second = [4] + [IMAGE] * get_num_image_tokens(*grids[1]) + [6, 7]
    width = max(len(first), len(second))
    input_ids = torch.tensor([[0] * (width - len(s)) + s for s in (first, second)])  # left padded
    attention_mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in (first, second)])
    return {"input_ids": input_ids, "attention_mask": attention_mask, **inputs}


def test_assisted_decoding_with_images_matches_plain_decoding(vlm):
    inputs = generation_inputs()
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    plain = vlm.generate(**inputs, **kwargs)
    other = make_tiny_vlm(seed=1)  # an assistant with other weights
    # one prompt at a time: transformers' assisted decoding takes a batch of one
    for row in range(2):
        sample = {key: inputs[key][row : row + 1] for key in ("input_ids", "attention_mask")}
        patches = inputs["image_grid_hw"].prod(-1).tolist()
        start = sum(patches[:row])
        sample["pixel_values"] = inputs["pixel_values"][start : start + patches[row]]
        sample["image_grid_hw"] = inputs["image_grid_hw"][row : row + 1]
        alone = vlm.generate(**sample, **kwargs)
        assert torch.equal(alone[0, -6:], plain[row, -6:])
        # greedy assisted decoding keeps the main model's tokens whatever the assistant proposes
        for assistant in (vlm, other):
            assert torch.equal(vlm.generate(**sample, assistant_model=assistant, **kwargs), alone)
        codes = vlm.model.vision_tower.encode(sample["pixel_values"], sample["image_grid_hw"]).image_codes
        from_codes = {key: value for key, value in sample.items() if key != "pixel_values"}
        assert torch.equal(vlm.generate(**from_codes, image_codes=codes, assistant_model=other, **kwargs), alone)


def test_generate_from_codes_encodes_them_once(vlm):
    inputs = generation_inputs()
    codes = vlm.model.vision_tower.encode(inputs["pixel_values"], inputs["image_grid_hw"]).image_codes
    from_codes = dict(inputs, image_codes=codes)
    from_codes.pop("pixel_values")
    kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(vlm.generate(**from_codes, **kwargs), vlm.generate(**inputs, **kwargs))


def test_beam_search_expands_pre_encoded_images_per_sample(vlm):
    """`generate` copies each sample's pre-encoded images for its beams (one image, then two, per sample)."""
    inputs = pixels(((32, 32), (32, 64), (64, 64)))
    grids = inputs["image_grid_hw"].tolist()
    samples = [[1] + [IMAGE] * get_num_image_tokens(*grids[0]) + [3],
               [4] + [IMAGE] * get_num_image_tokens(*grids[1]) + [2] + [IMAGE] * get_num_image_tokens(*grids[2])]
    width = max(map(len, samples))
    input_ids = torch.tensor([[0] * (width - len(s)) + s for s in samples])
    attention_mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in samples])
    kwargs = dict(max_new_tokens=4, num_beams=3, do_sample=False, pad_token_id=0)
    batch = vlm.generate(input_ids=input_ids, attention_mask=attention_mask, **inputs, **kwargs)
    patches = [h * w for h, w in grids]
    for row, images in enumerate(([0], [1, 2])):
        start, count = sum(patches[: images[0]]), sum(patches[i] for i in images)
        alone = vlm.generate(input_ids=input_ids[row : row + 1], attention_mask=attention_mask[row : row + 1],
                             pixel_values=inputs["pixel_values"][start : start + count],
                             image_grid_hw=inputs["image_grid_hw"][images[0] : images[-1] + 1], **kwargs)  # fmt: skip
        assert torch.equal(alone[0, -4:], batch[row, -4:])


def test_generate_returns_hidden_states_with_images(vlm):
    inputs = generation_inputs()
    out = vlm.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=0, output_hidden_states=True,
                       return_dict_in_generate=True)  # fmt: skip
    assert len(out.hidden_states) == 3  # one entry per generated token
    assert len(out.hidden_states[0]) == vlm.config.text_config.num_hidden_layers + 1


def test_generate_with_and_without_position_ids_agree(vlm):
    inputs = generation_inputs()
    position_ids = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    without = vlm.generate(**inputs, **kwargs)
    with_positions = vlm.generate(**inputs, position_ids=position_ids, **kwargs)
    assert torch.equal(with_positions, without)


# ---- image processor and processor ----------------------------------------------------------------------------


def test_image_processor_holds_the_pixel_budget_in_size(tmp_path):
    processor = ViQImageProcessor(min_pixels=32 * 32, max_pixels=96 * 96)
    assert dict(processor.size) == {"shortest_edge": 32 * 32, "longest_edge": 96 * 96}
    assert (processor.min_pixels, processor.max_pixels) == (32 * 32, 96 * 96)
    from_dict = ViQImageProcessor.from_dict({"min_pixels": 32 * 32, "max_pixels": 96 * 96})
    assert dict(from_dict.size) == dict(processor.size)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["size"] == {"shortest_edge": 32 * 32, "longest_edge": 96 * 96}
    assert "min_pixels" not in saved and "max_pixels" not in saved
    assert dict(ViQImageProcessor.from_pretrained(tmp_path).size) == dict(processor.size)

    image = np.zeros((300, 400, 3), dtype=np.uint8)
    grid = processor(images=[image], return_tensors="pt")["image_grid_hw"].tolist()
    small = processor(images=[image], max_pixels=48 * 64, return_tensors="pt")["image_grid_hw"].tolist()
    assert grid == [[5, 6]] and small == [[3, 4]]  # a call's max_pixels overrides the budget for that call
    assert dict(processor.size)["longest_edge"] == 96 * 96


def test_processor_padding_side_is_held_once(tmp_path):
    processor = ViQProcessor(tokenizer=copy.deepcopy(qwen_tokenizer()))  # the processor sets its padding side
    assert "padding_side" not in inspect.signature(ViQProcessor.__init__).parameters
    assert processor.padding_side == processor.tokenizer.padding_side == "left"
    texts = ["a b c <|image_pad|>", "a"]
    images = [np.zeros((32, 32, 3), dtype=np.uint8)]
    left = processor(text=texts, images=images, padding=True, return_tensors="pt")["attention_mask"]
    right = processor(text=texts, images=images, padding=True, padding_side="right", return_tensors="pt")
    assert left[1, 0] == 0 and right["attention_mask"][1, -1] == 0
    processor.save_pretrained(tmp_path)
    assert "padding_side" not in json.loads((tmp_path / "processor_config.json").read_text())
    assert ViQProcessor.from_pretrained(tmp_path).padding_side == "left"


def test_processor_input_names_and_call_annotations():
    processor = ViQProcessor(tokenizer=copy.deepcopy(qwen_tokenizer()))  # the processor sets its padding side
    inputs = processor(text=["<|image_pad|> hi"], images=[np.zeros((32, 32, 3), dtype=np.uint8)], return_tensors="pt")
    assert set(inputs.keys()) == set(processor.model_input_names)
    parameters = inspect.signature(processor.__call__).parameters
    assert parameters["images"].annotation is not inspect.Parameter.empty
    assert parameters["text"].annotation is not inspect.Parameter.empty
