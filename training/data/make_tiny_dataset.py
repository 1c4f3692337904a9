"""Generate the tiny shapes dataset committed under `training/data/tiny/` (LLaVA-style JSON + PNG images).

A few dozen image/question/answer rows about coloured shapes on plain backgrounds: single-image questions (one and
two turns), two-image comparisons and a few text-only rows. Image sizes are multiples of 16 with odd patch grids
(e.g. 48x96 -> 3x6 patches), like the codes `viq extract` writes with its defaults. It exists so that the tiny training
recipe and the tests run in a minute on a CPU without network; the rows are deterministic (seeded).

    python training/data/make_tiny_dataset.py            # rewrites training/data/tiny/
"""

import argparse
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw


HERE = Path(__file__).resolve().parent
COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30)}
SHAPES = ("circle", "square", "triangle")
SIZES = ((48, 96), (80, 64), (80, 80), (112, 48), (64, 80), (96, 112))  # (height, width): odd patch grids mostly
BACKGROUNDS = ((255, 255, 255), (235, 235, 235), (250, 245, 230))


def draw(
    shape: str, color: tuple[int, int, int], size: tuple[int, int], background, rng: random.Random
) -> Image.Image:
    height, width = size
    image = Image.new("RGB", (width, height), background)
    side = int(min(height, width) * rng.uniform(0.5, 0.8))
    left, top = rng.randint(0, width - side), rng.randint(0, height - side)
    box = (left, top, left + side - 1, top + side - 1)
    pen = ImageDraw.Draw(image)
    if shape == "circle":
        pen.ellipse(box, fill=color)
    elif shape == "square":
        pen.rectangle(box, fill=color)
    else:
        pen.polygon([(left, top + side - 1), (left + side - 1, top + side - 1), (left + side // 2, top)], fill=color)
    return image


def turn(speaker: str, text: str) -> dict:
    return {"from": speaker, "value": text}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=str(HERE / "tiny"))
    parser.add_argument("--num-images", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    out = Path(args.output_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images = []  # (file name, shape, colour)
    for index in range(args.num_images):
        # shape, colour, size, background and question form are independent draws: no attribute (nor the row's
        # index) tells the answer, so a model must look at the picture to get it right
        shape, color = rng.choice(SHAPES), rng.choice(list(COLORS))
        name = f"images/{index:03d}_{color}_{shape}.png"
        picture = draw(shape, COLORS[color], rng.choice(SIZES), rng.choice(BACKGROUNDS), rng)
        picture.save(out / name, optimize=True)
        images.append((name, shape, color, rng.randrange(3)))

    rows = []
    for index, (name, shape, color, form) in enumerate(images):
        if form == 0:
            conversation = [
                turn("human", "<image>\nWhat shape is in the picture?"),
                turn("gpt", f"A {color} {shape}."),
            ]
        elif form == 1:
            conversation = [
                turn("human", f"<image>\nWhat colour is the {shape}?"),
                turn("gpt", f"{color.capitalize()}."),
            ]
        else:
            conversation = [turn("human", "<image>\nWhat shape is this?"), turn("gpt", f"A {shape}."),
                            turn("human", "And its colour?"), turn("gpt", f"{color.capitalize()}.")]  # fmt: skip
        rows.append({"id": f"shape-{index:03d}", "image": name, "conversations": conversation})
    for index in range(6):
        (first, shape_a, *_), (second, shape_b, *_) = rng.sample(images, 2)
        answer = f"Yes, both show a {shape_a}." if shape_a == shape_b else f"No: a {shape_a} and a {shape_b}."
        question = "<image>\n<image>\nDo the two pictures show the same shape?"
        rows.append({"id": f"pair-{index:03d}", "image": [first, second],
                     "conversations": [turn("human", question), turn("gpt", answer)]})  # fmt: skip
    for index, (a, b) in enumerate(((2, 3), (4, 1), (5, 5))):
        rows.append({"id": f"text-{index:03d}",
                     "conversations": [turn("human", f"What is {a} + {b}?"), turn("gpt", f"{a + b}.")]})  # fmt: skip
    with open(out / "llava.json", "w", encoding="utf-8") as handle:
        json.dump(rows, handle, indent=1)
        handle.write("\n")
    print(f"Wrote {len(rows)} rows and {len(images)} images to {out}")


if __name__ == "__main__":
    main()
