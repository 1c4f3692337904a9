"""
transformers' common tests (`ModelTesterMixin`, `ConfigTester`, `ImageProcessingTestMixin` of transformers' own
`tests/`) on `ViQModel`, `ViQVisionModel` and `ViQImageProcessor`, with tiny configs, as transformers runs its
in-tree models. The mixins come from transformers' sdist, fetched by `tests/models/transformers_common.py`
(`make common-tests`); without it this module is skipped, with that reason.

Each skip below names the in-tree precedent or the issue's out-of-scope entry it follows.
"""

from __future__ import annotations

import sys
import unittest
from pathlib import Path

import pytest
import torch


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import transformers_common  # noqa: E402


try:
    modeling_common = transformers_common.import_common("test_modeling_common")
    configuration_common = transformers_common.import_common("test_configuration_common")
    image_processing_common = transformers_common.import_common("test_image_processing_common")
except ModuleNotFoundError as error:
    pytest.skip(str(error), allow_module_level=True)

from transformers_viq import ViQConfig, ViQImageProcessor, ViQModel, ViQVisionConfig, ViQVisionModel  # noqa: E402


pytestmark = pytest.mark.slow

TINY_VISION = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
               "patch_size": 4, "position_embedding_size": 8}  # fmt: skip
# three images of different grids, packed: the batch dimension of these models is the number of images
GRIDS = [[2, 3], [3, 2], [2, 2]]


@pytest.fixture(autouse=True, scope="module")
def base_models_as_in_tree():
    # registered as AutoModel
    with transformers_common.in_tree_names(
        MODEL_MAPPING_NAMES={"viq": "ViQModel", "viq_vision_model": "ViQVisionModel"}
    ):
        yield


class ViQModelTester:
    """Tiny configs and packed inputs (`pixel_values` `(sum_i h_i*w_i, 3*p*p)`, `image_grid_hw` `(num_images, 2)`)."""

    def __init__(self, parent, vision: bool = False):
        self.parent = parent
        self.vision = vision
        self.batch_size = len(GRIDS)
        self.num_hidden_layers = TINY_VISION["num_hidden_layers"]
        self.hidden_size = TINY_VISION["hidden_size"]
        self.num_attention_heads = TINY_VISION["num_attention_heads"]
        self.is_training = True

    def get_config(self):
        if self.vision:
            return ViQVisionConfig(**TINY_VISION)
        return ViQConfig(vision_config=dict(TINY_VISION), fsq_levels=[8, 5, 5, 5], quantizer_attention_dim=16,
                         fusion_num_layers=1, quantizer_num_layers=1, embedder_num_residual_layers=1,
                         include_decoder=False)  # fmt: skip

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        patch = TINY_VISION["patch_size"]
        num_patches = sum(h * w for h, w in GRIDS)
        pixel_values = modeling_common.floats_tensor([num_patches, 3 * patch * patch])
        grid = torch.tensor(GRIDS, dtype=torch.long, device=pixel_values.device)
        return config, {"pixel_values": pixel_values, "image_grid_hw": grid}


class ViQModelTest(modeling_common.ModelTesterMixin, unittest.TestCase):
    all_model_classes = (ViQModel,)
    test_resize_embeddings = False
    has_attentions = False

    def setUp(self):
        self.model_tester = ViQModelTester(self)
        self.config_tester = configuration_common.ConfigTester(self, config_class=ViQConfig, has_text_modality=False)

    def test_config(self):
        self.config_tester.run_common_tests()


class ViQVisionModelTest(modeling_common.ModelTesterMixin, unittest.TestCase):
    all_model_classes = (ViQVisionModel,)
    test_resize_embeddings = False

    def setUp(self):
        self.model_tester = ViQModelTester(self, vision=True)
        self.config_tester = configuration_common.ConfigTester(self, config_class=ViQVisionConfig,
                                                               has_text_modality=False)  # fmt: skip

    def test_config(self):
        self.config_tester.run_common_tests()


class ViQImageProcessingTester(image_processing_common.ImageProcessingTester):
    def __init__(self, parent, **kwargs):
        kwargs.setdefault("min_resolution", 20)
        kwargs.setdefault("max_resolution", 80)
        super().__init__(parent, **kwargs)

    def _get_image_processing_classes(self):
        # transformers finds an in-tree model's classes in its static mapping from the test folder's name; ViQ is
        # registered at import instead, with a PIL backend only (no torchvision beside the CPU torch: out of scope)
        return {"pil": ViQImageProcessor}

    def expected_output_image_shape(self, images):
        # packed output: one row per 16x16 patch of every image, 3*16*16 values each
        processor = ViQImageProcessor(**self.prepare_image_processor_dict())
        grids = processor(images=images, return_tensors="pt")["image_grid_hw"]
        return int(grids.prod(-1).sum()), 3 * processor.patch_size**2


class ViQImageProcessingTest(image_processing_common.ImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = ViQImageProcessingTester

    @unittest.skip("out of scope (issue 20): ViQ ships a PIL backend only; PyPI torchvision does not import here")
    def test_new_models_require_torchvision_backend(self):
        pass

    @unittest.skip("out of scope (issue 20): 4-channel numpy input")
    def test_call_numpy_4_channels(self):
        pass
