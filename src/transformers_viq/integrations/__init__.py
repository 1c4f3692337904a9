# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Integrations with other libraries. Each lives in its own submodule, imported only when that library asks for it.

* `lmms_eval`: the lmms-eval model `viq_qwen` (`lmms-eval --model viq_qwen --model_args pretrained=...`). lmms-eval
  finds it through the entry point group `lmms_eval.models`, which names [`lmms_eval_models`] below: that function
  imports nothing but lmms-eval's registry, so lmms-eval's start-up does not load torch models; the model classes in
  `transformers_viq.integrations.lmms_eval` are imported only when `--model viq_qwen` is resolved.
"""

from __future__ import annotations


LMMS_EVAL_MODEL_NAME = "viq_qwen"


def lmms_eval_models():
    """
    The `lmms_eval.models` entry point: the manifest of the `viq_qwen` model for lmms-eval's model registry.

    lmms-eval resolves `--model viq_qwen` to the chat-messages class (`ViQQwenChat`, what lmms-eval uses by default
    when a model has one), and with `--force_simple` to the prompt class (`ViQQwen`, which also scores
    log-likelihoods).
    """
    from lmms_eval.models.registry_v2 import ModelManifest

    module = f"{__name__}.lmms_eval"
    return ModelManifest(
        model_id=LMMS_EVAL_MODEL_NAME,
        simple_class_path=f"{module}.ViQQwen",
        chat_class_path=f"{module}.ViQQwenChat",
    )


__all__ = ["LMMS_EVAL_MODEL_NAME", "lmms_eval_models"]
