# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""What the demo page computes, without any web framework: read an image, encode it, reconstruct it, write and read
codes files, and answer a question with a VLM from the codes.

One [`DemoBackend`] holds the tokenizer (and the VLM, if any), loaded once and shared by every request. Model calls
run one at a time under a lock per model: on a CPU one call already uses every core, so serialising them costs no
throughput, and it keeps a shared model safe whatever state its forward keeps. Everything else (reading uploads,
PNG/JPEG sizes, PSNR/SSIM, pictures) runs outside the lock, in each request's own thread.

Errors that the page shows to the user are `ValueError`s with a message meant for them (`DemoInputError`).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..logging_utils import get_logger, one_line


logger = get_logger(__name__)

# An upload is decoded only when its header declares at most this many pixels (a 64-megapixel photo is 8000x8000):
# a small file can declare a huge image (a decompression bomb), and decoding one would take the server's memory.
MAX_SOURCE_PIXELS = 64_000_000
# Longest side of the pictures sent to the page (the images the numbers are measured on are never resized for this).
SHOWN_SIDE = 768


class DemoInputError(ValueError):
    """A problem with what the user gave (an upload, a codes file, a question), worded for the page."""


@dataclass
class Encoded:
    """One image and its codes, as the page shows them after "Encode"."""

    name: str
    original: np.ndarray  # uint8 (H, W, 3), the image's own size
    codes: Any  # ViQCodes of this one image
    numbers: dict
    picture: np.ndarray  # uint8, the codes drawn over the image the model saw
    codes_file: str  # the .safetensors file offered for download


@dataclass
class Reconstructed:
    """What "Reconstruct" shows: the numbers of `reconstruction_numbers` plus JPEG at the codes' byte budget."""

    numbers: dict
    reconstruction: np.ndarray  # uint8, the image's own size
    side_by_side: Any  # PIL image: original | reconstruction | numbers
    jpeg: np.ndarray  # uint8, JPEG at the same bytes, decoded
    jpeg_numbers: dict = field(default_factory=dict)


@dataclass
class Decoded:
    """A codes file loaded back: its records and the decoded images."""

    codes: Any  # ViQCodes
    images: list[np.ndarray]
    names: list[str]


def _require_file(path, name: str, empty: str) -> None:
    """A [`DemoInputError`] for an upload that is missing or empty (`empty` says what an empty one lacks)."""
    if not os.path.isfile(path):
        raise DemoInputError(f"{name}: no such file.")
    if os.path.getsize(path) == 0:
        raise DemoInputError(f"{name} is empty (0 bytes): {empty}.")


def _name(path: str | os.PathLike) -> str:
    return Path(path).name


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} megapixels"


def describe_parameters(count: int) -> str:
    if count >= 1e9:
        return f"{count / 1e9:.2f} B"
    if count >= 1e6:
        return f"{count / 1e6:.1f} M"
    return f"{count / 1e3:.0f} k"


class DemoBackend:
    """
    The models of a demo page and what it computes.

    Args:
        pipe ([`ViQPipeline`]): the tokenizer with its image processor.
        vlm ([`ViQForConditionalGeneration`], *optional*) and vlm_processor ([`ViQProcessor`], *optional*): a VLM
            that answers questions from codes.
        model_note (`str`, *optional*): one sentence saying what the tokenizer is (shown on the page).
        work_dir (`str`, *optional*): where codes files for download are written (default: a fresh temporary folder).
        max_new_tokens (`int`, *optional*, defaults to 64): the length of an answer.
    """

    def __init__(self, pipe, vlm=None, vlm_processor=None, model_note: str | None = None,
                 work_dir: str | os.PathLike | None = None, vlm_id: str | None = None,
                 max_new_tokens: int = 64):  # fmt: skip
        if (vlm is None) != (vlm_processor is None):
            raise ValueError("A VLM needs its processor (give both `vlm` and `vlm_processor`, or neither).")
        self.pipe = pipe
        self.vlm = vlm
        self.vlm_processor = vlm_processor
        self.vlm_id = vlm_id
        self.model_note = model_note
        self.max_new_tokens = int(max_new_tokens)
        self.work_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="viq-demo-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._model_lock = threading.Lock()
        self._vlm_lock = threading.Lock()

    # ---- loading ------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model, size: str | None = None, *, vlm: str | None = None, device: str = "auto",
                        dtype: str = "float32", max_pixels: int | None = None, model_note: str | None = None,
                        work_dir=None, max_new_tokens: int = 64) -> DemoBackend:  # fmt: skip
        """
        Load the tokenizer (as `ViQPipeline.from_pretrained` does: a folder or Hub id, `size` for the authors'
        layout) and, with `vlm`, a saved ViQ VLM and its processor. Raises [`ModelLoadError`] naming what failed.
        """
        from ..pipeline import ModelLoadError, ViQPipeline, looks_like_path

        pipe = ViQPipeline.from_pretrained(model, size, device=device, dtype=dtype, max_pixels=max_pixels)
        vlm_model = vlm_processor = None
        if vlm is not None:
            from ..models.viq_qwen.modeling_viq_qwen import ViQForConditionalGeneration
            from ..models.viq_qwen.processing_viq import ViQProcessor

            if looks_like_path(str(vlm)) and not os.path.isdir(os.path.expanduser(str(vlm))):
                raise FileNotFoundError(f"no such VLM folder: {vlm}")
            try:
                vlm_model = ViQForConditionalGeneration.from_pretrained(str(vlm)).to(pipe.device).eval()
                vlm_processor = ViQProcessor.from_pretrained(str(vlm))
            except Exception as error:  # hub errors, missing files, bad configs: one message naming the VLM
                raise ModelLoadError(f"cannot load the VLM {vlm}: {one_line(error)}") from error
        return cls(pipe, vlm_model, vlm_processor, model_note=model_note, work_dir=work_dir, vlm_id=vlm and str(vlm),
                   max_new_tokens=max_new_tokens)  # fmt: skip

    # ---- what the page says about its models ----------------------------------------------------------------------
    @property
    def model_label(self) -> str:
        label = self.pipe.model_id or "a ViQ tokenizer"
        if os.path.isabs(label) and Path(label).is_relative_to(Path.cwd()):  # a folder here: as the user would type it
            label = os.path.relpath(label)
        return label + (f" ({self.pipe.viq_size})" if self.pipe.viq_size else "")

    def model_facts(self) -> dict:
        """What the tokenizer is: name, format, size, codebook, trunk, device."""
        from ..metrics import bits_per_code

        config = self.pipe.config
        vision = config.vision_config
        return {
            "model": self.model_label,
            "format": f"the authors' layout, size {self.pipe.viq_size}" if self.pipe.viq_size else "HF format",
            "parameters": sum(parameter.numel() for parameter in self.pipe.model.parameters()),
            "layers": vision.num_hidden_layers,
            "width": vision.hidden_size,
            "codebook_size": config.codebook_size,
            "fsq_levels": list(config.fsq_levels),
            "bits_per_code": bits_per_code(config.codebook_size),
            "codes_per_patch": config.codes_per_patch,
            "patch_size": vision.patch_size,
            "max_pixels": self.pipe.image_processor.max_pixels,
            "device": str(self.pipe.device),
            "dtype": str(self.pipe.dtype).removeprefix("torch."),
        }

    def describe(self) -> str:
        """Markdown: which models the page runs and what they are."""
        facts = self.model_facts()
        levels = "x".join(str(level) for level in facts["fsq_levels"])
        lines = [
            f"**Tokenizer**: `{facts['model']}` ({facts['format']}): a ViQ tokenizer of "
            f"{describe_parameters(facts['parameters'])} parameters (trunk of {facts['layers']} layers of width "
            f"{facts['width']}), {facts['codes_per_patch']} codes per {facts['patch_size']}x{facts['patch_size']} "
            f"patch from a codebook of {facts['codebook_size']:,} codes (FSQ levels {levels}, "
            f"{facts['bits_per_code']} bits per code); pixels come back through its VAE decoder. Images over "
            f"{_megapixels(facts['max_pixels'])} are downscaled before encoding. Running on {facts['device']} in "
            f"{facts['dtype']}.",
        ]
        if self.model_note:
            lines.append(f"*{self.model_note}*")
        if self.vlm is not None:
            text = self.vlm.config.text_config
            count = sum(parameter.numel() for parameter in self.vlm.parameters())
            lines.append(
                f"**VLM**: `{self.vlm_id}`: {describe_parameters(count)} parameters, a "
                f"{text.num_hidden_layers}-layer {text.model_type} language model of width {text.hidden_size} "
                f"reading ViQ codes (codebook {self.vlm.config.vision_config.codebook_size:,})."
            )
        return "\n\n".join(lines)

    # ---- reading ------------------------------------------------------------------------------------------------
    def read_image(self, path: str | os.PathLike, name: str | None = None) -> tuple[str, np.ndarray]:
        """
        An uploaded or bundled image file as `uint8 (H, W, 3)`, or a [`DemoInputError`] saying what is wrong with it:
        missing, empty, not an image, declaring more than `MAX_SOURCE_PIXELS` (checked from the header, before
        anything is decoded), corrupt or truncated.
        """
        from PIL import Image

        from ..image_io import load_rgb
        from ..models.viq.image_processing_viq import PIL_READ_ERRORS

        name = name or _name(path)
        _require_file(path, name, "there is no image in it")
        try:
            with Image.open(path) as opened:  # reads the header only
                width, height = opened.size
        except Image.DecompressionBombError:
            raise DemoInputError(
                f"{name} declares an image far larger than {_megapixels(MAX_SOURCE_PIXELS)} (a possible "
                f"decompression bomb): it was not decoded."
            ) from None
        except PIL_READ_ERRORS:
            raise DemoInputError(
                f"{name} is not an image this page can read (not an image file, or a damaged one)."
            ) from None
        if height * width > MAX_SOURCE_PIXELS:
            raise DemoInputError(
                f"{name} is {width}x{height} pixels ({_megapixels(height * width)}): over this page's limit of "
                f"{_megapixels(MAX_SOURCE_PIXELS)}, so it was not decoded."
            )
        try:
            return name, load_rgb(path)
        except ValueError as error:
            reason = one_line(error).replace(os.fspath(path), name)
            raise DemoInputError(f"{name} cannot be decoded: {reason}") from None

    # ---- encoding -----------------------------------------------------------------------------------------------
    def encode(self, name: str, original: np.ndarray) -> Encoded:
        """Encode one image: its codes, the numbers of the "Encode" panel, the picture of the codes, a codes file."""
        from .. import metrics
        from ..visualization import codes_picture

        try:
            with self._model_lock:
                codes = self.pipe.encode([original], names=[name], batch_size=1, progress=False)
        except ValueError as error:  # the processor's limits (aspect ratio, size), worded by the library
            raise DemoInputError(f"{name}: {one_line(error).removeprefix(name + ': ')}") from None
        grid_h, grid_w = (int(side) for side in codes.image_grid_hw[0])
        fed = self.pipe.fed_image(original)
        config = self.pipe.config
        picture = codes_picture(fed, codes.codes.numpy(), (grid_h, grid_w), config.codes_per_patch,
                                config.vision_config.patch_size)  # fmt: skip
        folder = self.work_dir / uuid.uuid4().hex
        folder.mkdir(parents=True)
        codes_file = folder / f"{Path(name).stem or 'image'}.codes.safetensors"
        codes.save(codes_file)
        height, width = original.shape[:2]
        num_codes = int(codes.codes.numel())
        bits = metrics.bits_per_code(self.pipe.codebook_size)
        numbers = {
            "name": name,
            "height": height,
            "width": width,
            "fed_height": fed.shape[0],
            "fed_width": fed.shape[1],
            "grid_h": grid_h,
            "grid_w": grid_w,
            "num_codes": num_codes,
            "distinct_codes": int(codes.codes.unique().numel()),
            "codebook_size": self.pipe.codebook_size,
            "bits_per_code": bits,
            "code_bytes_uint16": 2 * num_codes,
            "code_bytes_packed": math.ceil(num_codes * bits / 8),
            "codes_file_bytes": codes_file.stat().st_size,
            "raw_rgb_bytes": 3 * height * width,
            "png_bytes": metrics.png_bytes(original),
            "jpeg90_bytes": metrics.jpeg_bytes(original, 90),
            "bpp": num_codes * bits / (height * width),
            "bpp_uint16": num_codes * 16 / (height * width),
        }
        return Encoded(name, original, codes, numbers, picture, str(codes_file))

    # ---- decoding -----------------------------------------------------------------------------------------------
    def reconstruct(self, encoded: Encoded) -> Reconstructed:
        """Decode the codes of "Encode"; PSNR/SSIM at the image's own size, and JPEG at the codes' uint16 bytes."""
        from .. import metrics
        from ..pipeline import Reconstruction, reconstruction_numbers
        from ..visualization import numbers_text, side_by_side

        codes = encoded.codes
        with self._model_lock:
            (reconstruction,) = self.pipe.decode(codes, batch_size=1, progress=False)
        record = codes.images[0]
        item = Reconstruction(
            encoded.name,
            encoded.original,
            reconstruction,
            codes.codes.numpy(),
            tuple(int(side) for side in codes.image_grid_hw[0]),
            encoded.original.shape[:2],
            fed_size=(int(record["height"]), int(record["width"])),
            measured_at="source",
        )
        numbers = reconstruction_numbers(item, self.pipe.codebook_size)
        match = metrics.jpeg_at_budget(encoded.original, numbers["code_bytes_uint16"])
        jpeg = match.decoded()
        jpeg_numbers = {
            "quality": match.quality,
            "bytes": match.num_bytes,
            "budget": match.budget,
            "fits": match.fits,
            "psnr": metrics.psnr(encoded.original, jpeg),
            "ssim": metrics.ssim(encoded.original, jpeg),
        }
        picture = side_by_side(encoded.original, reconstruction, numbers_text(numbers, self.model_label))
        return Reconstructed(numbers, reconstruction, picture, jpeg, jpeg_numbers)

    def load_codes(self, path: str | os.PathLike, name: str | None = None) -> Decoded:
        """Read a codes file (`viq` format) and decode every image in it, at each image's recorded own size."""
        from ..codes_io import ViQCodes
        from ..models.viq.validation_viq import IncompatibleCodebookError

        name = name or _name(path)
        _require_file(path, name, "it holds no codes")
        try:
            codes = ViQCodes.load(path)
        except (ValueError, KeyError) as error:
            reason = one_line(error).replace(os.fspath(path), name)
            raise DemoInputError(f"{name} is not a ViQ codes file: {reason}") from None
        try:
            codes.check_compatible(self.pipe.config)
        except IncompatibleCodebookError as error:
            raise DemoInputError(f"{name}: {one_line(error)}") from None
        if codes.num_images == 0:
            raise DemoInputError(f"{name} holds no images.")
        with self._model_lock:
            images = self.pipe.decode(codes, batch_size=1, progress=False)
        records = codes.images or [{} for _ in range(codes.num_images)]
        names = [record.get("name") or f"image {index}" for index, record in enumerate(records)]
        return Decoded(codes, images, names)

    # ---- the VLM ------------------------------------------------------------------------------------------------
    def answer(self, question: str, codes=None, image: np.ndarray | None = None) -> tuple[str, str]:
        """
        The VLM's answer to `question` about one image, read from ViQ codes: `codes` (a one-image `ViQCodes`) when
        their codebook is the VLM's, else the codes of the VLM's own tokenizer for `image`. Greedy decoding, at most
        `max_new_tokens` tokens. Returns `(answer, where the codes came from)`.
        """
        import torch

        from ..models.viq.validation_viq import IncompatibleCodebookError

        if self.vlm is None:
            raise DemoInputError("This page runs without a VLM: start it with --vlm FOLDER to ask questions.")
        question = (question or "").strip()
        if not question:
            raise DemoInputError("Type a question first.")
        if codes is None and image is None:
            raise DemoInputError("Pick a sample, upload an image or load a codes file first.")
        vision_config = self.vlm.config.vision_config
        use_codes = codes is not None
        if use_codes:
            try:
                codes.check_compatible(vision_config)
            except IncompatibleCodebookError:
                if image is None:
                    raise DemoInputError(
                        f"These codes come from a codebook of {codes.codebook_size:,} codes; the VLM reads "
                        f"{vision_config.codebook_size:,}. Load an image instead."
                    ) from None
                use_codes = False
        processor = self.vlm_processor
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        with self._vlm_lock:
            if use_codes:
                image_codes, grid = codes.codes, codes.image_grid_hw
                source = f"the {int(image_codes.numel()):,} codes on this page"
            else:
                pixels = processor.image_processor(images=[image], return_tensors="pt")
                with torch.inference_mode():
                    encoded = self.vlm.model.vision_tower.encode(**pixels.to(self.vlm.device))
                image_codes, grid = encoded.image_codes.cpu(), encoded.image_grid_hw.cpu()
                source = f"the {int(image_codes.numel()):,} codes of the VLM's own tokenizer"
            inputs = processor(image_codes=image_codes, image_grid_hw=grid, text=prompt, return_tensors="pt")
            with torch.inference_mode():
                generated = self.vlm.generate(**inputs.to(self.vlm.device), max_new_tokens=self.max_new_tokens,
                                              do_sample=False)  # fmt: skip
        prompt_length = inputs["input_ids"].shape[1]
        answer = processor.batch_decode(generated[:, prompt_length:], skip_special_tokens=True)[0].strip()
        return answer, source

    def close(self) -> None:
        """Delete the codes files written for download."""
        shutil.rmtree(self.work_dir, ignore_errors=True)


def shown(image: np.ndarray, side: int = SHOWN_SIDE) -> np.ndarray:
    """A picture for the page: enlarged (nearest neighbour) when small, so pixels stay visible; never downscaled."""
    height, width = image.shape[:2]
    factor = max(1, side // max(height, width) // 2)
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


__all__ = ["DemoBackend", "DemoInputError", "Decoded", "Encoded", "MAX_SOURCE_PIXELS", "Reconstructed", "shown"]
