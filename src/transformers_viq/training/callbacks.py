# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Trainer callbacks of the ViQ training scripts."""

from __future__ import annotations

from transformers import TrainerCallback

from ..logging_utils import get_logger


logger = get_logger(__name__)


class SkippedSamplesCallback(TrainerCallback):
    """
    Report the samples a collator left out (unreadable images): `skipped_samples` in every log line (this process's
    count), and a warning with the total at the end of training.

    Args:
        collator: a collator with a `skipped` counter ([`ViQImageCollator`], [`ViQCodesCollator`]).
        left_out_before (`int`, *optional*): rows already left out before training (unreadable or too long).
    """

    def __init__(self, collator, left_out_before: int = 0):
        self.collator = collator
        self.left_out_before = left_out_before

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None:
            logs["skipped_samples"] = self.collator.skipped.count

    def on_train_end(self, args, state, control, **kwargs):
        count = self.collator.skipped.count
        if count or self.left_out_before:
            logger.warning(
                f"Left out {self.left_out_before} rows before training and skipped {count} unreadable samples during "
                f"training (process {args.process_index}); see the warnings above"
                + (
                    f" and {self.collator.skipped.log_dir}/skipped-samples-rank*.jsonl."
                    if self.collator.skipped.log_dir
                    else "."
                )
            )


__all__ = ["SkippedSamplesCallback"]
