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


modeling_common, configuration_common, image_processing_common = transformers_common.import_common_or_skip(
    "test_modeling_common", "test_configuration_common", "test_image_processing_common"
)

from parameterized import parameterized  # noqa: E402  (installed beside the fetched tests)
from transformers.testing_utils import set_config_for_less_flaky_test, set_model_for_less_flaky_test  # noqa: E402

from transformers_viq import ViQConfig, ViQImageProcessor, ViQModel, ViQVisionConfig, ViQVisionModel  # noqa: E402
from transformers_viq.models.viq.image_processing_viq import smart_resize  # noqa: E402


pytestmark = pytest.mark.slow

TINY_VISION = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
               "patch_size": 4, "position_embedding_size": 8}  # fmt: skip
# three images, packed: the batch dimension of these models is the number of images. One grid for all, as in-tree
# packed models' testers do (Qwen2.5-VL's): the mixin takes one sample as the first `1/batch_size` of every input
# (`test_batching_equivalence`), which is one image only when all have the same number of patches. Mixed grids in one
# pack are the business of this project's own packing tests (test_packed_attention.py).
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
        # the packed sequence of all images: what hidden states and attention maps span
        self.seq_length = sum(h * w for h, w in GRIDS)
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


class VisionEmbeddingsMixin:
    def test_model_get_set_embeddings(self):
        # The mixin's version expects a token embedding (`nn.Embedding`); vision models' input embedding is their patch
        # projection, and in-tree vision testers (ViT, SigLIP) check only that it is a module and that there is no
        # output embedding other than a linear one.
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIsInstance(model.get_input_embeddings(), torch.nn.Module)
            output_embeddings = model.get_output_embeddings()
            self.assertTrue(output_embeddings is None or isinstance(output_embeddings, torch.nn.Linear))


EAGER_SDPA_TOLERANCES = {torch.float32: (1e-6, 1e-4), torch.float16: (5e-3, 5e-3), torch.bfloat16: (1e-2, 1e-2)}


class PackedEagerMatchesSdpaMixin:
    """
    `test_eager_matches_sdpa_inference` for models whose batch is one packed sequence. The mixin's version builds a
    batch of 7 by cutting or extending each input along its first dimension, which for packed inputs cuts the patches
    apart from their grids. This version keeps the mixin's cases (same names) and its comparison: the model saved,
    loaded in the case's dtype with `sdpa` and with `eager`, the outputs compared at the mixin's CPU tolerances, on the
    tester's packed inputs, with the mixin's allowances (norm epsilons set to 1, a bf16 tolerance that grows with the
    outputs' magnitude, 80% of the images within tolerance). The padding side and attention-mask variants run the
    same packed input: these models take no attention mask (images are kept apart by the block-diagonal mask built
    from `image_grid_hw`).
    """

    compared_outputs = ("last_hidden_state",)

    @parameterized.expand(modeling_common.TEST_EAGER_MATCHES_SDPA_INFERENCE_PARAMETERIZATION)
    def test_eager_matches_sdpa_inference(
        self, name, dtype, padding_side, use_attention_mask, output_attentions, enable_kernels
    ):
        if output_attentions and not self.has_attentions:
            self.skipTest("the model does not return attention weights")
        dtype = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
        atol, rtol = EAGER_SDPA_TOLERANCES[dtype]
        for model_class in self.all_model_classes:
            modeling_common.set_seed(42)
            config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
            set_config_for_less_flaky_test(config)
            with tempfile.TemporaryDirectory() as folder:
                model_class(config).save_pretrained(folder)
                sdpa = model_class.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa").eval()
                eager = model_class.from_pretrained(folder, dtype=dtype, attn_implementation="eager").eval()
            set_model_for_less_flaky_test(sdpa)
            set_model_for_less_flaky_test(eager)
            inputs = {key: value.to(dtype) if value.is_floating_point() else value for key, value in inputs.items()}
            requested = {"output_attentions": True} if output_attentions else {}
            with torch.no_grad(), modeling_common.sdpa_kernel(enable_kernels, True, enable_kernels):
                from_eager = eager(**inputs, **requested)
                from_sdpa = sdpa(**inputs)
            rows = [h * w for h, w in inputs["image_grid_hw"].tolist()]
            for key in self.compared_outputs:
                a, b = from_sdpa[key].float(), from_eager[key].float()
                tolerance = max(atol, 3e-2 * float(torch.maximum(a.abs().amax(), b.abs().amax()))) \
                    if dtype == torch.bfloat16 else atol  # fmt: skip
                # per image, as the mixin compares per batch element (the outputs hold `rows[i]` rows or a multiple)
                scale = a.shape[0] // sum(rows)
                matched = [torch.allclose(x, y, atol=tolerance, rtol=rtol)
                           for x, y in zip(a.split([r * scale for r in rows]), b.split([r * scale for r in rows]))]
                self.assertGreaterEqual(np.mean(matched), 0.8, f"{key}: eager and sdpa differ beyond {tolerance}")


class ViQModelTest(VisionEmbeddingsMixin, PackedEagerMatchesSdpaMixin, modeling_common.ModelTesterMixin,
                   unittest.TestCase):  # fmt: skip
    all_model_classes = (ViQModel,)
    test_resize_embeddings = False
    has_attentions = False
    # the values the quantizer rounds (before rounding: codes may flip in half precision, the inputs to rounding not)
    compared_outputs = ("quantizer_inputs",)

    def setUp(self):
        self.model_tester = ViQModelTester(self)
        self.config_tester = configuration_common.ConfigTester(self, config_class=ViQConfig, has_text_modality=False)

    def test_config(self):
        self.config_tester.run_common_tests()

    @unittest.skip("the first output is the integer codes (as for Anole's VQ module and S3Tokenizer, which skip it); "
                   "tests/models/viq/test_trunk_outputs.py backpropagates through the code features instead")
    def test_retain_grad_hidden_states_attentions(self):
        pass


class ViQVisionModelTest(VisionEmbeddingsMixin, PackedEagerMatchesSdpaMixin, modeling_common.ModelTesterMixin,
                         unittest.TestCase):  # fmt: skip
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
