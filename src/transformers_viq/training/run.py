# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Running one ViQ training stage end to end: what `training/train_viq.py` calls.

    from transformers_viq.training import parse_stage_arguments, run_stage
    stage_args, training_args = parse_stage_arguments(["--config", "training/recipes/viq_stage2_1.yaml"])
    result = run_stage(stage_args, training_args)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..logging_utils import get_logger
from .arguments import ViQStageArguments


logger = get_logger(__name__)


@dataclass
class StageResult:
    """The output folder (an HF-format model: `AutoModel.from_pretrained(output_dir)`), the final training metrics and
    the loss of every logged step."""

    output_dir: str
    metrics: dict
    log_history: list


def parse_stage_arguments(argv: list[str] | None = None):
    """`(ViQStageArguments, TrainingArguments)` from `--config recipe.yaml` and command-line overrides (TrlParser)."""
    from transformers import TrainingArguments
    from trl import TrlParser

    parser = TrlParser((ViQStageArguments, TrainingArguments))
    return parser.parse_args_and_config(argv)


def _calibrate(components, training_args, max_gain: float) -> None:
    """Spread a fresh FSQ projection over the levels on a first batch (stage 2-2), before the optimizer exists."""
    from .calibration import calibrate_quantizer

    model = components.model
    if "viq.quantizer.project_in.weight" not in model.new_parameter_names:
        return
    count = min(len(components.train_dataset), max(2, training_args.per_device_train_batch_size))
    batch = components.data_collator([components.train_dataset[i] for i in range(count)])
    device = training_args.device
    model.viq.to(device)
    calibrate_quantizer(model.viq, batch["pixel_values"].to(device), batch["image_grid_hw"].to(device),
                        max_gain=max_gain)
    logger.info(f"Calibrated the fresh FSQ projection on {count} samples")


def resolve_resume(value, output_dir: str) -> str | None:
    """The checkpoint a run resumes from: a folder as given; `true`/`last`: the last `checkpoint-N` of `output_dir`
    (an error if there is none); `auto`: that one if any, else `None` (a fresh start); `none`/`false`: `None`."""
    import os

    from transformers.trainer_utils import get_last_checkpoint

    if value is None or value is False:
        return None
    text = str(value).lower()
    if text in ("", "none", "false", "no"):
        return None
    if text in ("true", "last", "auto"):
        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None and text != "auto":
            raise ValueError(f"resume_from_checkpoint={value!r}, but {output_dir} holds no checkpoint-N folder.")
        if last is None:
            logger.info(f"No checkpoint in {output_dir}: starting from the beginning")
        return last
    if not os.path.isdir(str(value)):
        raise FileNotFoundError(f"resume_from_checkpoint: no checkpoint folder {value}")
    return str(value)


def run_stage(stage_args: ViQStageArguments, training_args, callbacks=None) -> StageResult:
    """
    Build the stage ([`build_stage`]), train it with [`ViQStageTrainer`] (resuming as [`resolve_resume`] reads
    `training_args.resume_from_checkpoint`: a checkpoint folder, `true` for the last one in `output_dir`, `auto` for
    the last one if any), save the final model (the EMA weights when `ema_decay` is set) with its image processor in
    `output_dir`, and evaluate on the eval dataset if there is one.
    """
    from .stages import build_stage
    from .trainer import ViQStageTrainer

    torch.manual_seed(training_args.seed)
    components = build_stage(stage_args, training_args)
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    if stage_args.stage == "stage2_2" and stage_args.calibrate_quantizer and not resume:
        _calibrate(components, training_args, stage_args.calibration_max_gain)
    trainer = ViQStageTrainer(
        components.model,
        training_args,
        train_dataset=components.train_dataset,
        eval_dataset=components.eval_dataset,
        data_collator=components.data_collator,
        schedule=components.schedule,
        new_parameter_learning_rate=stage_args.new_parameter_learning_rate,
        ema_decay=stage_args.ema_decay,
        code_stability_steps=stage_args.code_stability_steps,
        code_stability_noise=stage_args.code_stability_noise,
        collapse_usage_threshold=stage_args.collapse_usage_threshold,
        saturation_threshold=stage_args.saturation_threshold,
        image_processor=components.image_processor,
        callbacks=callbacks,
    )
    output = trainer.train(resume_from_checkpoint=resume)
    metrics = dict(output.metrics)
    if trainer.ema is not None:
        trainer.ema.copy_to(components.model.viq)
        logger.info("The saved model holds the EMA weights")
    trainer.save_model(training_args.output_dir)
    if components.eval_dataset is not None:
        metrics.update(trainer.evaluate())
    trainer.save_state()
    return StageResult(training_args.output_dir, metrics, trainer.state.log_history)


__all__ = ["StageResult", "parse_stage_arguments", "resolve_resume", "run_stage"]
