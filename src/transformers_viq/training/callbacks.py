# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Trainer callbacks of the ViQ training scripts."""

from __future__ import annotations

from transformers import TrainerCallback

from ..logging_utils import get_logger


logger = get_logger(__name__)


class LogSkippedSamples:
    """
    Trainer mixin (`class MyTrainer(LogSkippedSamples, SFTTrainer)`): `skipped_samples`, the count of samples the
    data collator left out on this process (unreadable images), in every log. Added in `log()` itself, so that it
    reaches the progress bar, `report_to` and `state.log_history` (a callback's `on_log` runs after all of them).
    """

    def log(self, logs: dict, *args, **kwargs):
        skipped = getattr(self.data_collator, "skipped", None)
        if skipped is not None:
            logs = {**logs, "skipped_samples": skipped.count}
        return super().log(logs, *args, **kwargs)


class SkippedSamplesCallback(TrainerCallback):
    """
    Report the samples a collator left out (unreadable images) with a warning and the total at the end of training
    (the count in every log line comes from [`LogSkippedSamples`]).

    Args:
        collator: a collator with a `skipped` counter ([`ViQImageCollator`], [`ViQCodesCollator`]); the rows left out
            before training are in it once given to `collator.skipped.add_left_out(data.left_out)`.
    """

    def __init__(self, collator):
        self.collator = collator

    def on_train_end(self, args, state, control, **kwargs):
        skipped = self.collator.skipped
        before, during = skipped.before_training, skipped.count - skipped.before_training
        if before or during:
            logger.warning(
                f"Left out {before} rows before training and skipped {during} unreadable samples during "
                f"training (process {args.process_index}); see the warnings above"
                + (
                    f" and {self.collator.skipped.log_dir}/skipped-samples-rank*.jsonl."
                    if self.collator.skipped.log_dir
                    else "."
                )
            )


__all__ = ["LogSkippedSamples", "SkippedSamplesCallback"]
