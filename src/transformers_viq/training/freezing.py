# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Which parts of a ViQ VLM train: `requires_grad`, set by the training side, never a config flag."""

from __future__ import annotations

from ..logging_utils import get_logger


logger = get_logger(__name__)


def _parts(model) -> dict:
    """The named parts of a `ViQForConditionalGeneration` (or of one wrapped by PEFT)."""
    base = model
    if hasattr(base, "get_base_model"):  # a PeftModel
        base = base.get_base_model()
    inner = getattr(base, "model", None)
    if inner is None or not all(hasattr(inner, name) for name in ("vision_tower", "projector", "language_model")):
        raise ValueError(
            f"Expected a ViQForConditionalGeneration (with .model.vision_tower/.projector/.language_model), got "
            f"{type(model).__name__}."
        )
    parts = {"vision": [inner.vision_tower], "projector": [inner.projector], "language_model": [inner.language_model]}
    if getattr(base, "lm_head", None) is not None:
        parts["language_model"].append(base.lm_head)
    return parts


def freeze(model, vision: bool = True, projector: bool = False, language_model: bool = False):
    """
    Set which parts of a ViQ VLM train (`True` = frozen) and return the model. The usual policies:

    * projector alignment (LLaVA stage 1): `freeze(model, vision=True, language_model=True)`;
    * full fine-tuning of projector and LLM, tokenizer frozen: `freeze(model)` (the default);
    * LoRA/DoRA on the LLM: `freeze(model, vision=True, language_model=True)`, then pass
      `peft_config=language_model_lora_config()` to TRL's `SFTTrainer` (the projector stays trainable and is saved
      with the adapter through `modules_to_save`).

    The ViQ tokenizer runs under `torch.no_grad()` whenever none of its parameters requires a gradient, so a frozen
    tokenizer costs no activation memory.
    """
    for name, frozen in (("vision", vision), ("projector", projector), ("language_model", language_model)):
        for part in _parts(model)[name]:
            part.requires_grad_(not frozen)
    if projector:
        logger.warning(
            "freeze(projector=True): the projector is freshly initialised in a VLM built from parts; train it "
            "(projector alignment) before freezing it."
        )
    return model


def trainable_summary(model) -> dict[str, tuple[int, int]]:
    """
    `{part: (trainable parameters, all parameters)}` for `vision`, `projector` and `language_model`. A part that PEFT
    trains whole (`modules_to_save`, e.g. the projector of a LoRA run) counts once: PEFT's frozen copy of the
    original weights, kept to undo the adapter, is not a parameter of the model that trains or is saved.
    """
    summary = {}
    for name, modules in _parts(model).items():
        seen, trainable, total = set(), 0, 0
        for module in modules:
            for param_name, param in module.named_parameters():
                if id(param) in seen or ".original_module." in f".{param_name}":
                    continue
                seen.add(id(param))
                total += param.numel()
                trainable += param.numel() if param.requires_grad else 0
        summary[name] = (trainable, total)
    return summary


__all__ = ["freeze", "trainable_summary"]
