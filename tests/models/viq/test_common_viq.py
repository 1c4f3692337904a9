"""
transformers' common tests (`ModelTesterMixin`, `ConfigTester`, `ImageProcessingTestMixin` of transformers' own
`tests/`) on `ViQModel`, `ViQVisionModel` and `ViQImageProcessor`, with tiny configs, as transformers runs its
in-tree models. The mixins come from transformers' sdist, fetched by `tests/models/transformers_common.py`
(`make common-tests`); without it this module is skipped, with that reason.

Each skip below names the in-tree precedent or the issue's out-of-scope entry it follows.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import transformers_common  # noqa: E402


try:
    modeling_common = transformers_common.import_common("test_modeling_common")
    configuration_common = transformers_common.import_common("test_configuration_common")
    image_processing_common = transformers_common.import_common("test_image_processing_common")
except ModuleNotFoundError as error:
    pytest.skip(str(error), allow_module_level=True)

from transformers_viq import ViQConfig, ViQImageProcessor, ViQModel, ViQVisionConfig, ViQVisionModel  # noqa: E402
from transformers_viq.models.viq.image_processing_viq import smart_resize  # noqa: E402


pytestmark = pytest.mark.slow

TINY_VISION = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
               "patch_size": 4, "position_embedding_size": 8}  # fmt: skip
# three images, packed: the batch dimension of these models is the number of images. One grid for all, as in-tree
# packed models' testers do (Qwen2.5-VL's): the mixin takes one sample as the first `1/batch_size` of every input
# (`test_batching_equivalence`), which is one image only when all have the same number of patches. Mixed grids in one
# pack are this project's own tests' business (tests/test_packed_attention.py and the model tests).
GRIDS = [[2, 3]] * 3


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
        # every kwarg the processor documents, at values other than its defaults where that is possible
        kwargs.setdefault("do_resize", True)
        # min_pixels / max_pixels, held in `size` (the processor also takes them by those names)
        kwargs.setdefault("size", {"shortest_edge": 32 * 32, "longest_edge": 64 * 64})
        kwargs.setdefault("size_divisor", 32)
        kwargs.setdefault("patch_size", 16)
        kwargs.setdefault("do_normalize", True)
        kwargs.setdefault("image_mean", [0.48145466, 0.4578275, 0.40821073])
        kwargs.setdefault("image_std", [0.26862954, 0.26130258, 0.27577711])
        kwargs.setdefault("do_convert_rgb", True)
        super().__init__(parent, **kwargs)

    def _get_image_processing_classes(self):
        # transformers finds an in-tree model's classes in its static mapping from the test folder's name; ViQ is
        # registered at import instead, with a PIL backend only (no torchvision beside the CPU torch: out of scope)
        return {"pil": ViQImageProcessor}

    def expected_output_image_shape(self, images):
        """Packed output: `(sum_i h_i * w_i, 3 * patch * patch)`, the grids from the resize rule itself."""
        patches = 0
        for image in images:
            if isinstance(image, Image.Image):
                width, height = image.size
            elif isinstance(image, np.ndarray):
                height, width = image.shape[:2]
            else:
                height, width = image.shape[1:]
            out_height, out_width = smart_resize(height, width, self.size_divisor, self.size["shortest_edge"],
                                                 self.size["longest_edge"])  # fmt: skip
            patches += (out_height // self.patch_size) * (out_width // self.patch_size)
        return patches, 3 * self.patch_size**2


class ViQImageProcessingTest(image_processing_common.ImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = ViQImageProcessingTester

    # The mixin expects one output row per image; a packed processor returns one row per patch (in-tree Qwen2-VL
    # overrides these three tests the same way): the shapes are checked for one image and for the batch.
    def _check_packed_shapes(self, **input_kind):
        tester = self.image_processor_tester
        for image_processing_class in self.image_processing_classes.values():
            processor = image_processing_class(**self.image_processor_dict)
            images = tester.prepare_image_inputs(equal_resolution=False, **input_kind)
            single = processor(images[0], return_tensors="pt")
            self.assertEqual(tuple(single.pixel_values.shape), tester.expected_output_image_shape(images[:1]))
            self.assertEqual(tuple(single.image_grid_hw.shape), (1, 2))
            batch = processor(images, return_tensors="pt")
            self.assertEqual(tuple(batch.pixel_values.shape), tester.expected_output_image_shape(images))
            self.assertEqual(tuple(batch.image_grid_hw.shape), (tester.batch_size, 2))

    def test_call_pil(self):
        self._check_packed_shapes()

    def test_call_numpy(self):
        self._check_packed_shapes(numpify=True)

    def test_call_pytorch(self):
        self._check_packed_shapes(torchify=True)

    def test_pil_can_run_without_torchvision(self):
        # The mixin's subprocess imports transformers alone, which knows in-tree processors; ViQ's becomes known to
        # AutoImageProcessor on `import transformers_viq`. Otherwise the same check: torchvision blocked, the saved
        # processor loaded with the PIL backend gives the same outputs.
        processor = ViQImageProcessor(**self.image_processor_dict)
        inputs = self.image_processor_tester.prepare_processor_inputs(equal_resolution=False)
        expected = processor(**inputs, return_tensors=None)
        script = textwrap.dedent(
            """
            import pickle, sys
            sys.modules["torchvision"] = None  # `import torchvision` raises ImportError
            import transformers_viq  # noqa: F401
            from transformers import AutoImageProcessor

            folder, inputs_path, outputs_path = sys.argv[1:]
            processor = AutoImageProcessor.from_pretrained(folder, backend="pil")
            assert type(processor).__name__ == "ViQImageProcessor", type(processor)
            with open(inputs_path, "rb") as f:
                inputs = pickle.load(f)
            with open(outputs_path, "wb") as f:
                pickle.dump(processor(**inputs, return_tensors=None).data, f)
            """
        )
        with tempfile.TemporaryDirectory() as folder:
            processor.save_pretrained(folder)
            inputs_path, outputs_path = os.path.join(folder, "inputs.pkl"), os.path.join(folder, "outputs.pkl")
            with open(inputs_path, "wb") as f:
                pickle.dump(inputs, f)
            result = subprocess.run([sys.executable, "-c", script, folder, inputs_path, outputs_path],
                                    capture_output=True, text=True)  # fmt: skip
            self.assertEqual(result.returncode, 0, result.stderr)
            with open(outputs_path, "rb") as f:
                outputs = pickle.load(f)
        np.testing.assert_equal(outputs, expected.data)

    @unittest.skip("out of scope (issue 20): ViQ ships a PIL backend only; PyPI torchvision does not import here")
    def test_new_models_require_torchvision_backend(self):
        pass

    @unittest.skip("out of scope (issue 20): 4-channel numpy input")
    def test_call_numpy_4_channels(self):
        pass
