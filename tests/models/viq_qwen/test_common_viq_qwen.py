"""
transformers' common tests (`ModelTesterMixin`, `ConfigTester`, `ProcessorTesterMixin` of transformers' own
`tests/`) on `ViQQwenModel` / `ViQForConditionalGeneration` and `ViQProcessor`, with tiny configs, as transformers
runs its in-tree VLMs. The mixins come from transformers' sdist, fetched by `tests/models/transformers_common.py`
(`make common-tests`); without it this module is skipped, with that reason.

transformers' `GenerationTesterMixin` is not in the sdist, so no generate() common test runs here; this project's
own tests (tests/models/viq_qwen/test_transformers_conventions.py) check the generation behaviours issue 20 names.
Each skip below names the in-tree precedent or the issue's out-of-scope entry it follows.
"""

from __future__ import annotations

import copy
import sys
import unittest
from pathlib import Path

import pytest
import torch


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import transformers_common  # noqa: E402


modeling_common, configuration_common, processing_common = transformers_common.import_common_or_skip(
    "test_modeling_common", "test_configuration_common", "test_processing_common"
)

from transformers_viq import (  # noqa: E402
    ViQForConditionalGeneration,
    ViQImageProcessor,
    ViQProcessor,
    ViQQwenConfig,
    ViQQwenModel,
)
from transformers_viq.testing import qwen_tokenizer  # noqa: E402


pytestmark = pytest.mark.slow

TINY_VISION = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
               "patch_size": 4, "position_embedding_size": 8}  # fmt: skip
TINY_VIQ = {"vision_config": TINY_VISION, "fsq_levels": [8, 5, 5, 5], "quantizer_attention_dim": 16,
            "fusion_num_layers": 1, "quantizer_num_layers": 1, "embedder_num_residual_layers": 1,
            "include_decoder": False}  # fmt: skip
TINY_TEXT = {"model_type": "qwen2", "vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 37,
             "max_position_embeddings": 512, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}  # fmt: skip
IMAGE_TOKEN_ID = 3
GRID = (2, 2)  # every image: a 2x2 patch grid -> one pooled window, 1 * (1 + 1) + 2 = 4 LLM tokens


@pytest.fixture(autouse=True, scope="module")
def base_models_as_in_tree():
    # registered as: AutoModel, AutoModelForImageTextToText, AutoModelForCausalLM
    with transformers_common.in_tree_names(
        MODEL_MAPPING_NAMES={"viq_qwen": "ViQQwenModel"},
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES={"viq_qwen": "ViQForConditionalGeneration"},
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES={"viq_qwen": "ViQForConditionalGeneration"},
    ):
        yield


class ViQQwenModelTester:
    def __init__(self, parent):
        self.parent = parent
        self.batch_size = 3
        self.text_seq_length = 7
        self.num_image_tokens = 4
        self.seq_length = self.text_seq_length + self.num_image_tokens
        self.num_hidden_layers = TINY_TEXT["num_hidden_layers"]
        self.hidden_size = TINY_TEXT["hidden_size"]
        self.num_attention_heads = TINY_TEXT["num_attention_heads"]
        self.vocab_size = TINY_TEXT["vocab_size"]
        self.pad_token_id = TINY_TEXT["pad_token_id"]
        self.image_token_id = IMAGE_TOKEN_ID
        self.is_training = True

    def get_config(self):
        return ViQQwenConfig(vision_config=copy.deepcopy(TINY_VIQ), text_config=dict(TINY_TEXT),
                             image_token_id=IMAGE_TOKEN_ID)  # fmt: skip

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        patch = TINY_VISION["patch_size"]
        h, w = GRID
        pixel_values = modeling_common.floats_tensor([self.batch_size * h * w, 3 * patch * patch])
        grid = torch.tensor([GRID] * self.batch_size, dtype=torch.long, device=pixel_values.device)
        input_ids = modeling_common.ids_tensor([self.batch_size, self.seq_length], self.vocab_size - 4) + 4
        input_ids[:, : self.num_image_tokens] = IMAGE_TOKEN_ID
        attention_mask = torch.ones_like(input_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values,
                  "image_grid_hw": grid}  # fmt: skip
        return config, inputs


class ViQForConditionalGenerationModelTest(modeling_common.ModelTesterMixin, unittest.TestCase):
    all_model_classes = (ViQQwenModel, ViQForConditionalGeneration)
    _is_composite = True

    def setUp(self):
        self.model_tester = ViQQwenModelTester(self)
        self.config_tester = configuration_common.ConfigTester(self, config_class=ViQQwenConfig,
                                                               has_text_modality=False)  # fmt: skip

    def test_config(self):
        self.config_tester.run_common_tests()

    @unittest.skip("transformers' GenerationTesterMixin is not in its sdist (see transformers_common.py)")
    def test_generation_tester_mixin_inheritance(self):
        pass

    # Out of scope (issue 20): these require a gradient on every parameter, and the vision tower's pooling head and
    # final LayerNorm, which the VLM does not use, get none (checked: those are the only parameters they name). Llava
    # skips the same three. (As expected failures they would not read cleanly: each parameter is a subtest.)
    @unittest.skip("out of scope (issue 20): the vision tower's unused pooling head gets no gradient (Llava skips)")
    def test_training_gradient_checkpointing(self):
        pass

    @unittest.skip("out of scope (issue 20): the vision tower's unused pooling head gets no gradient (Llava skips)")
    def test_training_gradient_checkpointing_use_reentrant(self):
        pass

    @unittest.skip("out of scope (issue 20): the vision tower's unused pooling head gets no gradient (Llava skips)")
    def test_training_gradient_checkpointing_use_reentrant_false(self):
        pass

    @unittest.skip("out of scope (issue 20): the vision tower's unused pooling head gets no gradient (Llava skips)")
    def test_training_gradient_checkpointing_use_reentrant_true(self):
        pass

    @unittest.skip("VLM inputs need images placed per sample for padding-free batches; Llava skips it too")
    def test_flash_attention_2_padding_matches_padding_free_with_position_ids(self):
        pass


class ViQProcessorTest(processing_common.ProcessorTesterMixin, unittest.TestCase):
    processor_class = ViQProcessor

    @classmethod
    def _setup_image_processor(cls):
        return ViQImageProcessor(size_divisor=32, max_pixels=64 * 64)

    @classmethod
    def _setup_tokenizer(cls):
        return copy.deepcopy(qwen_tokenizer())

    # The mixin's test (parameterized into these two) expects one `pixel_values` row per image unless the output has
    # Qwen2-VL's `image_grid_thw`; ViQ's packed output has a row per patch and its grids in `image_grid_hw`.
    @unittest.skip("out of scope (issue 20): the chat-template test is keyed to Qwen2-VL's `image_grid_thw`")
    def test_apply_chat_template_image_0(self):
        pass

    @unittest.skip("out of scope (issue 20): the chat-template test is keyed to Qwen2-VL's `image_grid_thw`")
    def test_apply_chat_template_image_1(self):
        pass
