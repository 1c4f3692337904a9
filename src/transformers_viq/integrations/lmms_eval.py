# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""lmms-eval model `viq_qwen`: a ViQ vision-language model ([`ViQForConditionalGeneration`]) under lmms-eval 0.7.3.

    lmms-eval --model viq_qwen --model_args pretrained=<VLM folder or Hub repo> --tasks mmstar,ocrbench
    accelerate launch --num_processes 8 -m lmms_eval --model viq_qwen --model_args pretrained=<...> --tasks ...

`--model_args` are comma-separated `key=value` pairs, the arguments of [`ViQQwen`]: `pretrained`, `processor`,
`revision`, `dtype`, `device_map`, `attn_implementation`, `max_pixels`, `max_new_tokens`, `image_input` (`pixels` or
`codes`), `system_prompt`, `use_cache`. `--batch_size` and `--device` are lmms-eval's own flags.

Two classes stand behind the one name (see `transformers_viq.integrations.lmms_eval_models`):

* [`ViQQwenChat`], lmms-eval's default for a model that has a chat class: it reads each task's chat messages
  (`doc_to_messages`, or the messages lmms-eval builds from `doc_to_visual` + `doc_to_text`), with the images where
  the messages put them (MMMU interleaves them with the question);
* [`ViQQwen`], with `--force_simple`: the task's prompt string after its `doc_to_visual` images; it also scores
  continuations (`loglikelihood`) for tasks that need it.

A batch of documents is one packed processor call for all its images (mixed sizes, several per document), padded on
the left, so each answer is the one the document gets alone. With `image_input=codes` the images are first encoded to
ViQ codes by the VLM's own tokenizer and the VLM reads the codes, as it does when trained on extracted codes. Under
`accelerate launch` every process holds a copy of the model and answers its share of the requests; lmms-eval gathers
the results on rank 0.

Adapted from lmms-eval's Qwen2.5-VL wrappers (`models/simple/qwen2_5_vl.py`, `models/chat/qwen2_5_vl.py`); changed:
the ViQ model and processor, one packed processor call per batch, always left padding, each request's own task and
split (a batch may mix tasks), images as codes, `loglikelihood`, images only (no video or audio).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from accelerate import Accelerator
from lmms_eval import utils as lmms_eval_utils
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.protocol import ChatMessages
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList

from ..image_io import load_rgb
from ..logging_utils import get_logger, progress_bar
from ..models.viq_qwen.modeling_viq_qwen import ViQForConditionalGeneration
from ..models.viq_qwen.processing_viq import ViQProcessor


logger = get_logger(__name__)

IMAGE_INPUTS = ("pixels", "codes")
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ViQQwen(lmms):
    r"""
    lmms-eval model for a ViQ VLM, reading each task's prompt string and `doc_to_visual` images (`--force_simple`).

    Args:
        pretrained (`str`):
            Folder or Hub repository of a saved [`ViQForConditionalGeneration`] (with its [`ViQProcessor`]).
        processor (`str`, *optional*):
            Where to load the processor from, if not from `pretrained`.
        revision (`str`, *optional*):
            Hub revision of the model and processor.
        dtype (`str`, *optional*):
            `"bfloat16"`, `"float16"`, `"float32"`, or `"auto"` (the checkpoint's). Defaults to bfloat16 on a GPU and
            float32 on the CPU.
        device (`str`, *optional*):
            Defaults to `"cuda"` when a GPU is there, else `"cpu"`. Under `accelerate launch` each process takes the
            device accelerate gives it.
        device_map (`str`, *optional*):
            Passed to `from_pretrained` (e.g. `"auto"` to spread a large VLM over the GPUs of one process); the model
            is then left where it was placed. Not with several processes (each holds a whole copy).
        attn_implementation (`str`, *optional*):
            `"sdpa"`, `"eager"` or `"flash_attention_2"`.
        max_pixels (`int`, *optional*):
            Largest image area fed to the model (larger images are resized down, aspect ratio kept); the processor's
            saved value otherwise. The paper's VLM training runs cap images at 768 * 768 (Sec. 4.3).
        batch_size (`int`, *optional*, defaults to 1):
            Documents per forward pass.
        max_new_tokens (`int`, *optional*, defaults to 128):
            Answer length limit when the task's `generation_kwargs` set none.
        image_input (`str`, *optional*, defaults to `"pixels"`):
            `"pixels"`: the VLM encodes the images itself; `"codes"`: the images are encoded to ViQ codes first (by
            the VLM's own tokenizer) and the VLM reads the codes.
        system_prompt (`str`, *optional*):
            A system message (or a file holding one); without it the chat template's default system message is used.
        use_cache (`bool`, *optional*, defaults to `True`):
            Use the key/value cache while generating.
        max_batch_size (`int`, *optional*):
            Accepted for lmms-eval's command line and unused (no automatic batch size).
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        processor: str | None = None,
        revision: str | None = None,
        dtype: str | None = None,
        device: str | None = None,
        device_map: str | None = None,
        attn_implementation: str | None = None,
        max_pixels: int | None = None,
        batch_size: int | str = 1,
        max_new_tokens: int = 128,
        image_input: str = "pixels",
        system_prompt: str | None = None,
        use_cache: bool = True,
        max_batch_size: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        if kwargs:
            raise ValueError(
                f"Unknown model_args for viq_qwen: {sorted(kwargs)}. Known: pretrained, processor, revision, dtype, "
                "device, device_map, attn_implementation, max_pixels, batch_size, max_new_tokens, image_input, "
                "system_prompt, use_cache."
            )
        if image_input not in IMAGE_INPUTS:
            raise ValueError(f"`image_input` must be one of {IMAGE_INPUTS}, got {image_input!r}.")
        self._batch_size = _positive_int(batch_size, "batch_size")
        self.max_new_tokens = _positive_int(max_new_tokens, "max_new_tokens")
        self.image_input = image_input
        self.use_cache = bool(use_cache)
        self.system_prompt = self._resolve_system_prompt(system_prompt) if system_prompt else None
        self._images_kwargs = {} if max_pixels is None else {"max_pixels": _positive_int(max_pixels, "max_pixels")}

        device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.accelerator = Accelerator(cpu=device.type == "cpu")
        if self.accelerator.num_processes > 1:
            if device_map is not None:
                raise ValueError(
                    f"device_map={device_map!r} with {self.accelerator.num_processes} processes: each process holds a "
                    "whole copy of the model on its own device; leave device_map out, or run one process."
                )
            device = self.accelerator.device
            self._rank = self.accelerator.process_index
            self._world_size = self.accelerator.num_processes
        load_kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype, device), "revision": revision}
        if attn_implementation is not None:
            load_kwargs["attn_implementation"] = attn_implementation
        if device_map is not None:
            load_kwargs["device_map"] = device_map
        self._model = ViQForConditionalGeneration.from_pretrained(pretrained, **load_kwargs).eval()
        if device_map is None:
            self._model.to(device)
        self._device = self._model.device
        self.processor = ViQProcessor.from_pretrained(processor or pretrained, revision=revision)
        if self._model.config.projector_type != self.processor.projector_type:
            raise ValueError(
                f"The processor counts image tokens for a {self.processor.projector_type!r} projector but the model "
                f"has a {self._model.config.projector_type!r} one; load the processor saved with the model."
            )
        self._eos_token_ids = self._stop_token_ids()
        logger.info(
            f"viq_qwen: {pretrained} on {self._device} ({self._model.dtype}), images as {image_input}, batch size "
            f"{self._batch_size}, rank {self._rank} of {self._world_size}"
        )

    # ---- properties lmms-eval reads ------------------------------------------------------------------------------
    @property
    def model(self) -> ViQForConditionalGeneration:
        return self._model

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    # ---- requests ------------------------------------------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Answer each request `(context, gen_kwargs, doc_to_visual, doc_id, task, split)`."""
        return self._generate_requests(requests, self._prompt_inputs, gen_kwargs_index=1)

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """
        Score each request `(context, continuation, doc_to_visual, doc_id, task, split)`: the log-probability of the
        continuation as the assistant's answer to the context (with the document's images), and whether greedy
        decoding would produce exactly it.
        """
        collator = lmms_eval_utils.Collator([request.args for request in requests], _longest_first)
        results = []
        progress = progress_bar(total=len(requests), desc="viq_qwen loglikelihood", disable=self.rank != 0)
        for chunk in collator.get_batched(n=self.batch_size):
            contexts, continuations = [args[0] for args in chunk], [args[1] for args in chunk]
            conversations, images = self._prompt_inputs(chunk)
            results += self._score(conversations, images, continuations)
            for context, continuation, result in zip(contexts, continuations, results[-len(chunk) :]):
                self.cache_hook.add_partial("loglikelihood", (context, continuation), result)
            progress.update(len(chunk))
        progress.close()
        return collator.get_original(results)

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError(
            "viq_qwen does not implement multi-round generation (generate_until_multi_round); the paper's nine "
            "benchmarks do not use it."
        )

    # ---- building inputs -----------------------------------------------------------------------------------------
    def _prompt_inputs(self, chunk: Sequence[tuple]) -> tuple[list[list[dict]], list[Image.Image]]:
        """Conversations (images first, then the prompt) and the images of a chunk of simple-style requests."""
        conversations, images = [], []
        for context, _, doc_to_visual, doc_id, task, split in chunk:
            doc_images = _images(doc_to_visual(self.task_dict[task][split][doc_id]), task)
            text = {"type": "text", "text": context.replace("<image>", "")}
            content = [{"type": "image"} for _ in doc_images] + [text]
            conversations.append(self._with_system_prompt([{"role": "user", "content": content}]))
            images += doc_images
        return conversations, images

    def _with_system_prompt(self, conversation: list[dict]) -> list[dict]:
        if self.system_prompt and conversation[0]["role"] != "system":
            return [{"role": "system", "content": self.system_prompt}] + conversation
        return conversation

    def _model_inputs(self, conversations: list[list[dict]], images: list[Image.Image], padding_side: str):
        """One packed processor call for the whole batch; images turned into codes first with `image_input=codes`."""
        texts = [self.processor.apply_chat_template(conv, add_generation_prompt=True) for conv in conversations]
        inputs = self.processor(images=images or None, text=texts, padding=True, padding_side=padding_side,
                                return_tensors="pt", **self._images_kwargs)  # fmt: skip
        inputs = inputs.to(self.device)
        if self.image_input == "codes" and "pixel_values" in inputs:
            with torch.no_grad():
                encoded = self.model.model.vision_tower.encode(
                    inputs.pop("pixel_values"), inputs["image_grid_hw"], return_pooler_output=False
                )
            inputs["image_codes"] = encoded.image_codes
        return inputs

    # ---- the model -----------------------------------------------------------------------------------------------
    def _generate_requests(self, requests: list[Instance], to_inputs, gen_kwargs_index: int) -> list[str]:
        collator = lmms_eval_utils.Collator(
            [request.args for request in requests],
            _longest_first,
            group_fn=lambda args: args[gen_kwargs_index],
            grouping=True,
        )
        answers = []
        progress = progress_bar(total=len(requests), desc="viq_qwen", disable=self.rank != 0)
        for chunk in collator.get_batched(n=self.batch_size):
            gen_kwargs = chunk[0][gen_kwargs_index]
            conversations, images = to_inputs(chunk)
            batch_answers = self._generate(conversations, images, gen_kwargs)
            for args, answer in zip(chunk, batch_answers):
                self.cache_hook.add_partial("generate_until", (args[0], gen_kwargs), answer)
            answers += batch_answers
            progress.update(len(chunk))
        progress.close()
        return collator.get_original(answers)

    def _generate(self, conversations: list[list[dict]], images: list[Image.Image], gen_kwargs: dict) -> list[str]:
        gen_kwargs = dict(gen_kwargs or {})
        until = gen_kwargs.pop("until", None)
        until = [until] if isinstance(until, str) else list(until or [])
        inputs = self._model_inputs(conversations, images, padding_side="left")
        generate_kwargs = self._generate_kwargs(gen_kwargs)
        prompt_length = inputs["input_ids"].shape[1]
        if any(until):  # stop a row once its answer holds a stop string (the answer is cut there anyway)
            stop = _StopStrings(self.tokenizer, until, prompt_length)
            generate_kwargs["stopping_criteria"] = StoppingCriteriaList([stop])
        with torch.no_grad():
            sequences = self.model.generate(**inputs, **generate_kwargs)
        new_tokens = sequences[:, prompt_length:]
        answers = self.processor.post_process_image_text_to_text(new_tokens, skip_special_tokens=True)
        return [_cut_at(answer, until) for answer in answers]

    def _generate_kwargs(self, gen_kwargs: dict) -> dict:
        """A task's `generation_kwargs` as `generate` arguments (greedy unless the task samples)."""
        kwargs = {key: value for key, value in gen_kwargs.items() if value is not None}
        temperature = float(kwargs.pop("temperature", 0.0))
        do_sample = bool(kwargs.pop("do_sample", False)) or temperature > 0
        if do_sample:
            if temperature > 0:
                kwargs["temperature"] = temperature
        else:
            for key in ("top_p", "top_k"):
                kwargs.pop(key, None)
        kwargs["max_new_tokens"] = _positive_int(kwargs.get("max_new_tokens", self.max_new_tokens), "max_new_tokens")
        pad_token_id = self.tokenizer.pad_token_id
        return {
            **kwargs,
            "do_sample": do_sample,
            "use_cache": self.use_cache,
            "eos_token_id": self._eos_token_ids,
            "pad_token_id": pad_token_id if pad_token_id is not None else self._eos_token_ids[0],
        }

    def _stop_token_ids(self) -> list[int]:
        """The generation config's end-of-sequence ids plus the tokenizer's and `<|im_end|>` (ends a chat turn)."""
        configured = self.model.generation_config.eos_token_id
        ids = [] if configured is None else ([configured] if isinstance(configured, int) else list(configured))
        for token_id in (self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")):
            if token_id is not None and token_id != self.tokenizer.unk_token_id and token_id not in ids:
                ids.append(token_id)
        if not ids:
            raise ValueError("Neither the model's generation config nor the tokenizer has an end-of-sequence token.")
        return ids

    def _score(self, conversations, images, continuations: Sequence[str]) -> list[tuple[float, bool]]:
        inputs = self._model_inputs(conversations, images, padding_side="right")
        prompt_lengths = inputs.pop("attention_mask").sum(-1).tolist()
        prompts = inputs.pop("input_ids")
        targets = [self.tokenizer(text, add_special_tokens=False)["input_ids"] for text in continuations]
        width = max(length + len(target) for length, target in zip(prompt_lengths, targets))
        input_ids = torch.full((len(targets), width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, (length, target) in enumerate(zip(prompt_lengths, targets)):
            input_ids[row, :length] = prompts[row, :length]
            input_ids[row, length : length + len(target)] = torch.tensor(target, dtype=torch.long)
            attention_mask[row, : length + len(target)] = 1
        with torch.no_grad():
            logits = self.model(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                                **inputs).logits.float()  # fmt: skip
        results = []
        for row, (length, target) in enumerate(zip(prompt_lengths, targets)):
            if not target:
                results.append((0.0, True))
                continue
            log_probs = logits[row, length - 1 : length - 1 + len(target)].log_softmax(-1)
            target = torch.tensor(target, device=log_probs.device)
            log_prob = log_probs.gather(-1, target[:, None]).sum().item()
            results.append((log_prob, bool((log_probs.argmax(-1) == target).all())))
        return results


class ViQQwenChat(ViQQwen):
    """
    lmms-eval model for a ViQ VLM, reading each task's chat messages: lmms-eval's default for `--model viq_qwen`.
    Arguments as [`ViQQwen`].
    """

    is_simple = False

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Answer each request `(context, doc_to_messages, gen_kwargs, doc_id, task, split)`."""
        return self._generate_requests(requests, self._messages_inputs, gen_kwargs_index=2)

    def _messages_inputs(self, chunk: Sequence[tuple]) -> tuple[list[list[dict]], list[Image.Image]]:
        """Conversations and images (in order of appearance) of a chunk of chat-style requests."""
        conversations, images = [], []
        for _, doc_to_messages, _, doc_id, task, split in chunk:
            messages = ChatMessages(messages=doc_to_messages(self.task_dict[task][split][doc_id]))
            conversation = []
            for message in messages.messages:
                content = []
                for item in message.content:
                    if item.type == "text":
                        content.append({"type": "text", "text": item.text})
                    elif item.type == "image":
                        images += _images([item.url], task)
                        content.append({"type": "image"})
                    else:
                        raise ValueError(f"viq_qwen reads images and text; task {task!r} gave a {item.type} message.")
                conversation.append({"role": message.role, "content": content})
            conversations.append(self._with_system_prompt(conversation))
        return conversations, images


class _StopStrings(StoppingCriteria):
    """Done for the rows whose generated text contains a stop string (what the answer is cut at afterwards)."""

    def __init__(self, tokenizer, stop_strings: Sequence[str], prompt_length: int):
        self.tokenizer = tokenizer
        self.stop_strings = [stop for stop in stop_strings if stop]
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        done = [any(stop in text for stop in self.stop_strings) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _longest_first(args: tuple):
    """Sort key: longest prompt first (the first batch is the largest: out-of-memory errors show up at once)."""
    return -len(args[0]), args[0]


def _cut_at(answer: str, stop_strings: Sequence[str]) -> str:
    for stop in stop_strings:
        if stop:
            answer = answer.split(stop)[0]
    return answer


def _images(visuals, task: str) -> list[Image.Image]:
    """
    The RGB images of a document (`doc_to_visual` output or a message's image: PIL images or image files), decoded
    as the image processor decodes them (`image_io.load_rgb`: EXIF orientation, transparency, 16-bit, CMYK).
    """
    images = []
    for visual in visuals or []:
        is_file = isinstance(visual, str) and visual.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(visual)
        if not (is_file or isinstance(visual, Image.Image)):
            raise ValueError(f"viq_qwen reads images; task {task!r} gave a {type(visual).__name__} ({visual!r:.80}).")
        images.append(Image.fromarray(load_rgb(visual)))
    return images


def _positive_int(value, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or (isinstance(value, float) and value != number):
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return number


def _torch_dtype(dtype, device: torch.device):
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if str(dtype).lower() not in DTYPES:
        raise ValueError(f"`dtype` must be one of {sorted(DTYPES)} or 'auto', got {dtype!r}.")
    return DTYPES[str(dtype).lower()]


__all__ = ["ViQQwen", "ViQQwenChat"]
