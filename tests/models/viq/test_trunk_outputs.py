"""What transformers' common tests expect of the tokenizer and the Stage-1 encoder, asserted directly: hidden states
and attention probabilities (counts, shapes, block-diagonal), `eager` equal to `sdpa`, `return_dict=False` equal to
the output object, `get_input_embeddings`, gradients reaching the returned hidden states and attentions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transformers_viq import ViQImageProcessor, ViQVisionModel
from transformers_viq.models.viq.configuration_viq import ViQVisionConfig
from transformers_viq.testing import TINY_VISION


SIZES = ((48, 80), (32, 32), (64, 16))  # 15, 4 and 4 patches


def packed_images(sizes=SIZES, seed=0):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in sizes]
    return ViQImageProcessor(do_resize=False)(images=images, return_tensors="pt")


def encoder(implementation="sdpa", seed=0, **overrides):
    torch.manual_seed(seed)
    config = ViQVisionConfig(**{**TINY_VISION, **overrides})
    return ViQVisionModel._from_config(config, attn_implementation=implementation).eval()


def test_hidden_states_are_the_embeddings_and_every_block_output():
    model = encoder()
    inputs = packed_images()
    total = int(inputs["pixel_values"].shape[0])
    out = model(**inputs, output_hidden_states=True)
    assert len(out.hidden_states) == TINY_VISION["num_hidden_layers"] + 1
    assert all(tuple(h.shape) == (total, TINY_VISION["hidden_size"]) for h in out.hidden_states)
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    embeddings = model.embeddings(inputs["pixel_values"], [tuple(g) for g in inputs["image_grid_hw"].tolist()])
    assert torch.equal(out.hidden_states[0], embeddings)
    assert model(**inputs).hidden_states is None  # off unless asked
    model.config.output_hidden_states = True  # or asked through the config
    assert len(model(**inputs).hidden_states) == TINY_VISION["num_hidden_layers"] + 1


def test_eager_attentions_are_per_block_and_block_diagonal():
    model = encoder("eager")
    inputs = packed_images()
    lengths = [h * w for h, w in inputs["image_grid_hw"].tolist()]
    total, heads = sum(lengths), TINY_VISION["num_attention_heads"]
    out = model(**inputs, output_attentions=True)
    assert len(out.attentions) == TINY_VISION["num_hidden_layers"]
    for weights in out.attentions:
        assert tuple(weights.shape) == (1, heads, total, total)
        torch.testing.assert_close(weights.sum(-1), torch.ones(1, heads, total))
        segments = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
        across = segments[:, None] != segments[None, :]
        assert torch.equal(weights[..., across], torch.zeros_like(weights[..., across]))
    # asking for the probabilities does not change the result
    torch.testing.assert_close(out.last_hidden_state, model(**inputs).last_hidden_state, rtol=1e-5, atol=1e-6)
    model.config.output_attentions = True
    assert len(model(**inputs).attentions) == TINY_VISION["num_hidden_layers"]


@pytest.mark.parametrize("implementation", ["sdpa", "viq_sdpa", "viq_per_image"])
def test_eager_matches_the_sdpa_kernels(implementation):
    eager, other = encoder("eager"), encoder(implementation)
    other.load_state_dict(eager.state_dict())
    inputs = packed_images()
    expected, out = eager(**inputs), other(**inputs)
    torch.testing.assert_close(out.last_hidden_state, expected.last_hidden_state, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.pooler_output, expected.pooler_output, rtol=1e-4, atol=1e-5)


def test_return_dict_false_is_the_output_as_a_tuple():
    model = encoder("eager")
    inputs = packed_images()
    out = model(**inputs, output_hidden_states=True, output_attentions=True)
    as_tuple = model(**inputs, output_hidden_states=True, output_attentions=True, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 5
    for field, value in zip(("last_hidden_state", "pooler_output", "hidden_states", "attentions", "image_grid_hw"),
                            as_tuple):  # fmt: skip
        torch.testing.assert_close(value, getattr(out, field), rtol=0, atol=0)
    model.config.return_dict = False
    assert isinstance(model(**inputs), tuple)


def test_return_dict_false_on_the_tokenizer(tiny_model):
    inputs = packed_images()
    out = tiny_model(**inputs)
    as_tuple = tiny_model(**inputs, return_dict=False)
    assert len(as_tuple) == len(out.to_tuple()) == 5
    for value, expected in zip(as_tuple, out.to_tuple()):
        torch.testing.assert_close(value, expected, rtol=0, atol=0)


def test_the_tokenizer_returns_its_trunk_hidden_states_and_attentions(tiny_model):
    inputs = packed_images()
    total = int(inputs["pixel_values"].shape[0])
    layers = tiny_model.config.vision_config.num_hidden_layers
    out = tiny_model(**inputs, output_hidden_states=True)
    assert len(out.hidden_states) == layers + 1 and out.attentions is None
    assert all(tuple(h.shape) == (total, TINY_VISION["hidden_size"]) for h in out.hidden_states)
    eager = type(tiny_model)._from_config(tiny_model.config, attn_implementation="eager").eval()
    eager.load_state_dict(tiny_model.state_dict())
    attentions = eager(**inputs, output_attentions=True).attentions
    assert len(attentions) == layers
    assert tuple(attentions[0].shape) == (1, TINY_VISION["num_attention_heads"], total, total)


def test_input_embeddings_are_the_patch_embedding(tiny_model):
    model = encoder()
    assert model.get_input_embeddings() is model.embeddings.patch_embedding
    assert tiny_model.get_input_embeddings() is tiny_model.embeddings.patch_embedding
    replacement = torch.nn.Conv2d(3, TINY_VISION["hidden_size"], kernel_size=16, stride=16)
    model.set_input_embeddings(replacement)
    assert model.embeddings.patch_embedding is replacement


@pytest.mark.parametrize("sizes", [SIZES[:1], SIZES], ids=["one image", "three images"])
def test_gradients_reach_the_returned_hidden_states_and_attentions(sizes):
    model = encoder("eager").train()
    out = model(**packed_images(sizes), output_hidden_states=True, output_attentions=True)
    out.hidden_states[0].retain_grad()
    out.attentions[0].retain_grad()
    out.last_hidden_state.sum().backward()
    assert out.hidden_states[0].grad is not None and out.hidden_states[0].grad.abs().sum() > 0
    assert out.attentions[0].grad is not None and out.attentions[0].grad.abs().sum() > 0


def test_gradients_reach_the_tokenizers_hidden_states_through_its_code_features(tiny_model):
    """The tokenizer's first output is its integer codes; what backpropagates is the code features (straight-through
    FSQ), and from them the gradient reaches the trunk's hidden states."""
    model = type(tiny_model)._from_config(tiny_model.config, attn_implementation="eager").train()
    model.load_state_dict(tiny_model.state_dict())
    out = model(**packed_images(), output_hidden_states=True, output_attentions=True)
    assert not out.image_codes.is_floating_point()
    out.hidden_states[0].retain_grad()
    out.attentions[0].retain_grad()
    out.last_hidden_state.sum().backward()
    assert out.hidden_states[0].grad is not None and out.hidden_states[0].grad.abs().sum() > 0
    assert out.attentions[0].grad is not None and out.attentions[0].grad.abs().sum() > 0
