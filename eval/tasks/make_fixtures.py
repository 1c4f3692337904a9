"""Write the offline fixtures of the paper's nine lmms-eval benchmarks: a few rows each, in the benchmark's own schema.

Each `eval/tasks/<task>_fixture/` holds `<split>.parquet` (written here) and `<task>_fixture.yaml`, lmms-eval's own
task (same prompts, processing and metrics: `!function lmms_eval.tasks.<benchmark>.utils...`) reading that file
instead of the Hub dataset. With `--include_path eval/tasks` the whole chain runs without network:

    lmms-eval --model viq_qwen --model_args pretrained=<VLM> --include_path eval/tasks \\
        --tasks mmstar_fixture,mmmu_val_fixture,simplevqa_fixture,infovqa_val_fixture,textvqa_val_fixture,\\
docvqa_val_fixture,ocrbench_fixture,ai2d_fixture,chartqa_fixture

The columns are those of the public datasets that lmms-eval 0.7.3 loads (`Lin-Chen/MMStar`, `lmms-lab-encoder/MMMU`,
`m-a-p/SimpleVQA`, `lmms-lab-encoder/DocVQA` (DocVQA and InfographicVQA), `lmms-lab-encoder/textvqa`,
`echo840/OCRBench`, `lmms-lab-encoder/ai2d`, `lmms-lab-encoder/ChartQA`): every column lmms-eval's utils read, with
the same types, plus the datasets' identifier columns. The images are small generated pictures of different sizes
(so batches mix image sizes); MMMU has a document with two images. The answers are chosen so that a model answering
known strings gets scores that test each metric's rules (per-category averages, partial ANLS, leave-one-out VQA
accuracy, relaxed numeric matching, option-letter extraction); see tests/test_lmms_eval.py.

    python eval/tasks/make_fixtures.py            # rewrites the nine parquet files (deterministic)
"""

from __future__ import annotations

import argparse
import base64
import io
from pathlib import Path

import datasets
from PIL import Image, ImageDraw


HERE = Path(__file__).resolve().parent
WHITE, BLACK, RED, GREEN, BLUE = (255, 255, 255), (0, 0, 0), (220, 40, 40), (40, 160, 60), (40, 80, 220)


def picture(width: int, height: int, background=WHITE, shapes=(), text: str | None = None) -> Image.Image:
    """A small RGB picture: shapes `(kind, box, colour)` with kind `ellipse`/`rectangle`, and a line of text."""
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    for kind, box, colour in shapes:
        getattr(draw, kind)(box, fill=colour)
    if text:
        draw.text((4, height // 2 - 6), text, fill=BLACK)
    return image


def bars(values, width: int = 96, height: int = 64, colour=BLUE) -> Image.Image:
    """A bar chart of `values` (0..50) with their numbers above the bars."""
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    step = width // len(values)
    for index, value in enumerate(values):
        top = height - 4 - int(value)
        draw.rectangle((index * step + 4, top, index * step + step - 4, height - 4), fill=colour)
        draw.text((index * step + 4, max(top - 11, 0)), str(value), fill=BLACK)
    return image


def jpeg_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def mmstar() -> tuple[str, list[dict], datasets.Features]:
    def row(index, question, image, answer, category, l2_category):
        meta = {"source": "fixture", "split": "val", "image_path": f"images/{index}.png"}
        return {"index": index, "question": question, "image": image, "answer": answer, "category": category,
                "l2_category": l2_category, "meta_info": meta}  # fmt: skip

    rows = [
        row(0, "Which shape is drawn in the centre of the image?\nOptions: A: circle, B: square, C: triangle, D: star",
            picture(64, 64, shapes=[("ellipse", (16, 16, 48, 48), RED)]), "A", "coarse perception",
            "image scene and topic"),
        row(1, "What colour is the background of the picture?\nOptions: A: red, B: green, C: blue, D: white",
            picture(96, 64, background=BLUE), "C", "coarse perception", "image scene and topic"),
        row(2, "What is the theme of this drawing of two suns?\nOptions: A: night, B: sea, C: city, D: sky",
            picture(64, 96, shapes=[("ellipse", (8, 8, 30, 30), RED), ("ellipse", (34, 50, 56, 72), RED)]), "D",
            "coarse perception", "image scene and topic"),
        row(3, "How many green dots are there?\nOptions: A: 1, B: 2, C: 3, D: 4",
            picture(128, 64, shapes=[("ellipse", (10, 20, 30, 40), GREEN), ("ellipse", (70, 20, 90, 40), GREEN)]),
            "B", "fine-grained perception", "object counting"),
    ]  # fmt: skip
    meta = datasets.Features({"source": datasets.Value("string"), "split": datasets.Value("string"),
                              "image_path": datasets.Value("string")})  # fmt: skip
    features = datasets.Features({
        "index": datasets.Value("int64"), "question": datasets.Value("string"), "image": datasets.Image(),
        "answer": datasets.Value("string"), "category": datasets.Value("string"),
        "l2_category": datasets.Value("string"), "meta_info": meta,
    })  # fmt: skip
    return "val", rows, features


def mmmu_val() -> tuple[str, list[dict], datasets.Features]:
    def row(id_, question, options, answer, question_type, images, subfield):
        columns = {f"image_{index}": None for index in range(1, 8)}
        columns.update({f"image_{index}": image for index, image in enumerate(images, start=1)})
        return {"id": id_, "question": question, "options": repr(options), "explanation": "", **columns,
                "img_type": "['Diagrams']", "answer": answer, "topic_difficulty": "Easy",
                "question_type": question_type, "subfield": subfield}  # fmt: skip

    rows = [
        row("validation_Math_1", "<image 1> How many bars are taller than the others in the chart?",
            ["1", "2", "3", "4"], "B", "multiple-choice", [bars([40, 40, 10, 10])], "Arithmetic"),
        row("validation_Art_1", "Which picture shows the warmer colour, <image 1> or <image 2>?",
            ["The first", "The second"], "A", "multiple-choice",
            [picture(64, 64, background=RED), picture(96, 32, background=BLUE)], "Colour theory"),
        row("validation_Physics_1", "<image 1> How many balls are resting on the floor?", [], "3", "open",
            [picture(96, 64, shapes=[("ellipse", (x, 40, x + 16, 56), GREEN) for x in (8, 40, 72)])], "Mechanics"),
        row("validation_Geography_1", "<image 1> On which side of the map is the sea drawn?",
            ["north", "south", "east", "west"], "C", "multiple-choice",
            [picture(128, 64, shapes=[("rectangle", (96, 0, 128, 64), BLUE)])], "Maps"),
    ]  # fmt: skip
    features = datasets.Features({
        "id": datasets.Value("string"), "question": datasets.Value("string"), "options": datasets.Value("string"),
        "explanation": datasets.Value("string"),
        **{f"image_{index}": datasets.Image() for index in range(1, 8)},
        "img_type": datasets.Value("string"), "answer": datasets.Value("string"),
        "topic_difficulty": datasets.Value("string"), "question_type": datasets.Value("string"),
        "subfield": datasets.Value("string"),
    })  # fmt: skip
    return "validation", rows, features


def simplevqa() -> tuple[str, list[dict], datasets.Features]:
    def row(data_id, question, answer, image, category):
        return {"data_id": data_id, "image": jpeg_base64(image), "question": question, "answer": answer,
                "image_description": "", "language": "EN", "original_category": category,
                "source": "fixture"}  # fmt: skip

    rows = [
        row(0, "What colour is the square in this picture?", "red",
            picture(64, 64, shapes=[("rectangle", (16, 16, 48, 48), RED)]), "colour"),
        row(1, "Which capital letter is printed on the card?", "K", picture(96, 64, text="K"), "text"),
        row(2, "What geometric shape is the green object?", "circle",
            picture(64, 96, shapes=[("ellipse", (12, 30, 52, 70), GREEN)]), "shape"),
        row(3, "How many blue stripes cross the flag?", "3",
            picture(128, 64, shapes=[("rectangle", (0, y, 128, y + 8), BLUE) for y in (8, 28, 48)]), "counting"),
    ]  # fmt: skip
    features = datasets.Features({
        "data_id": datasets.Value("int64"), "image": datasets.Value("string"), "question": datasets.Value("string"),
        "answer": datasets.Value("string"), "image_description": datasets.Value("string"),
        "language": datasets.Value("string"), "original_category": datasets.Value("string"),
        "source": datasets.Value("string"),
    })  # fmt: skip
    return "test", rows, features


def infovqa_val() -> tuple[str, list[dict], datasets.Features]:
    def row(question_id, question, answers, image):
        return {"questionId": question_id, "question": question, "answers": answers, "answer_type": ["single span"],
                "image": image, "image_url": f"https://example.invalid/{question_id}.png", "operation/reasoning": [],
                "ocr": "", "data_split": "val"}  # fmt: skip

    rows = [
        row("90001", "How many visitors came in the record year?", ["1,250", "1250"], picture(96, 64, text="1250")),
        row("90002", "Which kind of energy does the poster promote?", ["renewable energy"],
            picture(128, 64, text="renewable energy")),
        row("90003", "Which continent is highlighted on the infographic?", ["asia"], picture(64, 96, text="Asia")),
    ]  # fmt: skip
    features = datasets.Features({
        "questionId": datasets.Value("string"), "question": datasets.Value("string"),
        "answers": datasets.Sequence(datasets.Value("string")),
        "answer_type": datasets.Sequence(datasets.Value("string")), "image": datasets.Image(),
        "image_url": datasets.Value("string"), "operation/reasoning": datasets.Sequence(datasets.Value("string")),
        "ocr": datasets.Value("string"), "data_split": datasets.Value("string"),
    })  # fmt: skip
    return "validation", rows, features


def textvqa_val() -> tuple[str, list[dict], datasets.Features]:
    def row(question_id, question, answers, image, ocr_tokens):
        return {"image_id": f"fixture{question_id}", "question_id": question_id, "question": question,
                "question_tokens": question.rstrip("?").split(), "image": image, "image_width": image.width,
                "image_height": image.height, "flickr_original_url": "", "flickr_300k_url": "", "answers": answers,
                "image_classes": ["Sign"], "set_name": "val", "ocr_tokens": ocr_tokens}  # fmt: skip

    rows = [
        row(80001, "what does the red sign say?", ["stop"] * 10,
            picture(64, 64, shapes=[("rectangle", (8, 8, 56, 56), RED)], text="STOP"), ["stop"]),
        row(80002, "which drink brand is on the can?", ["coca cola"] * 2 + ["pepsi"] * 8,
            picture(96, 64, text="pepsi"), ["pepsi"]),
        row(80003, "what number is on the jersey?", ["7"] * 10, picture(64, 96, text="7"), ["7"]),
    ]  # fmt: skip
    strings = datasets.Sequence(datasets.Value("string"))
    features = datasets.Features({
        "image_id": datasets.Value("string"), "question_id": datasets.Value("int64"),
        "question": datasets.Value("string"), "question_tokens": strings, "image": datasets.Image(),
        "image_width": datasets.Value("int64"), "image_height": datasets.Value("int64"),
        "flickr_original_url": datasets.Value("string"), "flickr_300k_url": datasets.Value("string"),
        "answers": strings, "image_classes": strings, "set_name": datasets.Value("string"), "ocr_tokens": strings,
    })  # fmt: skip
    return "validation", rows, features


def docvqa_val() -> tuple[str, list[dict], datasets.Features]:
    def row(question_id, question, answers, image):
        return {"questionId": question_id, "question": question, "question_types": ["form"], "image": image,
                "docId": int(question_id) // 10, "ucsf_document_id": f"fx{question_id}", "ucsf_document_page_no": "1",
                "answers": answers, "data_split": "val"}  # fmt: skip

    rows = [
        row("70001", "What is the total amount on the invoice?", ["$42.00", "42.00"], picture(96, 64, text="$42.00")),
        row("70002", "On what date was the letter written?", ["march 3, 1999"],
            picture(128, 64, text="March 3, 1999")),
        row("70003", "Who signed the memo?", ["smith"], picture(64, 64, text="Smith")),
    ]  # fmt: skip
    strings = datasets.Sequence(datasets.Value("string"))
    features = datasets.Features({
        "questionId": datasets.Value("string"), "question": datasets.Value("string"), "question_types": strings,
        "image": datasets.Image(), "docId": datasets.Value("int64"), "ucsf_document_id": datasets.Value("string"),
        "ucsf_document_page_no": datasets.Value("string"), "answers": strings, "data_split": datasets.Value("string"),
    })  # fmt: skip
    return "validation", rows, features


def ocrbench() -> tuple[str, list[dict], datasets.Features]:
    def row(dataset, question, question_type, answer, image):
        return {"dataset": dataset, "question": question, "question_type": question_type, "answer": answer,
                "image": image}  # fmt: skip

    rows = [
        row("IIIT5K", "what is written in the image?", "Regular Text Recognition", ["HELLO"],
            picture(96, 32, text="HELLO")),
        row("HME100k", "Please write out the expression of the formula in the image using LaTeX format.",
            "Handwritten Mathematical Expression Recognition", ["x^2+1"], picture(64, 64, text="x^2+1")),
        row("docVQA", "In which year was the report published?", "Doc-oriented VQA", ["1999"],
            picture(128, 64, text="Report 1999")),
        row("SROIE", "what is the label of the last line of the receipt?", "Key Information Extraction", ["TOTAL"],
            picture(64, 96, text="TOTAL")),
    ]  # fmt: skip
    features = datasets.Features({
        "dataset": datasets.Value("string"), "question": datasets.Value("string"),
        "question_type": datasets.Value("string"), "answer": datasets.Sequence(datasets.Value("string")),
        "image": datasets.Image(),
    })  # fmt: skip
    return "test", rows, features


def ai2d() -> tuple[str, list[dict], datasets.Features]:
    rows = [
        {"question": "Which object in the diagram gives off light?", "options": ["the moon", "the sun", "the earth"],
         "answer": "1", "image": picture(96, 64, shapes=[("ellipse", (30, 10, 66, 46), RED)])},
        {"question": "What does the arrow from the cloud stand for?", "options": ["rain", "wind", "snow", "heat"],
         "answer": "0", "image": picture(64, 96, shapes=[("rectangle", (28, 20, 36, 80), BLUE)])},
        {"question": "Which stage comes after the egg in the life cycle?", "options": ["adult", "pupa", "larva"],
         "answer": "2", "image": picture(128, 64, text="egg -> ?")},
    ]  # fmt: skip
    features = datasets.Features({
        "question": datasets.Value("string"), "options": datasets.Sequence(datasets.Value("string")),
        "answer": datasets.Value("string"), "image": datasets.Image(),
    })  # fmt: skip
    return "test", rows, features


def chartqa() -> tuple[str, list[dict], datasets.Features]:
    rows = [
        {"type": "human_test", "question": "What is the highest value in the bar chart?", "answer": "40",
         "image": bars([10, 40, 25])},
        {"type": "human_test", "question": "What share of the votes did the winner get?", "answer": "25%",
         "image": bars([25, 20], width=64)},
        {"type": "augmented_test", "question": "What colour are the bars?", "answer": "Blue",
         "image": bars([5, 15, 30, 45], width=128)},
        {"type": "augmented_test", "question": "How many units were sold in May?", "answer": "12",
         "image": bars([12, 30], width=64, colour=GREEN)},
    ]  # fmt: skip
    features = datasets.Features({
        "type": datasets.Value("string"), "question": datasets.Value("string"), "answer": datasets.Value("string"),
        "image": datasets.Image(),
    })  # fmt: skip
    return "test", rows, features


FIXTURES = {
    "mmstar": mmstar,
    "mmmu_val": mmmu_val,
    "simplevqa": simplevqa,
    "infovqa_val": infovqa_val,
    "textvqa_val": textvqa_val,
    "docvqa_val": docvqa_val,
    "ocrbench": ocrbench,
    "ai2d": ai2d,
    "chartqa": chartqa,
}


def write(task: str, root: Path = HERE) -> Path:
    split, rows, features = FIXTURES[task]()
    path = root / f"{task}_fixture" / f"{split}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {name: [row[name] for row in rows] for name in features}
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="*", default=list(FIXTURES), choices=list(FIXTURES))
    parser.add_argument("--output-dir", type=Path, default=HERE, help="where the <task>_fixture folders are")
    args = parser.parse_args(argv)
    datasets.disable_progress_bars()
    for task in args.tasks:
        path = write(task, args.output_dir)
        print(f"{path.relative_to(args.output_dir)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
