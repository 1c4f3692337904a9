# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Processor of the ViQ vision-language model: a ViQ image processor, a Qwen2.5 tokenizer and a chat template.

Images reach the model either as pixels (`pixel_values` + `image_grid_hw`, from [`ViQImageProcessor`]) or as
precomputed ViQ codes (`image_codes` + `image_grid_hw`, e.g. extracted once with `ViQModel.encode` and stored in a
dataset). Either way the processor expands every `<|image_pad|>` placeholder in the text into as many copies as the
projector turns that image into LLM positions, counted by
[`~configuration_viq_qwen.get_num_image_tokens`] (the one place the model reads the count from too).

Structure adapted from transformers' `Qwen2VLProcessor` (placeholder expansion on top of `ProcessorMixin`); changed: a
second way in through precomputed codes, the count comes from the ViQ projector, and the chat template renders an
image as the bare `<|image_pad|>` placeholder (the projector adds its own begin/end/newline embeddings).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import ImageInput
from transformers.processing_utils import MultiModalData, ProcessingKwargs, ProcessorMixin, Unpack
from transformers.tokenization_utils_base import PreTokenizedInput, TextInput
from transformers.utils import logging

from ..viq.configuration_viq import CODES_PER_PATCH
from ..viq.image_processing_viq import ViQImageProcessor
from ..viq.validation_viq import check_codes, check_grid, pack_codes
from .configuration_viq_qwen import PROJECTOR_TYPES, get_num_image_tokens


try:  # placeholders inside user text that `apply_chat_template(sanitize_control_tokens=True)` marked are plain text
    from transformers.processing_utils import _UNMARKED
except ImportError:  # pragma: no cover - older transformers
    _UNMARKED = ""


logger = logging.get_logger(__name__)

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# Qwen2 chat format. An image item renders as one `<|image_pad|>` placeholder, which the processor then expands; the
# assistant turn (content and `<|im_end|>\n`) is wrapped in `{% generation %}` so `return_assistant_tokens_mask=True`
# (TRL's `assistant_only_loss`) works with this template as is.
CHAT_TEMPLATE = (
    "{%- macro render(content) -%}\n"
    "    {%- if content is string -%}{{- content -}}\n"
    "    {%- else -%}\n"
    "        {%- for item in content -%}\n"
    "            {%- if item['type'] == 'image' -%}{{- '<|image_pad|>' -}}\n"
    "            {%- elif item['type'] == 'text' -%}{{- item['text'] -}}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- endif -%}\n"
    "    {{- '<|im_end|>\\n' -}}\n"
    "{%- endmacro -%}\n"
    "{%- for message in messages -%}\n"
    "    {%- if loop.first and message['role'] != 'system' -%}\n"
    "        {{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' -}}\n"
    "    {%- endif -%}\n"
    "    {{- '<|im_start|>' + message['role'] + '\\n' -}}\n"
    "    {%- if message['role'] == 'assistant' -%}\n"
    "        {%- generation -%}{{- render(message['content']) -}}{%- endgeneration -%}\n"
    "    {%- else -%}{{- render(message['content']) -}}\n"
    "    {%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{- '<|im_start|>assistant\\n' -}}\n"
    "{%- endif -%}\n"
)


def _is_codes_record(value) -> bool:
    """
    Whether `value` holds packed `codes` with their `image_grid_hw` as attributes: a `transformers_viq.ViQCodes` (a
    codes file), recognised by its fields so that this file needs nothing outside the model folders.
    """
    return hasattr(value, "codes") and hasattr(value, "image_grid_hw") and not isinstance(value, (dict, np.ndarray))


class ViQProcessorKwargs(ProcessingKwargs, total=False):
    _defaults = {"text_kwargs": {"padding": False}}


class ViQProcessor(ProcessorMixin):
    r"""
    Constructs a ViQ vision-language processor: a [`ViQImageProcessor`], a Qwen2.5 tokenizer and the Qwen2 chat
    template, in one object.

    Args:
        image_processor ([`ViQImageProcessor`], *optional*):
            Defaults to `ViQImageProcessor(size_divisor=32)`: the projector merges 2x2 patch windows and needs an even
            patch grid.
        tokenizer (`Qwen2Tokenizer`):
            A Qwen2.5 tokenizer; it must know the `<|image_pad|>` token.
        chat_template (`str`, *optional*):
            A Jinja chat template; defaults to the Qwen2 `<|im_start|>role\n...<|im_end|>\n` format with the system
            prompt "You are a helpful assistant." when the conversation has none, and `<|image_pad|>` for each image.
        projector_type (`str`, *optional*, defaults to `"pooled"`):
            The projector of the model this processor feeds (`ViQQwenConfig.projector_type`): it sets how many image
            tokens an image takes. Saved with the processor.

    Batches are padded on the left: the processor sets its tokenizer's `padding_side` to `"left"`, what batched
    generation with a decoder-only model needs (a right-padded prompt would continue after its padding). A call takes
    `padding_side="right"` (training collators pass it) like any other tokenizer argument.

    Example:

    ```python
    >>> from transformers_viq import ViQProcessor

    >>> processor = ViQProcessor(tokenizer=tokenizer)  # a Qwen2.5 tokenizer
    >>> messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Hi"}]}]
    >>> inputs = processor.apply_chat_template(
    ...     messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    ... )
    >>> sorted(inputs.keys())
    ['attention_mask', 'image_grid_hw', 'input_ids', 'pixel_values']
    ```
    """

    valid_processor_kwargs = ViQProcessorKwargs
    image_token = "<|image_pad|>"
    # codes per 16x16 patch of the tokenizer the codes come from (every released one)
    codes_per_patch = CODES_PER_PATCH

    def __init__(
        self,
        image_processor: ViQImageProcessor | None = None,
        tokenizer=None,
        chat_template: str | None = None,
        projector_type: str = "pooled",
        **kwargs,
    ):
        if tokenizer is None:
            raise ValueError("ViQProcessor needs a Qwen2.5 tokenizer (`tokenizer=`).")
        if projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"Unknown projector_type {projector_type!r}; expected one of {PROJECTOR_TYPES}.")
        if image_processor is None:
            image_processor = ViQImageProcessor(size_divisor=32)
        image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        if image_token_id is None or image_token_id == tokenizer.unk_token_id:
            raise ValueError(
                f"The tokenizer ({type(tokenizer).__name__}) has no {self.image_token} token; use a Qwen2.5 tokenizer."
            )
        self.image_token_id = image_token_id
        self.projector_type = projector_type
        # The Qwen2 tokenizer pads on the right; on the left, a batch padded by this processor, by
        # `pipeline("image-text-to-text")` or by lmms-eval generates like each prompt alone. One place holds the
        # setting (the tokenizer's); a call's `padding_side` overrides it.
        tokenizer.padding_side = "left"
        if chat_template is None:
            chat_template = CHAT_TEMPLATE
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)

    # ------------------------------------------------------------------------------------------------------------
    # Calling
    # ------------------------------------------------------------------------------------------------------------

    @property
    def padding_side(self) -> str:
        """Where batches are padded by default: the tokenizer's `padding_side` (`"left"` unless changed there)."""
        return self.tokenizer.padding_side

    def __call__(
        self,
        images: ImageInput | None = None,
        text: TextInput | PreTokenizedInput | list[TextInput] | list[PreTokenizedInput] | None = None,
        image_codes=None,
        image_grid_hw=None,
        **kwargs: Unpack[ViQProcessorKwargs],
    ) -> BatchFeature:
        r"""
        Prepare text and images (as pixels or as precomputed ViQ codes) for the model.

        Every `<|image_pad|>` in `text` stands for one image; images are matched to placeholders in order, across the
        samples of a batch. Each placeholder is expanded to `get_num_image_tokens(h, w, projector_type)` copies for
        its image's `h x w` patch grid.

        Args:
            images (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor`, path, or a (nested) list of them, *optional*):
                Images, preprocessed by the image processor. A per-sample nested list (`[[img_a], [], [img_b, img_c]]`)
                is flattened in order.
            text (`str` or `list[str]`, *optional*):
                The text of one sample or a batch.
            image_codes (`torch.Tensor`, `np.ndarray`, `list`, or [`ViQCodes`], *optional*):
                Precomputed codes instead of `images`: a packed 1-D integer tensor of all images' codes (patch-major,
                then the 4 sub-codes of a patch, as `ViQModel.encode` returns them), a list of per-image 1-D code
                tensors (may be nested per sample), or a `ViQCodes` (which carries its own grids).
            image_grid_hw (`torch.Tensor`, `np.ndarray` or `list` of shape `(num_images, 2)`, *optional*):
                The patch grid of each image; required with `image_codes` (unless they are a `ViQCodes`).
            **kwargs:
                Tokenizer arguments (`padding`, `padding_side`, `truncation`, `max_length`, `add_special_tokens`,
                `return_tensors`, ...) and image processor arguments (`size_divisor`, `max_pixels`, ...).

        Returns:
            [`BatchFeature`] with `input_ids` and `attention_mask` (when `text` is given), and either `pixel_values`
            (`float32 (sum_i h_i * w_i, 768)`) + `image_grid_hw` (`int64 (num_images, 2)`), or `image_codes`
            (`int64 (sum_i 4 * h_i * w_i,)`) + `image_grid_hw`.

        Raises:
            `ValueError`: If both `images` and `image_codes` are given; if the number of `<|image_pad|>` tokens in the
            text differs from the number of images; if an image's patch grid is odd (the projector needs even grids);
            if the codes do not match their grids, are not integers or are negative; or if truncation cut into
            image tokens.
        """
        if images is not None and image_codes is not None:
            raise ValueError(
                "Pass either `images` (pixels) or `image_codes` (precomputed ViQ codes) for the images, not both."
            )
        if image_grid_hw is not None and image_codes is None:
            raise ValueError(
                "`image_grid_hw` goes with `image_codes`; with `images` the image processor computes the grids."
            )
        if images is None and image_codes is None and text is None:
            raise ValueError("ViQProcessor needs `text`, `images` or `image_codes`.")
        if text is not None:
            text = [text] if isinstance(text, str) else text
            if not isinstance(text, (list, tuple)) or not all(isinstance(sample, str) for sample in text):
                raise ValueError(f"`text` must be a string or a list of strings, got {type(text).__name__}.")
            text = list(text)  # expanded below; never touch the caller's list

        merged_kwargs = self._merge_kwargs(
            ViQProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
        )
        text_kwargs = merged_kwargs["text_kwargs"]
        return_tensors = text_kwargs.pop("return_tensors", None)

        if isinstance(images, (list, tuple)) and not _flatten(images):
            images = None  # e.g. a batch of text-only samples given as `[[], []]`
        image_inputs: dict[str, Any] = {}
        if images is not None:
            images_kwargs = {**merged_kwargs["images_kwargs"], "return_tensors": None}
            image_inputs = dict(self.image_processor(images, **images_kwargs))
        elif image_codes is not None:
            codes, grids = self._pack_image_codes(image_codes, image_grid_hw)
            image_inputs = {"image_codes": codes, "image_grid_hw": grids}
        grids = image_inputs.get("image_grid_hw")

        text_inputs: dict[str, Any] = {}
        if text is not None:
            num_images = 0 if grids is None else len(grids)
            counted = text
            if kwargs.get("sanitize_control_tokens"):
                from transformers.processing_utils import _MARKED_RE

                counted = [_MARKED_RE.sub("", sample) for sample in text]
            pattern = _UNMARKED + re.escape(self.image_token)
            per_sample = [len(re.findall(pattern, sample)) for sample in counted]
            if sum(per_sample) != num_images:
                raise ValueError(
                    f"The number of {self.image_token} tokens in the prompts should be the same as the number of "
                    f"images: the text has {sum(per_sample)} {self.image_token} tokens (per sample: {per_sample}) but "
                    f"{num_images} images were given; each image needs exactly one {self.image_token} in the text."
                )
            replacements = [self.image_token * n for n in self._num_tokens_per_image(grids)] if num_images else []

            return_mm_token_type_ids = text_kwargs.pop(
                "return_mm_token_type_ids", merged_kwargs["return_mm_token_type_ids"]
            )
            return_text_replacement_offsets = text_kwargs.pop(
                "return_text_replacement_offsets", merged_kwargs["return_text_replacement_offsets"]
            )
            text, replacement_offsets = self.get_text_with_replacements(text, replacements)
            text_inputs = dict(self.tokenizer(text, **text_kwargs))
            self._check_special_mm_tokens(text, text_inputs, modalities=["image"])
            if return_text_replacement_offsets:
                text_inputs["text_replacement_offsets"] = replacement_offsets
            if return_mm_token_type_ids:
                text_inputs["mm_token_type_ids"] = self.create_mm_token_type_ids(text_inputs["input_ids"])

        return BatchFeature(
            data={**text_inputs, **image_inputs},
            tensor_type=return_tensors,
            skip_tensor_conversion=self.skip_tensor_conversion,
        )

    def _num_tokens_per_image(self, image_grid_hw) -> list[int]:
        counts = []
        for index, (grid_h, grid_w) in enumerate(np.asarray(image_grid_hw).reshape(-1, 2).tolist()):
            try:
                counts.append(get_num_image_tokens(int(grid_h), int(grid_w), self.projector_type))
            except ValueError as error:
                raise ValueError(f"Image {index}: {error}") from error
        return counts

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        """The expanded placeholder of image `image_idx` (used by `ProcessorMixin` helpers)."""
        grid_h, grid_w = np.asarray(image_inputs["image_grid_hw"])[image_idx].tolist()
        return self.image_token * get_num_image_tokens(int(grid_h), int(grid_w), self.projector_type)

    def _pack_image_codes(self, image_codes, image_grid_hw) -> tuple[np.ndarray, np.ndarray]:
        """Normalise the accepted forms of precomputed codes to packed `int64` codes and `(num_images, 2)` grids."""
        if _is_codes_record(image_codes):
            grids = image_codes.image_grid_hw.numpy().astype(np.int64)
            if image_grid_hw is not None and check_grid(image_grid_hw) != [tuple(g) for g in grids.tolist()]:
                given = [list(g) for g in check_grid(image_grid_hw)]
                raise ValueError(
                    f"`image_grid_hw` {given} does not match the grids stored in the ViQCodes {grids.tolist()}; leave "
                    "`image_grid_hw` out with a ViQCodes."
                )
            return image_codes.codes.numpy().astype(np.int64), grids
        if image_grid_hw is None:
            raise ValueError("`image_codes` need `image_grid_hw`, the (h, w) patch grid of each image.")
        grid_hw = check_grid(image_grid_hw)
        if isinstance(image_codes, (list, tuple)) and not all(isinstance(c, (int, np.integer)) for c in image_codes):
            packed = pack_codes(_flatten(image_codes), grid_hw, self.codes_per_patch)
        else:
            packed = check_codes(image_codes, grid_hw, self.codes_per_patch)
        return packed.cpu().numpy(), np.asarray(grid_hw, dtype=np.int64).reshape(-1, 2)

    # ------------------------------------------------------------------------------------------------------------
    # Chat template, decoding, helpers
    # ------------------------------------------------------------------------------------------------------------

    def apply_chat_template(
        self,
        conversation,
        chat_template: str | None = None,
        images=None,
        image_codes=None,
        image_grid_hw=None,
        processor_kwargs: dict | None = None,
        **kwargs,
    ):
        """
        Render conversations with the chat template and, with `tokenize=True`, process them.

        Images come from the content items (`{"type": "image", "image": <image>}`, or `"url"`/`"path"`), or are passed
        separately as `images` (one sample: a list of images; a batch: one list per conversation), or as precomputed
        `image_codes` + `image_grid_hw` with bare `{"type": "image"}` items in the conversation. Everything else is
        `ProcessorMixin.apply_chat_template` (`add_generation_prompt`, `tokenize`, `return_dict`, `return_tensors`,
        `return_assistant_tokens_mask`, `processor_kwargs={padding, truncation, max_length, ...}`).
        """
        processor_kwargs = dict(processor_kwargs or {})
        if images is not None:
            processor_kwargs["images"] = list(images) if isinstance(images, (list, tuple)) else [images]
        if image_codes is not None:
            processor_kwargs["image_codes"] = image_codes
        if image_grid_hw is not None:
            processor_kwargs["image_grid_hw"] = image_grid_hw
        return super().apply_chat_template(
            conversation, chat_template=chat_template, processor_kwargs=processor_kwargs, **kwargs
        )

    def post_process_image_text_to_text(
        self, generated_outputs, skip_special_tokens: bool = True, clean_up_tokenization_spaces: bool = False, **kwargs
    ) -> list[str]:
        """
        Decode the output of `model.generate` to text.

        Args:
            generated_outputs (`torch.Tensor` or `np.ndarray` of shape `(batch_size, sequence_length)` or
                `(sequence_length,)`):
                Generated token ids.
            skip_special_tokens (`bool`, *optional*, defaults to `True`):
                Whether to drop special tokens (`<|im_end|>`, `<|image_pad|>`, padding).
            clean_up_tokenization_spaces (`bool`, *optional*, defaults to `False`):
                Passed to the tokenizer's `batch_decode`.

        Returns:
            `list[str]`: One string per sequence.
        """
        if getattr(generated_outputs, "ndim", 2) == 1:
            generated_outputs = generated_outputs[None]
        return self.tokenizer.batch_decode(
            generated_outputs,
            skip_special_tokens=skip_special_tokens,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            **kwargs,
        )

    @property
    def model_input_names(self) -> list[str]:
        """What a call with text and images returns (with `image_codes` instead of images, `image_codes` takes the
        place of `pixel_values`)."""
        names = list(self.tokenizer.model_input_names) + list(self.image_processor.model_input_names)
        return list(dict.fromkeys(names))

    def _get_num_multimodal_tokens(self, image_sizes: Sequence[Sequence[int]] | None = None, **kwargs):
        """
        Number of placeholder tokens (and of patches) for images of the given sizes, without loading them.

        Args:
            image_sizes (`list[list[int]]`, *optional*):
                `(height, width)` in pixels of each input image.
            **kwargs:
                Image processor overrides (`size_divisor`, `max_pixels`, ...), as for `__call__`.

        Returns:
            `MultiModalData` with `num_image_tokens` and `num_image_patches` (one entry per image).
        """
        vision_data = {}
        if image_sizes is not None:
            images_kwargs = self._merge_kwargs(ViQProcessorKwargs, **kwargs).get("images_kwargs", {})
            patch_size = images_kwargs.get("patch_size", self.image_processor.patch_size)
            num_tokens, num_patches = [], []
            for height, width in image_sizes:
                out_height, out_width = self.image_processor.get_resized_size(height, width, images_kwargs)
                grid_h, grid_w = out_height // patch_size, out_width // patch_size
                num_patches.append(grid_h * grid_w)
                num_tokens.append(get_num_image_tokens(grid_h, grid_w, self.projector_type))
            vision_data = {"num_image_tokens": num_tokens, "num_image_patches": num_patches}
        return MultiModalData(**vision_data)


def _flatten(items) -> list:
    flat = []
    for item in items:
        if isinstance(item, (list, tuple)):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


__all__ = ["CHAT_TEMPLATE", "DEFAULT_SYSTEM_PROMPT", "ViQProcessor"]
