# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""LoRA / DoRA on the Qwen2 decoder of a ViQ VLM (the paper: DoRA r=64, alpha=16 on every LLM linear layer)."""

from __future__ import annotations


QWEN2_LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LANGUAGE_MODEL_LINEARS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def language_model_linears(names=QWEN2_LINEAR_NAMES) -> str:
    """A PEFT `target_modules` regex matching the named linear layers of the Qwen2 decoder only (never the vision
    side, whose layers may share names)."""
    names = [names] if isinstance(names, str) else list(names)
    if not names or not all(isinstance(name, str) and name.isidentifier() for name in names):
        raise ValueError(f"Expected linear layer names such as {list(QWEN2_LINEAR_NAMES)}, got {names!r}.")
    return r".*language_model.*\.(" + "|".join(names) + ")"


def language_model_lora_config(
    r: int = 64,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
    use_dora: bool = True,
    train_projector: bool = True,
    linear_names=QWEN2_LINEAR_NAMES,
    **kwargs,
):
    """
    A PEFT `LoraConfig` that adapts every linear layer of the Qwen2 decoder (not the LM head, not the vision side).

    Args:
        r, lora_alpha, lora_dropout, use_dora: the released recipe's defaults (DoRA, r=64, alpha=16, dropout 0.05).
        train_projector (`bool`, *optional*, defaults to `True`):
            Keep the projector fully trainable and save it with the adapter (`modules_to_save=["projector"]`). A VLM
            built from parts has a fresh projector: an adapter without it would not load back to a working model.
        linear_names (`list[str]`, *optional*): which linear layers of the decoder to adapt (default: all seven).
        kwargs: other `LoraConfig` fields.
    """
    from peft import LoraConfig

    modules_to_save = list(kwargs.pop("modules_to_save", None) or [])
    if train_projector and "projector" not in modules_to_save:
        modules_to_save.append("projector")
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        use_dora=use_dora,
        bias="none",
        target_modules=language_model_linears(linear_names),
        modules_to_save=modules_to_save or None,
        **kwargs,
    )


__all__ = ["LANGUAGE_MODEL_LINEARS", "QWEN2_LINEAR_NAMES", "language_model_linears", "language_model_lora_config"]
