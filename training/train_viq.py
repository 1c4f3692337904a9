"""Train ViQ itself, one stage per run, from a YAML recipe (paper section 3, appendix A; 4.4 for the decoder).

    python training/train_viq.py --config training/recipes/viq_stage1.yaml      # text-aligned any-res pre-training
    python training/train_viq.py --config training/recipes/viq_stage2_1.yaml    # bottleneck + L-inf proximal
    python training/train_viq.py --config training/recipes/viq_stage2_2.yaml    # FSQ head
    python training/train_viq.py --config training/recipes/viq_decoder.yaml     # decoder fine-tuning

Every field of the recipe can be overridden on the command line (`--learning_rate 1e-5`, `--output_dir ...`,
`--model_config '{"bottleneck_dim": 256}'`). Many GPUs: the same command under accelerate (DDP, DeepSpeed, FSDP),
with the shared configs of `training/accelerate_configs/`:

    accelerate launch --config_file training/accelerate_configs/multi_gpu.yaml \
        training/train_viq.py --config training/recipes/viq_stage2_1.yaml

A run resumes from its last checkpoint with `--resume_from_checkpoint auto` (the recipes' default) or from a given
`checkpoint-N` folder. Each stage writes an HF-format model to `output_dir` that the next stage reads (`init_from`):
Stage 1 a `ViQVisionModel`, Stage 2-1 a `ViQModel` with the proximal bottleneck, Stage 2-2 and the decoder a
`ViQModel` that encodes images to codes (`AutoModel.from_pretrained(output_dir)`).

At tiny size on a CPU: `python training/make_tiny_assets.py`, then the recipes of `training/recipes/tiny/`.
"""

from __future__ import annotations

import logging
import sys

from transformers_viq import logging_utils
from transformers_viq.exit_codes import debug_requested, run_main
from transformers_viq.training import parse_stage_arguments, run_stage


def main(argv: list[str] | None = None) -> int:
    stage_args, training_args = parse_stage_arguments(argv)
    logging_utils.configure(logging.INFO if training_args.should_log else logging.WARNING,
                            progress=not training_args.disable_tqdm, libraries=False)  # fmt: skip
    result = run_stage(stage_args, training_args)
    if training_args.should_save:
        summary = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.metrics.items())
        print(f"{stage_args.stage}: wrote {result.output_dir} ({summary})")
    return 0


if __name__ == "__main__":
    # a bad recipe, missing data or model, no network: one line on stderr with the `viq` command's exit codes;
    # --debug (or VIQ_DEBUG=1) adds the traceback
    argv = sys.argv[1:]
    sys.exit(run_main("train_viq.py", main, [arg for arg in argv if arg != "--debug"], debug=debug_requested(argv)))
