"""Training data pieces: the three sources, checks before training, token counts, packing without cross-attention,
unreadable images skipped and counted, and the trainability checks."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transformers_viq import IncompatibleCodebookError, ViQImageProcessor, ViQProcessor, extract_codes, load_llava_json
from transformers_viq.testing import make_tiny_model, make_tiny_vlm, qwen_tokenizer
from transformers_viq.training import (
    ViQCodesCollator,
    ViQImageCollator,
    check_conversations,
    check_trainable,
    freeze,
    load_sft_dataset,
    pack_by_length,
    packed_index_dataset,
    prepare_for_training,
    sample_lengths,
)
from transformers_viq.training.data import image_size


REPO = Path(__file__).resolve().parents[1]
TINY_DATA = REPO / "training" / "data" / "tiny" / "llava.json"


@pytest.fixture(scope="module")
def processor():
    return ViQProcessor(tokenizer=qwen_tokenizer())


@pytest.fixture(scope="module")
def tiny_codes(tmp_path_factory):
    """The bundled tiny data extracted with the defaults of `viq extract` (size_divisor=16: odd grids)."""
    folder = tmp_path_factory.mktemp("codes")
    extract_codes(load_llava_json(TINY_DATA), folder, make_tiny_model(), image_column="images", progress=False)
    return folder


def test_pack_by_length_places_every_fitting_row_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 120, size=200).tolist() + [0, -1, 130, 100]
    packs = pack_by_length(lengths, 100)
    placed = [index for pack in packs for index in pack]
    assert sorted(placed) == [i for i, n in enumerate(lengths) if 0 < n <= 100]
    assert all(sum(lengths[i] for i in pack) <= 100 for pack in packs)
    assert sum(lengths[i] for i in placed) / (100 * len(packs)) > 0.9  # best-fit decreasing packs tightly
    assert packs == pack_by_length(lengths, 100)  # deterministic: every rank builds the same packs
    with pytest.raises(ValueError, match="positive"):
        pack_by_length([1], 0)


def test_token_counts_match_the_collated_samples(processor, tiny_codes):
    """Lengths are counted without decoding images (grids; image headers) and must equal what the collators build."""
    codes = load_sft_dataset(tiny_codes)
    assert codes.kind == "codes"
    grids = [tuple(g) for row in codes.dataset["image_grid_hw"] for g in row]
    assert any(h % 2 or w % 2 for h, w in grids)  # viq extract defaults give odd grids; they train as they are
    pixels = load_sft_dataset(TINY_DATA)
    assert pixels.kind == "pixels"
    for data, collator_class in ((codes, ViQCodesCollator), (pixels, ViQImageCollator)):
        lengths, errors = sample_lengths(data.dataset, processor, data.kind)
        assert not errors
        collator = collator_class(processor)
        for index in (0, 1, 2, 26, 31):  # one-turn, two-turn, two-image and text-only rows
            batch = collator([data.dataset[index]])
            assert batch["input_ids"].shape[1] == lengths[index], (data.kind, index)


def test_codes_outside_the_codebook_are_refused_by_the_collator_with_the_row_named(processor, tiny_codes):
    """The training forward reads no code values back; the collator checks them on the CPU against the codebook."""
    row = dict(load_sft_dataset(tiny_codes).dataset[0])
    limit = int(max(row["image_codes"][0])) + 1
    assert ViQCodesCollator(processor, codebook_size=limit)([row])["image_codes"].numel()
    row["image_codes"] = [list(row["image_codes"][0][:-1]) + [limit]]
    with pytest.raises(ValueError, match=rf"'shape-000': image 0 has codes \d+\.\.{limit}, outside \[0, {limit}\)"):
        ViQCodesCollator(processor, codebook_size=limit)([row])


def test_packed_samples_do_not_attend_to_each_other(processor, tiny_codes):
    """A packed sequence gives each sample the logits it gets alone: positions restart, attention stays inside."""
    vlm = make_tiny_vlm(qwen_tokenizer())
    data = load_sft_dataset(tiny_codes)
    indices = [0, 26, 31]  # an image, two images, no image
    lengths, _ = sample_lengths(data.dataset, processor, "codes")
    max_length = sum(lengths[i] for i in indices) + 5
    packed = ViQCodesCollator(processor, max_length=max_length, packing=True, source=data.dataset)
    batch = packed([{"pack": indices}])
    assert set(batch) == {"input_ids", "labels", "position_ids", "image_codes", "image_grid_hw"}
    assert batch["input_ids"].shape == (1, max_length)
    with torch.no_grad():
        logits = vlm(**batch).logits[0]
        start = 0
        for index in indices:
            alone = ViQCodesCollator(processor)([data.dataset[index]])
            expected = vlm(**alone).logits[0]
            n = expected.shape[0]
            torch.testing.assert_close(logits[start : start + n], expected, atol=2e-4, rtol=1e-4)
            assert torch.equal(batch["labels"][0, start : start + n], alone["labels"][0])
            start += n
    assert (batch["labels"][0, start:] == -100).all()


def test_prepare_for_training_packs_and_leaves_out_long_rows(processor, tiny_codes, caplog):
    data = load_sft_dataset(tiny_codes)
    lengths, _ = sample_lengths(data.dataset, processor, "codes")
    limit = sorted(lengths)[-3]  # the two longest rows do not fit
    train = prepare_for_training(data, processor, max_length=limit, packing=True)
    assert train.column_names == ["pack"]
    packed = sorted(i for pack in train["pack"] for i in pack)
    assert len(packed) == len(lengths) - len(data.skipped["too_long"]) and len(data.skipped["too_long"]) >= 2
    assert all(sum(lengths[i] for i in pack) <= limit for pack in train["pack"])
    unpacked = prepare_for_training(data, processor, max_length=limit)
    assert len(unpacked) == len(packed)
    with pytest.raises(ValueError, match="Packing needs `max_length`"):
        prepare_for_training(data, processor, packing=True)


def test_codes_of_another_codebook_are_refused_naming_both(tiny_codes):
    vlm_2k = make_tiny_vlm(viq=make_tiny_model(levels=(8, 8, 4, 3, 3)))
    with pytest.raises(IncompatibleCodebookError, match=r"\[8, 8, 8, 6, 5\] \(15360 codes.*\[8, 8, 4, 3, 3\] \(2304"):
        load_sft_dataset(tiny_codes, viq_config=vlm_2k.config.vision_config)


def test_conversation_checks_name_the_row():
    from datasets import Dataset

    user = {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "Hi"}]}
    answer = {"role": "assistant", "content": [{"type": "text", "text": "Yo"}]}
    good = {"id": "ok", "images": ["a.png"], "messages": [user, answer]}
    two = {"id": "two-markers", "images": ["a.png"], "messages": [{**user, "content": user["content"] * 2}, answer]}
    with pytest.raises(ValueError, match=r"row 1 \(id 'two-markers'\) has 2 image items .* but 1 images"):
        check_conversations(Dataset.from_list([good, two]), "pixels")
    mute = {"id": "mute", "images": ["a.png"], "messages": [user]}
    with pytest.raises(ValueError, match="'mute'.* no assistant turn"):
        check_conversations(Dataset.from_list([good, mute]), "pixels")
    plain = {"id": "plain", "images": ["a.png"],
             "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}  # fmt: skip
    check_conversations(Dataset.from_list([plain]), "pixels")  # string content: the image goes before the user turn
    with pytest.raises(ValueError, match="needs images .* or codes"):
        load_sft_dataset(Dataset.from_list([{"messages": [user, answer]}]))


def broken_copy(tmp_path: Path) -> tuple[Path, list[int]]:
    """The tiny data with one image missing (row 1's) and one that is not an image (row 3's: an error page saved as
    .png, say), and the indices of every row that shows either (two-image rows may too).

    (A truncated PNG is no good here: lmms-eval, imported by other tests, sets PIL's LOAD_TRUNCATED_IMAGES for the
    whole process, and PIL then fills the missing pixels in.)"""
    folder = tmp_path / "tiny"
    shutil.copytree(TINY_DATA.parent, folder)
    rows = json.loads(TINY_DATA.read_text())
    missing, not_an_image = rows[1]["image"], rows[3]["image"]
    os.remove(folder / missing)
    (folder / not_an_image).write_bytes(b"<html>404 Not Found</html>")

    def images(row):
        return row.get("image") if isinstance(row.get("image"), list) else [row.get("image")]

    affected = [index for index, row in enumerate(rows) if {missing, not_an_image} & set(images(row))]
    return folder / "llava.json", affected


def test_unreadable_images_are_skipped_and_counted(processor, tmp_path):
    path, affected = broken_copy(tmp_path)
    data = load_sft_dataset(path)
    rows = data.dataset
    collator = ViQImageCollator(processor, source=rows, skipped_log_dir=str(tmp_path / "out"))
    batch = collator([rows[0], rows[1], rows[2], rows[3]])  # rows 1 and 3 hold the broken images
    assert batch["input_ids"].shape[0] == 2 and collator.skipped.count == 2
    logged = (tmp_path / "out" / "skipped-samples-rank0.jsonl").read_text().splitlines()
    assert [json.loads(line)["sample"] for line in logged] == ["row id 'shape-001'", "row id 'shape-003'"]
    assert "No such image file" in json.loads(logged[0])["error"]
    refilled = collator([rows[1]])  # nothing readable left: a readable row is drawn from `source`
    assert refilled["input_ids"].shape[0] == 1 and collator.skipped.count >= 3
    logged = (tmp_path / "out" / "skipped-samples-rank0.jsonl").read_text().splitlines()
    affected_ids = {f"row id {rows[index]['id']!r}" for index in affected} | {f"row {index}" for index in affected}
    assert len(logged) == collator.skipped.count and {json.loads(line)["sample"] for line in logged} <= affected_ids
    with pytest.raises(ValueError, match="no `source`"):
        ViQImageCollator(processor)([rows[1]])
    # counting tokens reads headers: both are found there already, and those rows never reach the trainer
    prepared = prepare_for_training(data, processor, max_length=4096)
    assert data.skipped["unreadable"] == affected and len(prepared) == len(rows) - len(affected)


def test_image_size_reads_headers_and_exif_orientation(tmp_path):
    image = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the processor sees it upright, 40 high and 20 wide
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert image_size(str(tmp_path / "rotated.jpg")) == (40, 20)
    assert image_size({"bytes": (tmp_path / "rotated.jpg").read_bytes(), "path": None}) == (40, 20)
    assert image_size(image) == (20, 40)
    processor = ViQImageProcessor()
    height, width = processor.get_resized_size(*image_size(str(tmp_path / "rotated.jpg")))
    grid = processor(images=[str(tmp_path / "rotated.jpg")])["image_grid_hw"].tolist()
    assert grid == [[height // 16, width // 16]] and height > width
    with pytest.raises(ValueError, match="No such image file"):
        image_size(str(tmp_path / "missing.png"))


def test_trainability_checks_are_never_silent(caplog):
    from peft import LoraConfig, get_peft_model

    vlm = freeze(make_tiny_vlm(), vision=True, projector=True, language_model=False)
    with pytest.raises(ValueError, match="projector is freshly initialised .* but frozen"):
        check_trainable(vlm, fresh_projector=True)
    check_trainable(vlm, fresh_projector=False)  # a trained VLM may keep its projector
    freeze(vlm, vision=True, projector=True, language_model=True)
    with pytest.raises(ValueError, match="Nothing would train"):
        check_trainable(vlm, fresh_projector=False)
    # a PEFT config without the projector in modules_to_save freezes it: refused for a fresh projector
    lora = get_peft_model(freeze(make_tiny_vlm(), language_model=True),
                          LoraConfig(r=2, target_modules=r".*language_model.*\.q_proj"))  # fmt: skip
    with pytest.raises(ValueError, match="modules_to_save"):
        check_trainable(lora, fresh_projector=True, mode="lora")


def test_packed_index_dataset_rows():
    dataset = packed_index_dataset([[3, 1], [2]])
    assert dataset[0] == {"pack": [3, 1]} and len(dataset) == 2


def test_image_columns_stay_undecoded_so_a_corrupt_image_is_one_skipped_sample(processor):
    """`datasets` decodes Image columns when a row is read: a corrupt one would raise in the data loader, before any
    collator could skip it. Training data keeps them as bytes; the collator decodes them one by one."""
    import io

    from datasets import Dataset, Features, List, Value
    from datasets import Image as ImageFeature

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(buffer, format="PNG")
    good, corrupt = buffer.getvalue(), b"GIF89a" + bytes(40)  # not a decodable image
    messages = [{"role": "user", "content": "What is it?"}, {"role": "assistant", "content": "Black."}]
    features = Features({"images": List(ImageFeature()), "messages": [{"role": Value("string"),
                         "content": Value("string")}]})  # fmt: skip
    rows = Dataset.from_dict({"images": [[{"bytes": good, "path": None}], [{"bytes": corrupt, "path": None}]],
                              "messages": [messages, messages]}, features=features)  # fmt: skip
    data = load_sft_dataset(rows)
    assert not data.dataset.features["images"].feature.decode
    collator = ViQImageCollator(processor, source=data.dataset)
    batch = collator([data.dataset[0], data.dataset[1]])
    assert batch["input_ids"].shape[0] == 1 and collator.skipped.count == 1


def test_the_bundled_tiny_data_cannot_be_answered_without_looking():
    """Every question form of the bundled tiny data has more than one answer, and no answer follows the row order."""
    rows = json.loads((REPO / "training" / "data" / "tiny" / "llava.json").read_text())
    answers: dict[str, set[str]] = {}
    for row in rows:
        if row["id"].startswith("shape-"):
            question, answer = row["conversations"][0]["value"].split("\n")[-1], row["conversations"][1]["value"]
            answers.setdefault(question.split(" the ")[0], set()).add(answer.split()[-1])
    assert answers and all(len(seen) > 1 for seen in answers.values()), answers
    shapes = [row["conversations"][1]["value"].split()[-1] for row in rows
              if row["id"].startswith("shape-") and "shape" in row["conversations"][0]["value"]]  # fmt: skip
    assert len(set(shapes[0::3])) > 1 and len(set(shapes[1::3])) > 1, shapes
