# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""`ViQStageTrainer`: `transformers.Trainer` for the ViQ training stages.

What it adds to `Trainer` (everything else, from mixed precision and gradient accumulation to DDP / DeepSpeed / FSDP
through accelerate, logging through `report_to`, the progress bar and checkpoint rotation, is `Trainer`'s own):

* logs each loss term, the codebook usage (fraction of codes used and perplexity, over each logging interval) and
  the code stability under small input noise, reduced over processes, with the other training logs;
* separate learning rates for the parameters a stage creates and those it inherits (paper appendix A.1, Stage 2-1),
  under one schedule (each group keeps its ratio, e.g. cosine 1e-4 -> 1e-5 and 5e-5 -> 5e-6);
* an optional EMA of the trained weights, updated after every optimizer step;
* checkpoints whose model part is an HF-format folder of the trained model (`config.json` + safetensors, loadable with
  `AutoModel.from_pretrained`) plus the image processor, with the auxiliary trained state (LoRA adapters,
  projectors, discriminator) and the EMA beside it; resuming restores all of it with the optimizer and scheduler;
* the resolution schedule follows the run's progress (a callback writes it to shared memory).
"""

from __future__ import annotations

import os

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from ..logging_utils import get_logger
from .ema import ExponentialMovingAverage
from .monitoring import CodebookUsage, code_stability


logger = get_logger(__name__)

AUXILIARY_STATE_NAME = "viq_training_state.safetensors"
EMA_STATE_NAME = "ema.safetensors"


class _StageCallback(TrainerCallback):
    def __init__(self, trainer: "ViQStageTrainer"):
        self.trainer = trainer

    def on_step_begin(self, args, state, control, **kwargs):
        trainer = self.trainer
        trainer.stage_model.step = state.global_step
        if trainer.schedule is not None:
            trainer.schedule.set_progress(state.global_step, state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        if self.trainer.ema is not None:
            self.trainer.ema.update(self.trainer.stage_model.viq)


def _read_safetensors_folder(folder: str) -> dict[str, torch.Tensor]:
    """The tensors of `model.safetensors`, or of the shards a `model.safetensors.index.json` lists."""
    import json

    from safetensors.torch import load_file

    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        return load_file(single)
    index = os.path.join(folder, "model.safetensors.index.json")
    if not os.path.isfile(index):
        raise FileNotFoundError(f"{folder} holds no model.safetensors (or index): not a ViQ training checkpoint.")
    with open(index) as handle:
        shards = sorted(set(json.load(handle)["weight_map"].values()))
    state = {}
    for shard in shards:
        state.update(load_file(os.path.join(folder, shard)))
    return state


def load_stage_state(model, viq_state: dict, auxiliary: dict) -> None:
    """
    Load a checkpoint's full (unsharded) tensors into a stage model: the trained model's (`viq_state`, strictly) and
    the auxiliary ones (LoRA, projectors). When FSDP has sharded the parameters (DTensors), each rank keeps its own
    shard of the full tensors (`torch.distributed.checkpoint.state_dict.set_model_state_dict`).
    """
    from torch.distributed.tensor import DTensor

    if not any(isinstance(parameter, DTensor) for parameter in model.parameters()):
        model.viq.load_state_dict(viq_state, strict=True)
        model.load_state_dict(auxiliary, strict=False)  # exactly the auxiliary keys (checked by the caller)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    full = {**{f"viq.{key}": value for key, value in viq_state.items()}, **auxiliary}
    result = set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, strict=False))
    missing = [key for key in result.missing_keys if key.startswith("viq.")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"The checkpoint does not match the model: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}."
        )


def _accumulate(sums: dict, counts: dict, name: str, value: torch.Tensor) -> None:
    """Add a step's value to a running sum kept on its device (read once per log, not once per step)."""
    value = value.detach().to(torch.float64)
    sums[name] = sums[name] + value if name in sums else value
    counts[name] = counts.get(name, 0) + 1


class ViQStageTrainer(Trainer):
    r"""
    Args:
        model ([`ViQStageModel`]): the stage to train.
        args (`TrainingArguments`).
        schedule ([`ResolutionSchedule`], *optional*): the pixel-budget schedule the collator reads.
        new_parameter_learning_rate (`float`, *optional*): learning rate of `model.new_parameter_names`.
        ema_decay (`float`, *optional*): keep an EMA of the trained `viq` parameters.
        code_stability_steps (`int`, *optional*, defaults to 10): measure code stability every N steps (0: never).
        code_stability_noise (`float`, *optional*, defaults to 0.01): the noise's standard deviation.
        collapse_usage_threshold (`float`, *optional*, defaults to 0.05): warn (once) when a logging interval uses
            fewer than this fraction of the codebook.
        saturation_threshold (`float`, *optional*, defaults to 0.5): warn (once) when more than this share of the FSQ
            inputs lies beyond 0.99 of the bound (logged every interval as `fsq_saturation`).
        image_processor ([`ViQImageProcessor`], *optional*): saved with every checkpoint.
        kwargs: as for `Trainer` (`train_dataset`, `data_collator`, `callbacks`, ...).
    """

    def __init__(self, model, args, *, schedule=None, new_parameter_learning_rate: float | None = None,
                 ema_decay: float | None = None, code_stability_steps: int = 10, code_stability_noise: float = 0.01,
                 collapse_usage_threshold: float = 0.05, saturation_threshold: float = 0.5, image_processor=None,
                 **kwargs):  # fmt: skip
        if args.remove_unused_columns:
            args.remove_unused_columns = False  # the collator reads the raw columns (images, text)
        if args.load_best_model_at_end:
            raise ValueError("load_best_model_at_end is not supported by the ViQ stage trainer.")
        super().__init__(model=model, args=args, **kwargs)
        self.loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean
        self.stage_model = model
        self.schedule = schedule
        self.new_parameter_learning_rate = new_parameter_learning_rate
        self.code_stability_steps = code_stability_steps
        self.code_stability_noise = code_stability_noise
        self.collapse_usage_threshold = collapse_usage_threshold
        self.saturation_threshold = saturation_threshold
        self._warned: set[str] = set()
        self.image_processor = image_processor
        config = getattr(model.viq, "config", None)
        has_codes = getattr(config, "quantizer", None) == "fsq"
        self.codebook_usage = CodebookUsage(config.codebook_size) if has_codes else None
        self.ema = ExponentialMovingAverage(model.viq, decay=ema_decay) if ema_decay else None
        self._sums: dict[str, torch.Tensor] = {}  # on the losses' device: read once per log, not once per step
        self._counts: dict[str, int] = {}
        self._stability: list[float] = []
        self._eval_sums: dict[str, torch.Tensor] = {}
        self._eval_counts: dict[str, int] = {}
        self._stability_step = -1
        self._generator = torch.Generator().manual_seed(args.seed)
        self.add_callback(_StageCallback(self))

    # ---- loss and what training shows ---------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        outputs = model(**inputs)
        if model.training:
            self._record(outputs, inputs)
        else:
            for name, value in (outputs.losses or {}).items():
                _accumulate(self._eval_sums, self._eval_counts, name, value)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def evaluation_loop(self, *args, **kwargs):
        """`Trainer`'s loop, with each loss term's mean over the evaluation set in the metrics (`eval_loss_mse`, ...)
        and, when the stage has a pixel MSE (decoder), `eval_psnr`: the PSNR of that mean MSE (pixels in [-1, 1])."""
        import math

        self._eval_sums, self._eval_counts = {}, {}
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", "eval")
        names = sorted(self._eval_sums)
        if names:
            for name, mean in zip(names, self._means(self._eval_sums, self._eval_counts, names)):
                output.metrics[f"{prefix}_loss_{name}"] = round(mean, 6)
                if name == "mse" and mean > 0:
                    output.metrics[f"{prefix}_psnr"] = round(10 * math.log10(4.0 / mean), 3)
        return output

    def _record(self, outputs, inputs) -> None:
        for name, value in (outputs.losses or {}).items():
            _accumulate(self._sums, self._counts, name, value)
        saturation = getattr(outputs, "quantizer_saturation", None)
        if saturation is not None:
            _accumulate(self._sums, self._counts, "fsq_saturation", saturation)
        codes = outputs.image_codes
        if codes is None or self.codebook_usage is None:
            return
        self.codebook_usage.update(codes)
        step = self.state.global_step
        if self.code_stability_steps and step % self.code_stability_steps == 0 and step != self._stability_step:
            self._stability_step = step
            viq = self.stage_model.viq
            self._stability.append(code_stability(viq, inputs["pixel_values"], inputs["image_grid_hw"], codes,
                                                  self.code_stability_noise, self._generator))  # fmt: skip

    def _means(self, sums: dict, counts: dict, names: list[str]) -> list[float]:
        """Each named sum's mean over its count, reduced over processes in one call."""
        totals = self._reduced(torch.cat([torch.stack([sums[n].cpu() for n in names]),
                                          torch.tensor([counts[n] for n in names], dtype=torch.float64)]))  # fmt: skip
        return [float(totals[i] / max(totals[len(names) + i], 1)) for i in range(len(names))]

    def _reduced(self, values: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes > 1:
            values = self.accelerator.reduce(values.to(self.accelerator.device), reduction="sum")
        return values.cpu()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add this interval's terms and code statistics
            names = sorted(self._sums)
            if names:
                for name, mean in zip(names, self._means(self._sums, self._counts, names)):
                    logs[name if name == "fsq_saturation" else f"loss_{name}"] = round(mean, 6)
            self._sums.clear()
            self._counts.clear()
            if self.codebook_usage is not None:
                counts = self._reduced(self.codebook_usage.counts.clone())
                logs.update({k: round(v, 4) for k, v in self.codebook_usage.compute(counts).items()})
                self.codebook_usage.reset()
                stability = self._reduced(torch.tensor([sum(self._stability), len(self._stability)],
                                                       dtype=torch.float64))  # fmt: skip
                if stability[1] > 0:
                    logs["code_stability"] = round(float(stability[0] / stability[1]), 4)
                self._stability.clear()
            self._warn_on_collapse(logs)
            if self.schedule is not None:
                phase = self.schedule.phase()
                logs["max_pixels"] = phase.max_pixels
                logs["token_window"] = phase.token_window
        super().log(logs, start_time)

    def _warn_on_collapse(self, logs: dict) -> None:
        """One loud warning (each kind once per run) when the codes collapse or the FSQ inputs saturate the bound."""
        usage, saturation = logs.get("codebook_usage"), logs.get("fsq_saturation")
        step = self.state.global_step
        if usage is not None and usage < self.collapse_usage_threshold and "usage" not in self._warned:
            self._warned.add("usage")
            size = self.codebook_usage.codebook_size
            stability = logs.get("code_stability")
            note = (f" code_stability {stability:.2f} only says that the few codes in use do not move."
                    if stability is not None else "")  # fmt: skip
            logger.warning(f"CODEBOOK COLLAPSE at step {step}: {usage:.1%} of the {size} codes used over the last "
                           f"logging interval (perplexity {logs.get('codebook_perplexity', 0):.1f}), below "
                           f"collapse_usage_threshold {self.collapse_usage_threshold:g}.{note} Check the FSQ inputs' "
                           "scale (fsq_saturation) and the learning rate.")  # fmt: skip
        if saturation is not None and saturation > self.saturation_threshold and "saturation" not in self._warned:
            self._warned.add("saturation")
            logger.warning(f"FSQ SATURATION at step {step}: {saturation:.1%} of the quantizer inputs lie beyond 0.99 "
                           f"of the bound (threshold {self.saturation_threshold:g}); there tanh passes almost no "
                           "gradient and those dimensions stay on their outermost level.")  # fmt: skip

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ---- optimizer: separate learning rates for new and inherited parameters ------------------------------------
    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(model))
        new = self.stage_model.new_parameter_names
        base_lr = self.args.learning_rate
        new_lr = self.new_parameter_learning_rate if self.new_parameter_learning_rate is not None else base_lr
        groups: dict[tuple[bool, bool], list] = {}
        counts: dict[bool, int] = {True: 0, False: 0}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            is_new = name.removeprefix("module.") in new
            groups.setdefault((is_new, name in decay), []).append(param)
            counts[is_new] += param.numel()
        param_groups = [
            {"params": params, "weight_decay": self.args.weight_decay if decayed else 0.0,
             "lr": new_lr if is_new else base_lr}
            for (is_new, decayed), params in sorted(groups.items())
        ]  # fmt: skip
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        optimizer_kwargs.pop("lr", None)
        self.optimizer = optimizer_cls(param_groups, lr=base_lr, **optimizer_kwargs)
        logger.info(f"Optimizer: {counts[True]:,} new parameters at lr {new_lr:g}, {counts[False]:,} inherited at "
                    f"lr {base_lr:g}")  # fmt: skip
        return self.optimizer

    # ---- checkpoints --------------------------------------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        from safetensors.torch import save_file

        model = self.stage_model
        state_dict = state_dict or model.state_dict()
        viq_state = {k.removeprefix("viq."): v for k, v in state_dict.items() if k.startswith("viq.")}
        model.viq.save_pretrained(output_dir, state_dict=viq_state)
        if self.image_processor is not None:
            self.image_processor.save_pretrained(output_dir)
        auxiliary = {key: state_dict[key].detach().cpu().contiguous().clone() for key in model.auxiliary_state_keys()
                     if key in state_dict}  # fmt: skip
        if auxiliary:
            save_file(auxiliary, os.path.join(output_dir, AUXILIARY_STATE_NAME))
        if self.ema is not None:
            save_file(self.ema.state_dict(), os.path.join(output_dir, EMA_STATE_NAME))
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        from safetensors.torch import load_file

        model = self.stage_model
        viq_state = _read_safetensors_folder(resume_from_checkpoint)
        path = os.path.join(resume_from_checkpoint, AUXILIARY_STATE_NAME)
        expected = set(model.auxiliary_state_keys())
        auxiliary = {}
        if expected:
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"{resume_from_checkpoint} lacks {AUXILIARY_STATE_NAME} (LoRA, projectors, ...)."
                )
            auxiliary = load_file(path)
            if set(auxiliary) != expected:
                raise ValueError(f"{path} holds other auxiliary tensors than this stage trains: "
                                 f"{sorted(set(auxiliary) ^ expected)[:5]} differ.")  # fmt: skip
        load_stage_state(model, viq_state, auxiliary)
        logger.info(f"Resumed the model from {resume_from_checkpoint}")

    def train(self, resume_from_checkpoint=None, **kwargs):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No checkpoint to resume from in {self.args.output_dir}.")
        if isinstance(resume_from_checkpoint, str) and self.ema is not None:
            path = os.path.join(resume_from_checkpoint, EMA_STATE_NAME)
            if os.path.isfile(path):
                from safetensors.torch import load_file

                self.ema.load_state_dict(load_file(path))
            else:
                logger.warning(f"{resume_from_checkpoint} has no {EMA_STATE_NAME}: the EMA restarts from the weights")
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)


__all__ = ["AUXILIARY_STATE_NAME", "EMA_STATE_NAME", "ViQStageTrainer"]
