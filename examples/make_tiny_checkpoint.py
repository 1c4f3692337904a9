"""Build the tiny smoke checkpoint committed under `examples/tiny-viq/` (HF format).

It has every stage of the real ViQ (trunk, fusion block, headless RoPE quantizer, code embedder, pooling head, latent
head, Qwen-Image-style VAE) at widths of 32, random weights, and the 16k codebook. Its quantizer projection is
calibrated on the bundled sample images so its codes vary from patch to patch. It exists so that `make demo` and the
tests run in seconds without network; it knows nothing about images.

    python examples/make_tiny_checkpoint.py --output-dir examples/tiny-viq
"""

import argparse
from pathlib import Path

import torch

from transformers_viq import ViQConfig, ViQImageProcessor, ViQModel
from transformers_viq.training import calibrate_quantizer


REPO = Path(__file__).resolve().parents[1]

TINY_CONFIG = {
    "vision_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "patch_size": 16,
        "position_embedding_size": 16,
    },
    "quantizer_attention_dim": 16,
    "latent_norm_groups": 4,
    "vae_config": {
        "base_dim": 8,
        "z_dim": 16,
        "dim_mult": [1, 2, 2, 2],
        "num_res_blocks": 1,
        "attn_scales": [],
        "temperal_downsample": [False, True, True],
        "dropout": 0.0,
    },
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=str(REPO / "examples" / "tiny-viq"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    config = ViQConfig.from_preset("16k", **TINY_CONFIG)
    model = ViQModel(config).eval()
    processor = ViQImageProcessor(max_pixels=512 * 512)
    samples = sorted((REPO / "assets" / "samples").glob("*.png"))
    inputs = processor(images=[str(p) for p in samples], return_tensors="pt")
    calibrate_quantizer(model, inputs["pixel_values"], inputs["image_grid_hw"])
    model.save_pretrained(args.output_dir)
    processor.save_pretrained(args.output_dir)
    codes = model.encode(**inputs).image_codes
    print(f"Wrote {args.output_dir}: {sum(p.numel() for p in model.parameters()):,} parameters; "
          f"{codes.unique().numel()} distinct codes over {codes.numel()} on the samples")  # fmt: skip


if __name__ == "__main__":
    main()
