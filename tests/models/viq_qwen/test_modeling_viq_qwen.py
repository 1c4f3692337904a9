"""ViQForConditionalGeneration on a tiny ViQ and a tiny Qwen2: two ways in, merge, generation, building, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText, Qwen2Config, Qwen2ForCausalLM

from transformers_viq import (
    ViQForConditionalGeneration,
    ViQImageProcessor,
    ViQQwenConfig,
    ViQQwenModel,
    get_num_image_tokens,
)
from transformers_viq.testing import make_tiny_model, make_tiny_vlm, tiny_text_config


IMAGE = 5  # image token id of the tiny vocabulary
TEXT = tiny_text_config()


def make_vlm(projector_type="pooled", seed=0) -> ViQForConditionalGeneration:
    return make_tiny_vlm(projector_type=projector_type, seed=seed)


def images(seed=0, sizes=((64, 96), (32, 32), (32, 64))):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in sizes]


def pixels(imgs):
    return ViQImageProcessor(size_divisor=32)(images=imgs, return_tensors="pt")


def text_with_images(grids, projector_type="pooled", pieces=((1, 2), (3, 4), (6,), (7, 8))):
    """One sample: text pieces with the images' placeholder runs between them."""
    ids = list(pieces[0])
    for (h, w), piece in zip(grids, pieces[1:]):
        ids += [IMAGE] * get_num_image_tokens(h, w, projector_type) + list(piece)
    return ids


@pytest.fixture(scope="module")
def vlm():
    return make_vlm()


def test_logits_from_pixels_and_from_codes_are_identical(vlm):
    inputs = pixels(images())
    grids = inputs["image_grid_hw"].tolist()
    input_ids = torch.tensor([text_with_images(grids)])
    from_pixels = vlm(input_ids=input_ids, **inputs)
    codes = vlm.model.vision_tower.encode(**inputs, return_pooler_output=False).image_codes
    from_codes = vlm(input_ids=input_ids, image_codes=codes, image_grid_hw=inputs["image_grid_hw"])
    assert torch.equal(from_pixels.logits, from_codes.logits)
    assert from_pixels.image_hidden_states.shape == (sum(get_num_image_tokens(h, w) for h, w in grids), 32)


def test_images_really_reach_the_language_model(vlm):
    """Different images, same text: the base model's hidden states after the image differ (the merge happened)."""
    first, second = pixels(images(seed=0)[:1]), pixels([255 - images(seed=0)[0]])
    input_ids = torch.tensor([text_with_images(first["image_grid_hw"].tolist())])
    a = vlm.model(input_ids=input_ids, **first).last_hidden_state
    b = vlm.model(input_ids=input_ids, **second).last_hidden_state
    assert torch.equal(a[:, :2], b[:, :2])  # causal: text before the image is unaffected
    assert not torch.allclose(a[:, -2:], b[:, -2:])


def test_batch_with_several_images_per_sample_and_a_text_only_sample(vlm):
    imgs = images()
    inputs = pixels(imgs)
    grids = inputs["image_grid_hw"].tolist()
    sample_a = text_with_images(grids[:2])
    sample_b = text_with_images(grids[2:], pieces=((9, 9, 9), (10,)))
    text_only = [11, 12, 13]
    length = max(map(len, (sample_a, sample_b, text_only)))
    ids = torch.zeros(3, length, dtype=torch.long)
    mask = torch.zeros(3, length, dtype=torch.long)
    for row, sample in enumerate((sample_a, sample_b, text_only)):
        ids[row, : len(sample)] = torch.tensor(sample)
        mask[row, : len(sample)] = 1
    batched = vlm(input_ids=ids, attention_mask=mask, **inputs).logits
    # each sample alone gives the same logits
    alone_a = vlm(input_ids=torch.tensor([sample_a]), **pixels(imgs[:2])).logits
    alone_text = vlm(input_ids=torch.tensor([text_only])).logits
    torch.testing.assert_close(batched[0, : len(sample_a)], alone_a[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batched[2, :3], alone_text[0], rtol=1e-4, atol=1e-5)


def test_mismatch_and_input_errors(vlm):
    inputs = pixels(images()[:1])
    grids = inputs["image_grid_hw"].tolist()
    good = text_with_images(grids)
    with pytest.raises(ValueError, match=r"text has 9 image tokens .* give 10 embeddings"):
        vlm(input_ids=torch.tensor([good[:3] + good[4:]]), **inputs)
    codes = vlm.model.vision_tower.encode(**inputs).image_codes
    with pytest.raises(ValueError, match="not both"):
        vlm(input_ids=torch.tensor([good]), image_codes=codes, **inputs)
    # the codebook range is checked where codes come in (the tokenizer's `embed_codes`, codes files, collators), not
    # in the forward that training runs every step
    with pytest.raises(ValueError, match="Image 0 has code 15360"):
        vlm.model.vision_tower.embed_codes(torch.full_like(codes, 15360), inputs["image_grid_hw"])


@pytest.mark.parametrize("projector_type", ["pooled", "mlp"])
def test_odd_grids_pool_only_the_patches_they_have(projector_type):
    """Codes made with `viq encode`/`viq extract` defaults (size_divisor=16) have odd grids: the projector completes
    them with partial windows, and an even grid is untouched by that (its output does not depend on the extra row)."""
    vlm = make_vlm(projector_type)
    projector = vlm.model.projector
    odd = ViQImageProcessor(do_resize=False)(images=images(sizes=((48, 80),)), return_tensors="pt")  # 3x5 patches
    assert odd["image_grid_hw"].tolist() == [[3, 5]]
    features = vlm.model.vision_tower(**odd, return_pooler_output=False).last_hidden_state  # (15, 32)
    (tokens,) = projector(features, [(3, 5)])
    assert tokens.shape[0] == get_num_image_tokens(3, 5, projector_type) == (
        2 * 4 + 2 if projector_type == "pooled" else 2 * 3
    )
    # the top-left 2x4 block of the odd grid is an even grid of its own: its windows come out the same
    block = features.view(3, 5, -1)[:2, :4].reshape(8, -1)
    (even,) = projector(block, [(2, 4)])
    if projector_type == "pooled":
        torch.testing.assert_close(tokens[1:3], even[1:3])  # first window row (after the begin token)
        # the corner window holds one patch: softmax pooling over one token is that token
        corner = features.view(3, 5, -1)[2, 4]
        expected = projector.proj_out(projector.act(projector.proj_in(corner)))
        torch.testing.assert_close(tokens[-3], expected)  # last window, before the newline and end tokens
        torch.testing.assert_close(tokens[-2], projector.image_newline)
    else:
        torch.testing.assert_close(tokens[:2], even[:2])
    input_ids = torch.tensor([[1, 2] + [IMAGE] * tokens.shape[0] + [3]])
    logits = vlm(input_ids=input_ids, **odd).logits
    codes = vlm.model.vision_tower.encode(**odd).image_codes
    torch.testing.assert_close(logits, vlm(input_ids=input_ids, image_codes=codes, image_grid_hw=[[3, 5]]).logits)


def test_generate_from_pixels_and_from_codes(vlm):
    inputs = pixels(images()[:2])
    input_ids = torch.tensor([text_with_images(inputs["image_grid_hw"].tolist())])
    codes = vlm.model.vision_tower.encode(**inputs).image_codes
    from_pixels = vlm.generate(input_ids=input_ids, **inputs, max_new_tokens=6, do_sample=False)
    from_codes = vlm.generate(input_ids=input_ids, image_codes=codes, image_grid_hw=inputs["image_grid_hw"],
                              max_new_tokens=6, do_sample=False)  # fmt: skip
    assert from_pixels.shape == (1, input_ids.shape[1] + 6)
    assert torch.equal(from_pixels, from_codes)
    # without a cache the images are used at every step and the result is the same
    no_cache = vlm.generate(input_ids=input_ids, **inputs, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(no_cache, from_pixels)


@pytest.mark.parametrize("projector_type", ["pooled", "mlp"])
def test_save_load_and_auto_classes(tmp_path, projector_type):
    model = make_vlm(projector_type)
    inputs = pixels(images()[:1])
    input_ids = torch.tensor([text_with_images(inputs["image_grid_hw"].tolist(), projector_type)])
    expected = model(input_ids=input_ids, **inputs).logits
    model.save_pretrained(tmp_path)
    for auto in (AutoModelForImageTextToText, AutoModelForCausalLM):
        loaded = auto.from_pretrained(tmp_path).eval()
        assert isinstance(loaded, ViQForConditionalGeneration)
        assert loaded.config.projector_type == projector_type
        assert loaded.lm_head.weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()  # tied (Qwen 0.5B)
        assert loaded.model.vision_tower.quantizer.fsq.basis.tolist() == [1, 8, 64, 512, 3072]
        assert torch.equal(loaded(input_ids=input_ids, **inputs).logits, expected)
    base = AutoModel.from_pretrained(tmp_path)
    assert isinstance(base, ViQQwenModel)


def test_untied_embeddings_for_large_qwen_sizes(tmp_path):
    viq = make_tiny_model()
    config = ViQQwenConfig(vision_config=viq.config.to_dict(), text_config={**TEXT, "tie_word_embeddings": False},
                           image_token_id=IMAGE)  # fmt: skip
    model = ViQForConditionalGeneration(config)
    assert model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    model.save_pretrained(tmp_path)
    loaded = ViQForConditionalGeneration.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.lm_head.weight, model.lm_head.weight)


def test_build_from_a_viq_tokenizer_and_a_qwen_checkpoint(tmp_path):
    viq = make_tiny_model()
    viq.save_pretrained(tmp_path / "viq")
    torch.manual_seed(1)
    qwen = Qwen2ForCausalLM(Qwen2Config(**{k: v for k, v in TEXT.items() if k != "model_type"}))
    qwen.save_pretrained(tmp_path / "qwen")
    model = ViQForConditionalGeneration.from_viq_and_qwen(tmp_path / "viq", tmp_path / "qwen", image_token_id=IMAGE)
    # the tokenizer's reconstruction decoder is left out of the VLM unless asked for
    assert model.model.vision_tower.vae is None and not model.config.vision_config.include_decoder
    with_decoder = ViQForConditionalGeneration.from_viq_and_qwen(tmp_path / "viq", qwen, image_token_id=IMAGE,
                                                                 include_decoder=True)  # fmt: skip
    assert with_decoder.model.vision_tower.vae is not None
    torch.testing.assert_close(model.model.language_model.embed_tokens.weight, qwen.model.embed_tokens.weight)
    torch.testing.assert_close(model.model.language_model.layers[1].mlp.down_proj.weight,
                               qwen.model.layers[1].mlp.down_proj.weight)  # fmt: skip
    torch.testing.assert_close(model.model.vision_tower.quantizer.project_in.weight, viq.quantizer.project_in.weight)
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.get_input_embeddings().weight
    for name, param in model.model.projector.named_parameters():
        assert torch.isfinite(param).all() and param.abs().max() < 10, name
    inputs = pixels(images()[:1])
    input_ids = torch.tensor([text_with_images(inputs["image_grid_hw"].tolist())])
    assert torch.isfinite(model(input_ids=input_ids, **inputs).logits).all()
    model.save_pretrained(tmp_path / "vlm")
    reloaded = ViQForConditionalGeneration.from_pretrained(tmp_path / "vlm").eval()
    assert reloaded.model.vision_tower.vae is None
    expected = model(input_ids=input_ids, **inputs).logits
    torch.testing.assert_close(reloaded(input_ids=input_ids, **inputs).logits, expected)
    # text-only behaviour is the Qwen checkpoint's
    text = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(model(input_ids=text).logits, qwen(input_ids=text).logits)


def test_building_from_a_missing_llm_says_so_at_once(tmp_path, monkeypatch):
    from transformers_viq.hub_utils import HubUnreachableError

    make_tiny_model().save_pretrained(tmp_path / "viq")
    with pytest.raises(FileNotFoundError, match="^no folder ./nowhere/qwen"):
        ViQForConditionalGeneration.from_viq_and_qwen(tmp_path / "viq", "./nowhere/qwen", image_token_id=IMAGE)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a name that may be a Hub id, not cached, and no downloads
    monkeypatch.chdir(tmp_path)  # where no `outputs/` folder exists (`make demo` makes one in the checkout)
    with pytest.raises(HubUnreachableError, match="no local folder 'outputs/tiny-qwen' either"):
        ViQForConditionalGeneration.from_viq_and_qwen(tmp_path / "viq", "outputs/tiny-qwen", image_token_id=IMAGE)


def test_training_a_fresh_projector_that_is_frozen_is_warned_about(tmp_path, caplog):
    """Whatever trains the VLM (TRL, a plain Trainer, a loop), a fresh frozen projector is never silent."""
    from transformers_viq.training import freeze

    viq = make_tiny_model()
    viq.save_pretrained(tmp_path / "viq")
    qwen = Qwen2ForCausalLM(Qwen2Config(**{k: v for k, v in TEXT.items() if k != "model_type"}))
    model = ViQForConditionalGeneration.from_viq_and_qwen(tmp_path / "viq", qwen, image_token_id=IMAGE).train()
    inputs = pixels(images(sizes=((32, 32),)))
    input_ids = torch.tensor([text_with_images(inputs["image_grid_hw"].tolist())])

    def train_step(vlm) -> list[str]:
        caplog.clear()
        vlm(input_ids=input_ids, labels=input_ids, **inputs).loss.backward()
        return [r.getMessage() for r in caplog.records if "freshly initialised projector" in r.getMessage()]

    assert train_step(model) == []  # the projector trains: nothing to say
    freeze(model, vision=True, projector=True, language_model=False)
    assert len(train_step(model)) == 1 and train_step(model) == []  # said once
    model.eval()
    model.save_pretrained(tmp_path / "vlm")
    reloaded = freeze(ViQForConditionalGeneration.from_pretrained(tmp_path / "vlm").train(), projector=True)
    assert train_step(reloaded) == []  # a saved projector is not a fresh one
