"""Build the VGG LPIPS of the decoder recipe from the two public files and write it as one safetensors file.

    python training/convert_lpips.py --vgg16 vgg16-397923af.pth --lin vgg.pth --output lpips-vgg16.safetensors

`--vgg16`: torchvision's ImageNet VGG16 weights (`vgg16-397923af.pth`); `--lin`: the LPIPS linear layers of the
`lpips` package (`lpips/weights/v0.1/vgg.pth`). Neither torchvision nor lpips is needed; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys

from transformers_viq.training import LPIPS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vgg16", required=True, help="torchvision vgg16-397923af.pth")
    parser.add_argument("--lin", required=True, help="lpips weights/v0.1/vgg.pth")
    parser.add_argument("--output", required=True, help="the .safetensors file to write")
    args = parser.parse_args(argv)
    LPIPS.from_vgg16_files(args.vgg16, args.lin).save(args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
