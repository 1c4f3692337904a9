# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""
Supervised fine-tuning of a ViQ vision-language model with TRL's `SFTTrainer`.

The model is a saved ViQ VLM (`--model_name_or_path`) or its parts: a ViQ tokenizer (`--viq_model
XuminYu/ViQ_weights --viq_size 16k`, or an HF folder) and any Qwen2.5 causal LM (`--llm_model`), joined by the
paper's projector. The data (`--dataset_name`) is a code dataset from `viq extract` (codes instead of pixels: the 1.1B
trunk never runs), a LLaVA-style JSON/JSONL file (`--image_folder` for its relative image paths), or a `datasets`
dataset in TRL's conversational vision format (`images` + `messages`). Only assistant turns are supervised.

Training modes (`--training_mode`): `projector` (LLaVA-style alignment), `lora` (LoRA, or DoRA with `--use_dora`, on
every linear layer of the LLM; the projector trains and is saved with the adapter) and `full`. The ViQ tokenizer stays
frozen unless `--train_vision`. `--packing --max_length 4096` packs samples into fixed-length sequences, attention not
crossing samples. The trained model (a LoRA/DoRA adapter merged in; the adapter itself in `adapter/`) and its
processor are saved to `--output_dir` and load with `AutoModelForImageTextToText` / `AutoProcessor`.

# The tiny recipe (CPU, about a minute)
```bash
python examples/make_tiny_qwen.py --output-dir outputs/tiny-qwen
python training/sft.py --config training/recipes/tiny_cpu.yaml
```

# The paper's DoRA SFT on codes, 8 GPUs
```bash
viq extract llava_onevision.json -o codes/ --model XuminYu/ViQ_weights --size 16k
accelerate launch --config_file training/accelerate_configs/multi_gpu.yaml training/sft.py \
    --config training/recipes/dora_sft_codes.yaml --dataset_name codes/ --output_dir viq16k-qwen2.5-1.5b
```

# Two CPU processes (gloo)
```bash
ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 --master_port 29517 training/sft.py \
    --config training/recipes/tiny_cpu.yaml
```
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field


@dataclass
class ViQArguments:
    r"""
    The ViQ side of a run: the parts of a VLM built from scratch, the training mode, and LLaVA image paths.
    """

    viq_model: str | None = field(
        default=None,
        metadata={"help": "ViQ tokenizer for a VLM built from parts: XuminYu/ViQ_weights (with --viq_size) or an "
                  "HF-format folder/id. Not with --model_name_or_path."},
    )  # fmt: skip
    viq_size: str | None = field(
        default=None,
        metadata={"help": "Codebook size of the authors' layout.", "choices": ["2k", "4k", "8k", "16k", "64k"]},
    )
    llm_model: str | None = field(
        default=None, metadata={"help": "Qwen2.5 causal LM (Hub id or folder) for a VLM built from parts."}
    )
    projector_type: str = field(
        default="pooled",
        metadata={"help": "Projector of a VLM built from parts: the paper's 2x2 softmax pooling, or an MLP.",
                  "choices": ["pooled", "mlp"]},
    )  # fmt: skip
    training_mode: str | None = field(
        default=None,
        metadata={"help": "What trains: projector (alignment), lora (LoRA/DoRA on the LLM + projector) or full "
                  "(LLM + projector). Default: lora with --use_peft, else full.",
                  "choices": ["projector", "lora", "full"]},
    )  # fmt: skip
    train_vision: bool = field(
        default=False, metadata={"help": "Also train the ViQ tokenizer (only its code embedder runs on codes)."}
    )
    max_pixels: int | None = field(
        default=None,
        metadata={"help": "Largest image area fed from pixels, aspect ratio kept (the paper: 768*768 = 589824). "
                  "Saved with the processor. Codes keep the resolution they were extracted at."},
    )  # fmt: skip
    image_folder: str | None = field(
        default=None, metadata={"help": "Folder of the relative image paths of a LLaVA JSON (default: its folder)."}
    )
    card_base_model: str | None = field(
        default=None,
        metadata={"help": "Hub id of the Qwen2.5 checkpoint named in the model card when --llm_model is a local "
                  "folder (--push_to_hub)."},
    )  # fmt: skip


# Folders the project's own scripts write, and how to make each: a recipe that names one before it exists says so.
MADE_BY = {
    "tiny-qwen": "python examples/make_tiny_qwen.py --output-dir {path}",
    "tiny-codes": "viq extract training/data/tiny/llava.json -o {path} --model examples/tiny-viq",
}


def check_model_folders(*names: str | None) -> None:
    """
    Every model named that looks like a local path (or lies under `outputs/`, where the project's scripts write) must
    be a folder: "no folder NAME" at once, with the script that makes it when it is one of the project's own, rather
    than a Hub request for a folder that is not there.
    """
    from transformers_viq.hub_utils import NoSuchFolderError, check_local_folder

    for name in names:
        if not name or os.path.isdir(os.path.expanduser(name)):
            continue
        made_by = MADE_BY.get(os.path.basename(os.path.normpath(name)))
        hint = f"make it first with `{made_by.format(path=name)}`" if made_by else ""
        if os.path.normpath(name).split(os.sep)[0] == "outputs":
            raise NoSuchFolderError(f"no folder {name}" + (f"; {hint}" if hint else ""))
        check_local_folder(name, hint)


def _is_hub_id(name: str | None) -> bool:
    return bool(name) and not os.path.exists(os.path.expanduser(name)) and name.count("/") == 1


def main(script_args, training_args, model_args, viq_args):
    import torch
    import transformers
    from packaging.version import Version
    from trl import SFTTrainer

    import transformers_viq  # noqa: F401  (registers the Auto classes)
    from transformers_viq import ViQImageProcessor, push_to_hub_with_card
    from transformers_viq.extraction import read_code_metadata
    from transformers_viq.logging_utils import get_logger
    from transformers_viq.training import (
        LogSkippedSamples,
        SkippedSamplesCallback,
        ViQCodesCollator,
        ViQImageCollator,
        check_trainable,
        language_model_lora_config,
        load_sft_dataset,
        load_vlm,
        prepare_for_training,
        save_trained_vlm,
        set_training_mode,
    )

    logger = get_logger("training.sft")
    check_model_folders(model_args.model_name_or_path, viq_args.viq_model, viq_args.llm_model)
    if not script_args.dataset_name:
        raise ValueError("No data: give --dataset_name (a code dataset, a LLaVA JSON/JSONL file or a dataset).")
    if training_args.eval_strategy != "no":
        raise ValueError("This script trains only; evaluate the saved model with eval/ (lmms-eval).")

    # What trains
    mode = viq_args.training_mode or ("lora" if model_args.use_peft else "full")
    if model_args.use_peft and mode != "lora":
        raise ValueError(f"--use_peft goes with --training_mode lora, not {mode!r}.")

    # The hub push happens once, at the end, with the ViQ model card (not TRL's checkpoint pushes)
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    repo_id = training_args.hub_model_id or os.path.basename(os.path.normpath(training_args.output_dir))
    card_base = viq_args.card_base_model or (viq_args.llm_model if _is_hub_id(viq_args.llm_model) else None)
    if push_to_hub and not (card_base or model_args.model_name_or_path):
        raise ValueError("--push_to_hub with a local --llm_model needs --card_base_model (its Qwen2.5 Hub id).")

    # Model and processor
    dtype = None if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    source = os.path.expanduser(script_args.dataset_name)
    code_meta = read_code_metadata(source) if os.path.isfile(os.path.join(source, "viq_codes.json")) else None
    image_processor = ViQImageProcessor.from_dict(code_meta["processor"]) if code_meta else None
    if viq_args.max_pixels and code_meta:
        logger.warning("--max_pixels is ignored on codes: their resolution was set when they were extracted.")
    elif viq_args.max_pixels:
        image_processor = ViQImageProcessor(size_divisor=32, max_pixels=viq_args.max_pixels)
    load_kwargs = {"revision": model_args.model_revision} if model_args.model_name_or_path else {}
    if model_args.attn_implementation:
        load_kwargs["attn_implementation"] = model_args.attn_implementation

    def build():
        return load_vlm(
            model_args.model_name_or_path,
            viq=viq_args.viq_model,
            viq_size=viq_args.viq_size,
            llm=viq_args.llm_model,
            projector_type=viq_args.projector_type,
            image_processor=image_processor,
            dtype=dtype,
            from_pretrained_kwargs=load_kwargs,
        )

    # A fresh projector (and any LLM weight missing from its checkpoint) is drawn from the global generator: seed it
    # before building, so that a run is repeatable from its `seed` (the trainer seeds only after the model exists).
    transformers.set_seed(training_args.seed)
    model, processor, fresh_projector = build()
    if viq_args.max_pixels and not code_meta:
        processor.image_processor.max_pixels = viq_args.max_pixels  # a saved VLM's processor too
    data = load_sft_dataset(
        source if os.path.exists(source) else script_args.dataset_name,
        split=script_args.dataset_train_split,
        image_folder=viq_args.image_folder,
        viq_config=model.config.vision_config,
    )
    logger.info(f"Training data: {data.source} ({len(data.dataset)} rows, from {data.kind}); mode {mode}.")
    set_training_mode(model, mode, train_vision=viq_args.train_vision)
    peft_config = None
    if mode == "lora":
        linears = {"linear_names": model_args.lora_target_modules} if model_args.lora_target_modules else {}
        peft_config = language_model_lora_config(
            r=model_args.lora_r,
            lora_alpha=model_args.lora_alpha,
            lora_dropout=model_args.lora_dropout,
            use_dora=model_args.use_dora,
            use_rslora=model_args.use_rslora,
            modules_to_save=model_args.lora_modules_to_save,
            **linears,
        )

    # Data: checked before the first step, packed when asked; our collators do the rest. The checks and token counts
    # run once, on the main process (`training_args.device` sets up the process group they are shared over).
    training_args.device  # noqa: B018
    packing, training_args.packing = training_args.packing, False
    train_dataset = prepare_for_training(
        data,
        processor,
        max_length=training_args.max_length,
        packing=packing,
        num_proc=training_args.dataset_num_proc,
    )
    collator_class = ViQCodesCollator if data.kind == "codes" else ViQImageCollator
    codebook = {"codebook_size": model.config.vision_config.codebook_size} if data.kind == "codes" else {}
    collator = collator_class(
        processor,
        max_length=training_args.max_length,
        packing=packing,
        source=data.dataset,
        skipped_log_dir=training_args.output_dir,
        **codebook,
    )
    collator.skipped.add_left_out(data.left_out)  # in skipped-samples-rank*.jsonl and in `skipped_samples`
    training_args.remove_unused_columns = False
    training_args.dataset_kwargs = {**(training_args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    model.config.get_text_config().use_cache = False  # training; saved models get it back

    class ViQSFTTrainer(LogSkippedSamples, SFTTrainer):
        """TRL's SFTTrainer, with the collator's `skipped_samples` in every log."""

    trainer = ViQSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=processor,
        data_collator=collator,
        peft_config=peft_config,
        callbacks=[SkippedSamplesCallback(collator)],
    )
    check_trainable(trainer.model, fresh_projector=fresh_projector, mode=mode, kind=data.kind)
    state = trainer.accelerator.state
    logger.info(
        f"Training on {state.num_processes} process(es) ({state.distributed_type}, {trainer.accelerator.device}); "
        f"{len(train_dataset)} {'packed sequences' if packing else 'rows'} per epoch."
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_state()  # trainer_state.json in output_dir: the log history, with train_runtime and the step count

    def rebuild_base():
        base, _, _ = build()
        return set_training_mode(base, mode, train_vision=viq_args.train_vision)

    save_trained_vlm(trainer, processor, training_args.output_dir, rebuild_base=rebuild_base)
    trainer.accelerator.wait_for_everyone()
    if push_to_hub and trainer.accelerator.is_main_process:
        from transformers import AutoModelForImageTextToText

        saved = AutoModelForImageTextToText.from_pretrained(training_args.output_dir)
        details = (
            f"Supervised fine-tuning with TRL on `{script_args.dataset_name}` ({data.kind}, {len(data.dataset)} "
            "rows): "
            f"training mode `{mode}`"
            + (f" (DoRA r={model_args.lora_r}, alpha={model_args.lora_alpha})" if model_args.use_dora else "")
            + f", learning rate {training_args.learning_rate}, {trainer.state.global_step} steps, "
            f"{'packed to ' + str(training_args.max_length) + ' tokens' if packing else 'unpacked'}; "
            f"ViQ tokenizer {'trained' if viq_args.train_vision else 'frozen'}."
        )
        push_to_hub_with_card(
            [saved, processor],
            repo_id,
            base_model=card_base,
            training_details=details,
            token=training_args.hub_token,
            private=training_args.hub_private_repo,
        )
        logger.info(f"Pushed the model and processor to the Hub: {repo_id}")
    if Version(transformers.__version__) >= Version("5.18.0"):
        trainer.end()
    return trainer


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None):
    from trl import ModelConfig, ScriptArguments, SFTConfig, TrlParser

    dataclass_types = (ScriptArguments, SFTConfig, ModelConfig, ViQArguments)
    if subparsers is not None:
        return subparsers.add_parser("sft", help="Train a ViQ VLM with SFT", dataclass_types=dataclass_types)
    return TrlParser(dataclass_types, prog=prog)


def run(argv: list[str]) -> None:
    """Parse the recipe and the options, then train."""
    script_args, training_args, model_args, viq_args = make_parser().parse_args_and_config(args=argv)
    main(script_args, training_args, model_args, viq_args)


if __name__ == "__main__":
    import sys

    from transformers_viq.exit_codes import debug_requested, run_main
    from transformers_viq.logging_utils import set_verbosity

    set_verbosity("info")
    # Expected errors (a bad recipe or option, missing data or model, no network) are one line on stderr with the
    # `viq` command's exit codes; --debug (or VIQ_DEBUG=1) adds the traceback.
    argv = sys.argv[1:]
    debug = debug_requested(argv)
    sys.exit(run_main("sft.py", run, [arg for arg in argv if arg != "--debug"], debug=debug))
