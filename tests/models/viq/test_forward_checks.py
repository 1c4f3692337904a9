"""No value check in the training forward (each would read device tensors on the host: a synchronisation per step
on a GPU), and the public boundaries still reject NaN pixels and out-of-range codes with clear errors.

On the CPU a synchronisation cannot be observed, so the reads that would cause one are counted instead: every Python
call that turns a tensor into host values (`bool`, `int`, `float`, `.item()`, `.tolist()`, `.nonzero()`) and every
`torch.isfinite` while the forward runs. The only read allowed is `image_grid_hw.tolist()`: the grids are shapes, which
the forward needs on the host to lay the images out (as transformers' Qwen2-VL reads `grid_thw`).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from transformers_viq import ViQImageProcessor, ViQProcessor, ViQVisionModel
from transformers_viq.codes_io import ViQCodes
from transformers_viq.testing import make_tiny_vlm, qwen_tokenizer


READS = ("__bool__", "__int__", "__float__", "item", "tolist", "nonzero")


@contextlib.contextmanager
def host_reads(allowed=()):
    """Record the host reads of tensors (other than `tolist` of the tensors in `allowed`) made inside the block."""
    seen = []
    originals = {name: getattr(torch.Tensor, name) for name in READS}
    allowed_ids = {id(tensor) for tensor in allowed}

    def recording(name):
        original = originals[name]

        def read(self, *args, **kwargs):
            if not (name == "tolist" and id(self) in allowed_ids):
                seen.append(f"Tensor.{name} of a {tuple(self.shape)} {self.dtype} tensor")
            return original(self, *args, **kwargs)

        return read

    isfinite = torch.isfinite

    def recording_isfinite(*args, **kwargs):
        seen.append("torch.isfinite")
        return isfinite(*args, **kwargs)

    try:
        for name in READS:
            setattr(torch.Tensor, name, recording(name))
        torch.isfinite = recording_isfinite
        yield seen
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
        torch.isfinite = isfinite


def packed_images(sizes=((48, 80), (32, 32)), seed=0):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in sizes]
    return ViQImageProcessor(do_resize=False)(images=images, return_tensors="pt")


def test_the_recorder_sees_the_value_checks_of_the_boundaries(tiny_model):
    """The counting would catch the checks this file asserts are gone from the forward."""
    inputs = packed_images()
    with host_reads(allowed=[inputs["image_grid_hw"]]) as seen:
        codes = tiny_model.encode(**inputs, return_pooler_output=False).image_codes
    assert "torch.isfinite" in seen
    with host_reads(allowed=[inputs["image_grid_hw"]]) as seen:
        tiny_model.embed_codes(codes, inputs["image_grid_hw"])
    assert any(read.startswith("Tensor.__bool__") for read in seen)


def test_the_tokenizer_training_forward_reads_nothing_back(tiny_model):
    model = tiny_model.train()
    inputs = packed_images()
    with host_reads(allowed=[inputs["image_grid_hw"]]) as seen:
        out = model(**inputs)
        with torch.no_grad():
            features = model.codes_to_features(out.image_codes, inputs["image_grid_hw"])
    assert seen == []
    loss = out.last_hidden_state.square().mean() + out.pooler_output.square().mean()
    loss.backward()  # the forward is the differentiable one
    assert model.embeddings.patch_embedding.weight.grad is not None
    torch.testing.assert_close(features, out.last_hidden_state.detach())


def test_the_stage1_encoder_training_forward_reads_nothing_back(tiny_model):
    model = ViQVisionModel(tiny_model.config.vision_config).train()
    inputs = packed_images()
    with host_reads(allowed=[inputs["image_grid_hw"]]) as seen:
        out = model(**inputs)
    assert seen == []
    out.pooler_output.sum().backward()


@pytest.mark.parametrize("image_input", ["pixel_values", "image_codes"])
def test_the_vlm_image_features_read_nothing_back(tiny_model, image_input):
    """What the VLM's training forward runs for its images (the tokenizer or the code embedder, then the projector)
    makes no host read of the image tensors."""
    vlm = make_tiny_vlm(viq=tiny_model).train()
    inputs = packed_images()
    grid = inputs["image_grid_hw"]
    if image_input == "pixel_values":
        images = {"pixel_values": inputs["pixel_values"]}
    else:
        images = {"image_codes": tiny_model.encode(**inputs, return_pooler_output=False).image_codes}
    with host_reads(allowed=[grid]) as seen:
        features = vlm.model.get_image_features(image_grid_hw=grid, **images)
    assert seen == []
    torch.cat(features.pooler_output).sum().backward()
    assert vlm.model.projector.proj_in.weight.grad is not None


# ---- the boundaries still check values -----------------------------------------------------------------------------
def test_encode_rejects_nan_pixels_with_the_image_at_fault(tiny_model):
    inputs = packed_images()
    pixel_values = inputs["pixel_values"].clone()
    pixel_values[17, 7] = float("nan")  # patch 17: the second image (the first has 15 patches)
    with pytest.raises(ValueError, match=r"`pixel_values` of image 1 hold NaN or infinite values \(patch 17\)"):
        tiny_model.encode(pixel_values, inputs["image_grid_hw"])


@pytest.mark.parametrize("method", ["embed_codes", "decode_latents"])
def test_codes_outside_the_codebook_are_rejected_with_the_image_at_fault(tiny_model, method):
    inputs = packed_images()
    codes = tiny_model.encode(**inputs, return_pooler_output=False).image_codes.clone()
    codes[4 * 15 + 2] = tiny_model.config.codebook_size  # first code past the end, in image 1
    with pytest.raises(ValueError, match=rf"Image 1 has code {tiny_model.config.codebook_size} \(at packed position "
                                         rf"62\) outside \[0, {tiny_model.config.codebook_size}\)"):  # fmt: skip
        getattr(tiny_model, method)(codes, inputs["image_grid_hw"])


def test_codes_files_and_the_processor_check_codes(tiny_model):
    grid = torch.tensor([[2, 3]])
    codes = torch.zeros(24, dtype=torch.long)
    codes[5] = tiny_model.config.codebook_size + 3
    with pytest.raises(ValueError, match=r"Image 0 has code .* \(at packed position 5\) outside \[0, "):
        ViQCodes(codes=codes, image_grid_hw=grid, fsq_levels=tiny_model.config.fsq_levels)
    codes[5] = -1
    processor = ViQProcessor(tokenizer=qwen_tokenizer())
    with pytest.raises(ValueError, match=r"Image 0 has negative code -1 \(at packed position 5\)"):
        processor(text="<|vision_start|><|image_pad|><|vision_end|>", image_codes=codes, image_grid_hw=grid)
