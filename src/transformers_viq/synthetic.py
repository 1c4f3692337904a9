# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Synthetic scenes of coloured shapes with independently drawn attributes: the data of the miniature (`make
miniature`) and of the tests that check that training learns.

A scene is a square picture cut into a 3x3 grid of cells. One column holds `count` copies (1 to 3, in distinct cells
of that column) of one shape in one colour, on a plain light background. Colour, shape, column, count, the rows used,
the background and small offsets are drawn independently of each other, so no attribute tells another, and each
question about a scene has a known chance rate (the most frequent answer's share under uniform draws):

    colour    red / green / blue / yellow        chance 1/4
    shape     circle / square / triangle         chance 1/3
    position  left / middle / right (column)     chance 1/3
    count     one / two / three                  chance 1/3

[`write_shapes_dataset`] writes a training split and a held-out split (other scenes, never seen in training) as
PNG images, LLaVA-style JSON (`image` + `conversations`, the four questions in a random order per image) for the
ViQ stages, `viq extract` and `training/sft.py`, and one Parquet file per question type in the column layout of the
lmms-eval tasks under `eval/tasks` (with a blank-image copy of each: the control).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass

import numpy as np


COLOURS = {"red": (214, 48, 49), "green": (46, 160, 67), "blue": (45, 85, 215), "yellow": (235, 190, 30)}
SHAPES = ("circle", "square", "triangle")
COLUMNS = ("left", "middle", "right")
COUNTS = (1, 2, 3)
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
BACKGROUNDS = ((245, 245, 245), (250, 243, 228), (232, 240, 248))
GRID = 3  # cells per side
QUESTIONS = {
    "colour": "What colour are the shapes?",
    "shape": "What shape are they?",
    "position": "Which column are the shapes in?",
    "count": "How many shapes are there?",
}
QUESTION_TYPES = tuple(QUESTIONS)
CHANCE = {"colour": 1 / len(COLOURS), "shape": 1 / len(SHAPES), "position": 1 / len(COLUMNS),
          "count": 1 / len(COUNTS)}  # fmt: skip


@dataclass(frozen=True)
class ShapeScene:
    """One scene: what is drawn and where. `rows` are the grid rows (0 = top) of the copies, `offsets` their pixel
    offsets from the cell centres, `scale` the shapes' side as a fraction of a cell."""

    colour: str
    shape: str
    column: str
    count: int
    rows: tuple[int, ...]
    offsets: tuple[tuple[int, int], ...]
    background: int
    scale: float

    def answer(self, question_type: str) -> str:
        """The one-word answer to a question type, capitalised with a full stop (`"Red."`)."""
        word = {"colour": self.colour, "shape": self.shape, "position": self.column,
                "count": COUNT_WORDS[self.count]}[question_type]  # fmt: skip
        return f"{word.capitalize()}."


def sample_scene(rng: random.Random) -> ShapeScene:
    """A scene whose colour, shape, column, count, rows, background, offsets and scale are independent draws."""
    count = rng.choice(COUNTS)
    return ShapeScene(
        colour=rng.choice(list(COLOURS)),
        shape=rng.choice(SHAPES),
        column=rng.choice(COLUMNS),
        count=count,
        rows=tuple(sorted(rng.sample(range(GRID), count))),
        offsets=tuple((rng.randint(-3, 3), rng.randint(-3, 3)) for _ in range(count)),
        background=rng.randrange(len(BACKGROUNDS)),
        scale=rng.uniform(0.55, 0.8),
    )


def draw_scene(scene: ShapeScene, size: int = 96) -> np.ndarray:
    """The scene as a `(size, size, 3)` uint8 picture (`size` a multiple of 3)."""
    from PIL import Image, ImageDraw

    if size % GRID:
        raise ValueError(f"size must be a multiple of {GRID}, got {size}.")
    cell = size // GRID
    image = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
    pen = ImageDraw.Draw(image)
    side = scene.scale * cell
    column = COLUMNS.index(scene.column)
    for row, (dx, dy) in zip(scene.rows, scene.offsets):
        cx, cy = (column + 0.5) * cell + dx, (row + 0.5) * cell + dy
        box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
        if scene.shape == "circle":
            pen.ellipse(box, fill=COLOURS[scene.colour])
        elif scene.shape == "square":
            pen.rectangle(box, fill=COLOURS[scene.colour])
        else:
            pen.polygon([(box[0], box[3]), (box[2], box[3]), (cx, box[1])], fill=COLOURS[scene.colour])
    return np.asarray(image)


def blank_image(size: int = 96, background: int = 0) -> np.ndarray:
    """The control picture: the background alone, nothing to see."""
    return np.full((size, size, 3), BACKGROUNDS[background], dtype=np.uint8)


def conversation(scene: ShapeScene, rng: random.Random) -> list[dict]:
    """The four questions about a scene and their answers, in a random order, LLaVA-style (`<image>` first)."""
    order = list(QUESTION_TYPES)
    rng.shuffle(order)
    turns = []
    for index, kind in enumerate(order):
        prompt = QUESTIONS[kind] if index else f"<image>\n{QUESTIONS[kind]}"
        turns += [{"from": "human", "value": prompt}, {"from": "gpt", "value": scene.answer(kind)}]
    return turns


def words() -> list[str]:
    """Every word of the questions and answers (for a small test tokenizer)."""
    text = " ".join([*QUESTIONS.values(), *COLOURS, *SHAPES, *COLUMNS, *COUNT_WORDS.values()])
    found = {word.strip("?.").lower() for word in text.split()}
    found |= {word.capitalize() for word in found}
    return sorted(found) + ["?", "."]


@dataclass
class ShapesDataset:
    """Paths written by [`write_shapes_dataset`]."""

    root: str
    train_json: str
    heldout_json: str
    heldout_tasks: dict  # question type -> Parquet file (images as PNG bytes, `question`, `answer`)
    blank_tasks: dict  # the same questions with blank images
    train_images: str
    heldout_images: str


def write_shapes_dataset(root: str | os.PathLike, num_train: int = 512, num_heldout: int = 128, size: int = 96,
                         seed: int = 0) -> ShapesDataset:  # fmt: skip
    """
    Write the training and held-out splits under `root` (see the module docstring). Deterministic for a seed; the
    held-out scenes are drawn from their own stream and any scene identical to a training scene is redrawn, so no
    held-out picture was seen in training.
    """
    import pandas as pd
    from PIL import Image

    root = os.fspath(root)
    rng = random.Random(seed)
    paths = ShapesDataset(root=root, train_json=os.path.join(root, "train.json"),
                          heldout_json=os.path.join(root, "heldout.json"), heldout_tasks={}, blank_tasks={},
                          train_images=os.path.join(root, "train"),
                          heldout_images=os.path.join(root, "heldout"))  # fmt: skip
    train = [sample_scene(rng) for _ in range(num_train)]
    seen = set(train)
    heldout_rng = random.Random(seed + 1_000_003)
    heldout = []
    while len(heldout) < num_heldout:
        scene = sample_scene(heldout_rng)
        if scene not in seen:
            heldout.append(scene)
            seen.add(scene)
    for split, scenes, folder, target in (("train", train, paths.train_images, paths.train_json),
                                          ("heldout", heldout, paths.heldout_images, paths.heldout_json)):  # fmt: skip
        os.makedirs(folder, exist_ok=True)
        records = []
        for index, scene in enumerate(scenes):
            name = f"{split}/{index:05d}.png"
            Image.fromarray(draw_scene(scene, size)).save(os.path.join(root, name))
            records.append({"id": f"{split}-{index:05d}", "image": name, "conversations": conversation(scene, rng),
                            "scene": asdict(scene)})  # fmt: skip
        with open(target, "w") as handle:
            json.dump(records, handle, indent=1)
    tasks = os.path.join(root, "tasks")
    os.makedirs(tasks, exist_ok=True)
    blank_png = _png_bytes(blank_image(size))
    for kind in QUESTION_TYPES:
        rows = [{"id": f"heldout-{i:05d}", "image": _png_bytes(draw_scene(s, size)), "question": QUESTIONS[kind],
                 "answer": s.answer(kind), "question_type": kind} for i, s in enumerate(heldout)]  # fmt: skip
        for name, table, target in ((kind, rows, paths.heldout_tasks),
                                    (f"{kind}_blank", [{**row, "image": blank_png} for row in rows],
                                     paths.blank_tasks)):  # fmt: skip
            target[kind] = os.path.join(tasks, f"{name}.parquet")
            pd.DataFrame(table).to_parquet(target[kind])
            with open(os.path.join(tasks, f"{TASK_PREFIX}{name}.yaml"), "w") as handle:
                handle.write(_TASK_YAML.format(task=f"{TASK_PREFIX}{name}", data=f"{name}.parquet"))
    return paths


TASK_PREFIX = "miniature_"
# One lmms-eval task per question type (and per blank control): greedy answers of a few tokens, exact match after
# dropping case and punctuation ("red" matches "Red.").
_TASK_YAML = """task: {task}
dataset_path: parquet
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function transformers_viq.synthetic.task_doc_to_visual
doc_to_text: !function transformers_viq.synthetic.task_doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 8
  temperature: 0
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: true
metadata:
  - version: 0.0
"""


def task_doc_to_visual(doc: dict) -> list:
    """lmms-eval: the picture of a held-out task row (PNG bytes) as a one-element list of PIL images."""
    import io

    from PIL import Image

    image = doc["image"]
    data = image["bytes"] if isinstance(image, dict) else image
    return [Image.open(io.BytesIO(data)).convert("RGB")]


def task_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """lmms-eval: the question of a held-out task row, as asked in training."""
    return doc["question"]


def _png_bytes(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


__all__ = [
    "CHANCE",
    "COLOURS",
    "COLUMNS",
    "COUNTS",
    "QUESTIONS",
    "QUESTION_TYPES",
    "SHAPES",
    "TASK_PREFIX",
    "ShapeScene",
    "ShapesDataset",
    "blank_image",
    "conversation",
    "draw_scene",
    "sample_scene",
    "task_doc_to_text",
    "task_doc_to_visual",
    "words",
    "write_shapes_dataset",
]
