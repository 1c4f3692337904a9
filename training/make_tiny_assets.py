"""Write tiny stand-ins of everything ViQ training reads (SigLIP2 teacher, Qwen2 LLM, Qwen-Image VAE, LPIPS, DINOv2,
an image-text dataset), at widths of 32 with random weights, for running the stages on a CPU in seconds:

    python training/make_tiny_assets.py                      # -> outputs/tiny-assets
    python training/train_viq.py --config training/recipes/tiny/viq_stage1.yaml
    python training/train_viq.py --config training/recipes/tiny/viq_stage2_1.yaml
    python training/train_viq.py --config training/recipes/tiny/viq_stage2_2.yaml
    python training/train_viq.py --config training/recipes/tiny/viq_decoder.yaml
    python eval/reconstruction.py --model outputs/tiny/viq-decoder --images outputs/tiny-assets/eval-images

The numbers mean nothing: this checks that the recipe runs end to end, saves, resumes and hands over.
"""

from __future__ import annotations

import argparse
import sys

from transformers_viq.testing.training import make_tiny_training_assets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="outputs/tiny-assets", help="folder to write")
    parser.add_argument("--rows", type=int, default=8, help="image-text rows of the synthetic dataset")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    assets = make_tiny_training_assets(args.output, num_rows=args.rows, seed=args.seed)
    for name, path in vars(assets).items():
        print(f"{name:12s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
