# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Building, configuring, checking and saving a ViQ VLM for training (what `training/sft.py` calls).

* [`load_vlm`]: a saved ViQ VLM (folder or Hub id), or the parts: a ViQ tokenizer (`XuminYu/ViQ_weights` + size, or an
  HF folder) and any Qwen2.5 causal LM, with the paper's projector; and its processor.
* [`set_training_mode`]: `"projector"` (alignment), `"lora"` (LoRA/DoRA on the LLM through a PEFT config) or
  `"full"`; the ViQ tokenizer stays frozen unless asked.
* [`check_trainable`]: refuses a run that would leave a fresh projector (or everything) frozen, and warns about
  parts that get no gradient; never silent.
* [`save_trained_vlm`]: merges a LoRA/DoRA adapter, then saves a model and processor that load back with
  `AutoModelForImageTextToText` / `AutoProcessor` and generate (the adapter is kept in `adapter/`).
"""

from __future__ import annotations

import os
from typing import Any

from ..logging_utils import get_logger
from .freezing import freeze, trainable_summary


logger = get_logger(__name__)

TRAINING_MODES = ("projector", "lora", "full")


def load_vlm(
    model_name_or_path: str | None = None,
    *,
    viq: str | None = None,
    viq_size: str | None = None,
    llm: str | None = None,
    projector_type: str = "pooled",
    image_processor: Any = None,
    dtype: Any = None,
    from_pretrained_kwargs: dict | None = None,
):
    r"""
    A ViQ VLM and its processor, for training.

    Args:
        model_name_or_path (`str`, *optional*): a saved ViQ VLM (`save_pretrained` folder or Hub id). Or else:
        viq (`str`, *optional*): a ViQ tokenizer: `XuminYu/ViQ_weights` (with `viq_size`) or an HF-format folder/id.
        viq_size (`str`, *optional*): `2k`, `4k`, `8k`, `16k` or `64k` for the authors' layout.
        llm (`str`, *optional*): a Qwen2.5 causal LM (`Qwen/Qwen2.5-1.5B-Instruct`, a folder); its tokenizer too.
        projector_type (`str`, *optional*, defaults to `"pooled"`): the released projector, or `"mlp"`.
        image_processor ([`ViQImageProcessor`], *optional*): for a VLM built from parts (default: `size_divisor=32`,
            even grids as in the released training; a code dataset's own processor keeps training and inference
            alike).
        dtype (`torch.dtype`, *optional*): load in this dtype.
        from_pretrained_kwargs (`dict`, *optional*): `revision`, `token`, `attn_implementation`, ...

    Returns:
        `(model, processor, fresh_projector)`: `fresh_projector` is `True` for a VLM built from parts (its projector
        must train).
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    from ..hub_utils import check_local_folder
    from ..models.viq_qwen.modeling_viq_qwen import ViQForConditionalGeneration
    from ..models.viq_qwen.processing_viq import ViQProcessor

    for name in (model_name_or_path, viq, llm):  # a mistyped local path says so before anything loads
        if name:
            check_local_folder(name)
    kwargs = dict(from_pretrained_kwargs or {})
    if model_name_or_path:
        if viq or llm:
            raise ValueError("Give either a saved ViQ VLM (model_name_or_path) or its parts (viq + llm), not both.")
        if dtype is not None:
            kwargs["dtype"] = dtype
        model = AutoModelForImageTextToText.from_pretrained(model_name_or_path, **kwargs)
        if not isinstance(model, ViQForConditionalGeneration):
            raise ValueError(
                f"{model_name_or_path} is a {type(model).__name__}, not a ViQ VLM; to build one, give a ViQ tokenizer "
                "(viq_model) and a Qwen2.5 LM (llm_model) instead."
            )
        processor_kwargs = {
            k: v for k, v in kwargs.items() if k in ("revision", "token", "cache_dir", "local_files_only")
        }
        processor = AutoProcessor.from_pretrained(model_name_or_path, **processor_kwargs)
        return model, processor, False
    if not (viq and llm):
        raise ValueError(
            "No model: give a saved ViQ VLM (model_name_or_path), or a ViQ tokenizer (viq_model, e.g. "
            "XuminYu/ViQ_weights with viq_size 16k) and a Qwen2.5 causal LM (llm_model)."
        )
    tokenizer_kwargs = {k: v for k, v in kwargs.items() if k in ("revision", "token", "cache_dir", "local_files_only")}
    tokenizer = AutoTokenizer.from_pretrained(llm, **tokenizer_kwargs)
    processor = ViQProcessor(image_processor=image_processor, tokenizer=tokenizer, projector_type=projector_type)
    # the image token is the LLM tokenizer's own `<|image_pad|>` (151655 in Qwen2.5's vocabulary, not in every one)
    model = ViQForConditionalGeneration.from_viq_and_qwen(
        viq, llm, viq_size=viq_size, projector_type=projector_type, dtype=dtype, from_pretrained_kwargs=kwargs,
        image_token_id=processor.image_token_id,
    )
    if len(tokenizer) > model.config.text_config.vocab_size:
        raise ValueError(
            f"The tokenizer of {llm} has {len(tokenizer)} tokens, more than the LM's vocabulary "
            f"({model.config.text_config.vocab_size})."
        )
    return model, processor, True


def set_training_mode(model, mode: str, train_vision: bool = False):
    """
    Set what trains (`requires_grad`) for a training mode, and return the model:

    * `"projector"`: the projector only (LLaVA-style alignment);
    * `"lora"`: the projector; the LLM is frozen and adapted by a PEFT config (`language_model_lora_config`);
    * `"full"`: the projector and the LLM.

    The ViQ tokenizer is frozen unless `train_vision` (with codes, only its code embedder runs, so only that trains).
    """
    if mode not in TRAINING_MODES:
        raise ValueError(f"Unknown training mode {mode!r}; expected one of {TRAINING_MODES}.")
    return freeze(model, vision=not train_vision, projector=False, language_model=mode != "full")


def check_trainable(model, *, fresh_projector: bool, mode: str | None = None, kind: str | None = None) -> dict:
    """
    Check what will train, after PEFT wrapping: a fresh projector that would stay frozen, or a run where nothing
    trains, is an error; a LoRA run whose adapter touches nothing, or vision training on codes (only the code embedder
    runs), is a warning. Returns `trainable_summary(model)`, logged at info level.
    """
    summary = trainable_summary(model)
    total = sum(trainable for trainable, _ in summary.values())
    lora = sum(param.numel() for name, param in model.named_parameters() if "lora_" in name and param.requires_grad)
    if total + lora == 0:
        raise ValueError("Nothing would train: every parameter is frozen. Check the training mode and PEFT config.")
    if fresh_projector and summary["projector"][0] == 0:
        raise ValueError(
            "The projector is freshly initialised (a VLM built from a ViQ tokenizer and an LLM) but frozen: it would "
            "feed random image embeddings to the LLM and be missing from the saved model. Train it (training mode "
            "'projector' first, or keep it in `modules_to_save` with LoRA: language_model_lora_config(...)."
        )
    if mode == "lora" and lora == 0:
        logger.warning("Training mode 'lora' but no LoRA/DoRA parameter trains: is the PEFT config applied?")
    if kind == "codes" and summary["vision"][0]:
        logger.warning(
            "Training the vision side on codes: only the code embedder runs (and trains); the trunk never sees pixels."
        )
    logger.info(
        "Trainable parameters: "
        + ", ".join(f"{part} {trainable:,}/{total_:,}" for part, (trainable, total_) in summary.items())
        + (f", LoRA/DoRA {lora:,}" if lora else "")
    )
    return summary


def _is_sharded(trainer) -> bool:
    """Whether the trained weights are sharded across processes (DeepSpeed ZeRO-3, FSDP): merge from the saved copy."""
    plugin = getattr(trainer.args, "deepspeed_plugin", None)
    if plugin is not None and getattr(plugin, "zero_stage", 0) == 3:
        return True
    return bool(getattr(trainer, "is_fsdp_enabled", False))


def save_trained_vlm(trainer, processor, output_dir: str, *, rebuild_base=None) -> str:
    """
    Save the trained VLM and its processor to `output_dir` so that `AutoModelForImageTextToText` and
    `AutoProcessor` load them and generate.

    A LoRA/DoRA run saves its adapter (with the projector, `modules_to_save`) to `output_dir/adapter`, then merges it
    into the model: in memory, or, when the weights are sharded (ZeRO-3, FSDP), into `rebuild_base()` (a fresh copy of
    the base model) on the main process. Every process must call this; only the main process writes.
    """
    from peft import PeftModel

    model = trainer.model
    if isinstance(model, PeftModel):
        adapter_dir = os.path.join(output_dir, "adapter")
        trainer.save_model(adapter_dir)  # gathers sharded weights
        if not trainer.args.should_save:
            return output_dir
        if _is_sharded(trainer):
            if rebuild_base is None:
                logger.warning(
                    f"Weights are sharded: the adapter is in {adapter_dir}; merge it into the base model with "
                    "PeftModel.from_pretrained(base, adapter).merge_and_unload()."
                )
                return adapter_dir
            model = PeftModel.from_pretrained(rebuild_base(), adapter_dir)
        model = model.merge_and_unload()
        model.config.get_text_config().use_cache = True
        model.save_pretrained(output_dir)
    else:
        model.config.get_text_config().use_cache = True
        trainer.save_model(output_dir)
        if not trainer.args.should_save:
            return output_dir
    model = getattr(model, "module", model)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    logger.info(f"Saved the trained VLM and its processor to {output_dir}")
    return output_dir


__all__ = ["TRAINING_MODES", "check_trainable", "load_vlm", "save_trained_vlm", "set_training_mode"]
