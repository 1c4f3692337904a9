"""Convert a published Stage-1 encoder (the continuous any-resolution SigLIP2 of ViQ) to HF format, with a proof.

    python training/convert_stage1.py --encoder giant --output-dir siglip2-g-anyres [--source XuminYu/ViQ_weights]
    python training/convert_stage1.py --encoder so400m --output-dir siglip2-so400m-anyres

Reads `anyres_vit/giant1b/siglip2_g_anyres_s4.pth` (or `anyres_vit/so400m/siglip2_so400m_anyres_s4.pth`), writes
`config.json` + `model.safetensors` + `preprocessor_config.json`, reloads the folder with `AutoModel.from_pretrained`
and checks that the features and pooled embeddings agree (to float rounding) on a few images. The result is a
native-resolution SigLIP2 on its own, and the `init_from` of Stage 2-1 (`training/recipes/viq_stage2_1.yaml`).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from transformers import AutoModel

import transformers_viq  # noqa: F401  (registers the Auto classes)
from transformers_viq import ViQImageProcessor, ViQVisionConfig, ViQVisionModel
from transformers_viq.original_checkpoint import AUTHORS_REPO


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", choices=("giant", "so400m"), required=True)
    parser.add_argument("--source", default=AUTHORS_REPO, help=f"Hub repo or local folder (default {AUTHORS_REPO})")
    parser.add_argument("-o", "--output-dir", required=True)
    parser.add_argument("--revision", default=None)
    parser.add_argument("--config", default=None, help="a ViQVisionConfig config.json (default: the encoder's preset)")
    args = parser.parse_args(argv)

    config = ViQVisionConfig.from_pretrained(args.config) if args.config else None
    model = ViQVisionModel.from_pretrained(args.source, stage1_encoder=args.encoder, config=config,
                                           revision=args.revision).eval()  # fmt: skip
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=shape, dtype=np.uint8) for shape in ((96, 128, 3), (80, 48, 3))]
    inputs = ViQImageProcessor(max_pixels=256 * 256)(images=images, return_tensors="pt")
    with torch.no_grad():
        before = model(**inputs)
    model.save_pretrained(args.output_dir)
    ViQImageProcessor().save_pretrained(args.output_dir)
    converted = AutoModel.from_pretrained(args.output_dir).eval()
    with torch.no_grad():
        after = converted(**inputs)
    for name in ("last_hidden_state", "pooler_output"):
        difference = float((getattr(before, name) - getattr(after, name)).abs().max())
        if difference > 1e-4:
            raise RuntimeError(f"Conversion check failed: the reloaded model's {name} differs by {difference:.3g}.")
    print(f"Converted the Stage-1 {args.encoder} encoder of {args.source} to {args.output_dir} "
          f"({type(converted).__name__}; features and pooled embeddings agree to float rounding).")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
