"""Training that learns: activations of order one at any width, a bounded calibration, collapse that shows, a
stage 2-2 that keeps its codebook in use, a VLM whose answers come from the image, and data whose attributes are
independent (so that a question cannot be answered without looking)."""

from __future__ import annotations

import itertools
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage, stats
from transformers import Qwen2Config, Qwen2ForCausalLM, TrainingArguments

from transformers_viq import ViQImageProcessor, ViQModel
from transformers_viq.models.viq.modeling_viq import width_scaled_std
from transformers_viq.synthetic import (
    BACKGROUNDS,
    CHANCE,
    COLOURS,
    COLUMNS,
    QUESTION_TYPES,
    SHAPES,
    ShapeScene,
    blank_image,
    draw_scene,
    sample_scene,
    words,
    write_shapes_dataset,
)
from transformers_viq.testing import make_tiny_model, tiny_config, tiny_text_config
from transformers_viq.testing.training import make_tiny_training_assets, tiny_chat_tokenizer, tiny_stage_arguments
from transformers_viq.training import ViQStageArguments, calibrate_quantizer, run_stage


MINIATURE = Path(__file__).resolve().parents[1] / "examples" / "miniature-viq"


def random_inputs(sizes=((64, 80), (48, 48)), seed=0):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in sizes]
    return ViQImageProcessor(do_resize=False)(images=images, return_tensors="pt")


# ---- initialisation and calibration -----------------------------------------------------------------------------
def test_width_scaled_init_is_the_released_std_at_the_released_width():
    assert width_scaled_std(0.02, 1536) == pytest.approx(0.02)
    assert width_scaled_std(0.02, 32) == pytest.approx(0.02 * (1536 / 32) ** 0.5)


@pytest.mark.parametrize("width", [32, 64])
def test_fresh_model_keeps_activations_of_order_one_and_varied_codes(width):
    """At 0.02 std a width-32 model handed FSQ values of ~1e-3 (one code for every patch); now they are of order
    one, the features too, and random images give many codes."""
    torch.manual_seed(0)
    config = tiny_config(levels=(4, 4, 4), vision_config={"hidden_size": width, "intermediate_size": 2 * width},
                         include_decoder=False)  # fmt: skip
    model = ViQModel(config).eval()
    with torch.no_grad():
        out = model(**random_inputs())
    spread = out.quantizer_inputs.std(0)
    assert bool(((spread > 0.1) & (spread < 10)).all()), spread
    assert 0.1 < float(out.last_hidden_state.std()) < 10
    assert out.image_codes.unique().numel() >= 8


def test_calibration_gain_is_bounded_robust_and_logged(caplog):
    torch.manual_seed(0)
    model = ViQModel(tiny_config(levels=(4, 4, 4), include_decoder=False)).eval()
    inputs = random_inputs()
    with torch.no_grad():
        model.quantizer.project_in.weight.mul_(1e-4)  # inputs far too narrow: the gain would be ~1e4
    before = model(**inputs).quantizer_inputs.detach()
    with caplog.at_level(logging.WARNING):
        calibrate_quantizer(model, inputs["pixel_values"], inputs["image_grid_hw"], max_gain=4.0)
    assert "clipped" in caplog.text
    assert torch.equal(model.quantizer.calibration_gain, torch.full((3,), 4.0))
    after = model(**inputs).quantizer_inputs.detach()
    torch.testing.assert_close(after.std(0), 4.0 * before.std(0), rtol=1e-3, atol=1e-6)
    with pytest.raises(ValueError, match="max_gain"):
        calibrate_quantizer(model, inputs["pixel_values"], inputs["image_grid_hw"], max_gain=0.5)

    # an unbounded gain is fine where the spread is sane, and one outlier does not move the robust spread
    torch.manual_seed(0)
    model = ViQModel(tiny_config(levels=(4, 4, 4), include_decoder=False)).eval()
    calibrate_quantizer(model, inputs["pixel_values"], inputs["image_grid_hw"], scale=1.0, max_gain=100.0)
    values = model(**inputs).quantizer_inputs.detach()
    quartiles = torch.quantile(values, torch.tensor([0.25, 0.75]), dim=0)
    torch.testing.assert_close((quartiles[1] - quartiles[0]) / 1.349, torch.ones(3), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(values.median(0).values, torch.zeros(3), rtol=0, atol=1e-3)


def test_fsq_saturation_counts_values_beyond_the_bound():
    fsq = make_tiny_model(levels=(4, 4, 4)).quantizer.fsq
    z = torch.tensor([[0.0, 0.1, -0.2], [10.0, -10.0, 0.0]])
    assert float(fsq.saturation(z)) == pytest.approx(2 / 6)


# ---- the stage trainer: no collapse, and a collapse that shows ---------------------------------------------------
@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_tiny_training_assets(tmp_path_factory.mktemp("assets"), num_rows=16)


def _stage2_1_folder(tmp_path) -> str:
    """A fresh Stage 2-1 model of the tiny assets' geometry (what Stage 2-2 starts from)."""
    from transformers_viq import ViQConfig, ViQVisionConfig
    from transformers_viq.testing import TINY_VAE
    from transformers_viq.testing.training import tiny_model_config

    torch.manual_seed(0)
    vision = ViQVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             position_embedding_size=8)  # fmt: skip
    fields = {k: v for k, v in tiny_model_config("stage2_1").items() if k != "quantizer"}
    ViQModel(ViQConfig(vision_config=vision.to_dict(), vae_config=dict(TINY_VAE), quantizer="proximal",
                       **fields)).save_pretrained(tmp_path / "stage2_1")  # fmt: skip
    return str(tmp_path / "stage2_1")


def _args(output_dir, steps):
    return TrainingArguments(output_dir=str(output_dir), max_steps=steps, per_device_train_batch_size=4,
                             learning_rate=1e-4, logging_steps=10, save_strategy="no", report_to=[], use_cpu=True,
                             disable_tqdm=True, seed=0, dataloader_num_workers=0)  # fmt: skip


def test_stage2_2_keeps_a_quarter_of_the_codebook_in_use(assets, tmp_path, caplog):
    """The recipe's Stage 2-2 (calibration on, learning rate 1e-4) for 20 steps: the codes stay spread (this run
    collapsed to one code from its second step when fresh layers shrank activations to ~1e-4)."""
    fields = tiny_stage_arguments("stage2_2", assets, init_from=_stage2_1_folder(tmp_path))
    with caplog.at_level(logging.WARNING):
        result = run_stage(ViQStageArguments(**fields, code_stability_steps=5), _args(tmp_path / "out", 20))
    logs = [entry for entry in result.log_history if "codebook_usage" in entry]
    assert len(logs) == 2
    assert all(entry["codebook_usage"] >= 0.25 for entry in logs), logs
    assert all(entry["fsq_saturation"] < 0.5 and "code_stability" in entry for entry in logs), logs
    assert "CODEBOOK COLLAPSE" not in caplog.text and "FSQ SATURATION" not in caplog.text


def test_a_collapse_is_warned_about_once(assets, tmp_path, caplog):
    """A quantizer pushed to the bound (one code everywhere) is reported loudly, with its saturation."""
    fields = tiny_stage_arguments("stage2_2", assets, init_from=_stage2_1_folder(tmp_path))
    args = ViQStageArguments(**fields, calibrate_quantizer=False, code_stability_steps=5)
    from transformers_viq.training import ViQStageTrainer, build_stage

    components = build_stage(args, _args(tmp_path / "out", 10))
    with torch.no_grad():
        components.model.viq.quantizer.project_in.bias.fill_(50.0)  # every value far beyond the bound
    trainer = ViQStageTrainer(components.model, _args(tmp_path / "out", 10), train_dataset=components.train_dataset,
                              data_collator=components.data_collator, schedule=components.schedule,
                              code_stability_steps=5)  # fmt: skip
    with caplog.at_level(logging.WARNING):
        trainer.train()
    assert caplog.text.count("CODEBOOK COLLAPSE") == 1 and caplog.text.count("FSQ SATURATION") == 1
    logs = [entry for entry in trainer.state.log_history if "codebook_usage" in entry]
    assert logs[0]["codebook_usage"] == pytest.approx(1 / 64, abs=1e-3)
    assert logs[0]["fsq_saturation"] == pytest.approx(1.0)


# ---- a VLM whose answers come from the image ---------------------------------------------------------------------
def test_tiny_vlm_learns_colour_from_the_image_and_not_from_a_blank(tmp_path):
    """The bundled miniature tokenizer and a fresh 2-layer LLM, 80 steps on four scenes (one per colour; same shape,
    place and question): the answers are right on those scenes, so they come from the image, and a blank picture gets
    another answer."""
    from transformers_viq.training import ViQImageCollator, load_vlm, set_training_mode

    torch.manual_seed(0)
    tokenizer = tiny_chat_tokenizer(words())
    config = tiny_text_config(vocab_size=len(tokenizer), initializer_range=0.1, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    config.pop("model_type")
    Qwen2ForCausalLM(Qwen2Config(**config)).save_pretrained(tmp_path / "llm")
    tokenizer.save_pretrained(tmp_path / "llm")
    model, processor, _ = load_vlm(None, viq=str(MINIATURE), llm=str(tmp_path / "llm"))
    set_training_mode(model, "full")
    question = "What colour are the shapes?"
    from PIL import Image

    scenes = {c: Image.fromarray(draw_scene(ShapeScene(c, "square", "middle", 2, (0, 2), ((0, 0), (0, 0)), 0, 0.7)))
              for c in COLOURS}  # fmt: skip
    rows = [{"images": [image], "messages": [{"role": "user", "content": question},
                                             {"role": "assistant", "content": f"{colour.capitalize()}."}]}
            for colour, image in scenes.items()]  # fmt: skip
    batch = ViQImageCollator(processor)(rows)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(80):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()

    def inputs_for(image):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        return processor(images=[image], text=[text], return_tensors="pt")

    def answer(image) -> str:
        inputs = inputs_for(image)
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        return processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0].strip()

    colour_ids = [processor.tokenizer(c.capitalize(), add_special_tokens=False)["input_ids"][0] for c in COLOURS]

    def colour_probabilities(image) -> torch.Tensor:
        with torch.no_grad():
            return model(**inputs_for(image)).logits[0, -1].softmax(-1)[colour_ids]

    answers = {colour: answer(image) for colour, image in scenes.items()}
    assert answers == {colour: f"{colour.capitalize()}." for colour in COLOURS}, answers
    # on every scene the right colour is the model's confident choice, and a blank picture (never seen in training)
    # gets another answer than at least three of the scenes: the colour distributions are far apart (total variation)
    scene_probabilities = [colour_probabilities(image) for image in scenes.values()]
    assert all(float(p[index]) > 0.5 for index, p in enumerate(scene_probabilities)), scene_probabilities
    blank = colour_probabilities(Image.fromarray(blank_image(96)))
    distances = [0.5 * float((blank - p).abs().sum()) for p in scene_probabilities]
    assert sum(distance > 0.5 for distance in distances) >= 3, (distances, blank.tolist())


# ---- the synthetic data -----------------------------------------------------------------------------------------
def test_scene_attributes_are_drawn_independently():
    rng = random.Random(0)
    scenes = [sample_scene(rng) for _ in range(4000)]
    attributes = {"colour": [s.colour for s in scenes], "shape": [s.shape for s in scenes],
                  "column": [s.column for s in scenes], "count": [s.count for s in scenes],
                  "background": [s.background for s in scenes]}  # fmt: skip
    for first, second in itertools.combinations(attributes, 2):
        values_a, values_b = sorted(set(attributes[first])), sorted(set(attributes[second]))
        table = np.zeros((len(values_a), len(values_b)))
        for a, b in zip(attributes[first], attributes[second]):
            table[values_a.index(a), values_b.index(b)] += 1
        assert stats.chi2_contingency(table).pvalue > 1e-3, (first, second, table)
    for name, chance in (("colour", CHANCE["colour"]), ("shape", CHANCE["shape"]), ("column", CHANCE["position"]),
                         ("count", CHANCE["count"])):  # fmt: skip
        shares = np.unique(attributes[name], return_counts=True)[1] / len(scenes)
        assert np.allclose(shares, chance, atol=0.03), (name, shares)


def test_pictures_show_what_their_answers_say():
    rng = random.Random(1)
    for _ in range(40):
        scene = sample_scene(rng)
        image = draw_scene(scene, 96)
        shape_pixels = np.any(image != np.array(BACKGROUNDS[scene.background], dtype=np.uint8), axis=-1)
        _, found = ndimage.label(shape_pixels)
        assert found == scene.count
        columns = np.nonzero(shape_pixels.any(axis=0))[0]
        assert {COLUMNS[c // 32] for c in (columns.min(), columns.max())} == {scene.column}
        colours, counts = np.unique(image[shape_pixels].reshape(-1, 3), axis=0, return_counts=True)
        assert tuple(colours[counts.argmax()]) == COLOURS[scene.colour]
        assert scene.answer("count") in {"One.", "Two.", "Three."} and scene.shape in SHAPES


def test_dataset_has_a_held_out_split_and_blank_controls(tmp_path):
    import json

    import pandas as pd

    paths = write_shapes_dataset(tmp_path, num_train=24, num_heldout=8, seed=3)
    train, heldout = json.loads(open(paths.train_json).read()), json.loads(open(paths.heldout_json).read())
    assert len(train) == 24 and len(heldout) == 8
    seen = {json.dumps(row["scene"], sort_keys=True) for row in train}
    assert not any(json.dumps(row["scene"], sort_keys=True) in seen for row in heldout)
    first_questions = {row["conversations"][0]["value"].split("\n")[-1] for row in train}
    assert len(first_questions) > 1  # the question asked first varies
    for kind in QUESTION_TYPES:
        task, blank = pd.read_parquet(paths.heldout_tasks[kind]), pd.read_parquet(paths.blank_tasks[kind])
        assert len(task) == 8 and list(task["answer"]) == list(blank["answer"])
        assert blank["image"].nunique() == 1 and task["image"].nunique() == 8
        assert (tmp_path / "tasks" / f"miniature_{kind}.yaml").is_file()


def test_decoder_ablation_on_constant_codes_and_eval_psnr(assets, tmp_path):
    """The decoder stage's constant-code ablation feeds one code everywhere (no codebook usage to monitor), and the
    stage's evaluation reports the PSNR of its pixel MSE (what `make miniature` compares)."""
    from transformers_viq.training import ViQStageTrainer, build_stage

    make_tiny_model(levels=(4, 4, 4), quantizer_num_layers=1, fusion_num_layers=1, latent_num_layers=1,
                    embedder_num_residual_layers=1).save_pretrained(tmp_path / "tokenizer")  # fmt: skip
    fields = tiny_stage_arguments("decoder", assets, init_from=str(tmp_path / "tokenizer"))
    fields.update(gan_weight=0.0, repa_weight=0.0, ema_decay=None, eval_dataset_name_or_path=assets.dataset,
                  eval_dataset_split="train")  # fmt: skip
    results = {}
    for constant in (False, True):
        args = ViQStageArguments(**fields, constant_codes=constant)
        training = _args(tmp_path / f"out-{constant}", 2)
        components = build_stage(args, training)
        batch = components.data_collator([components.train_dataset[i] for i in range(2)])
        out = components.model(**batch)
        assert (out.image_codes is None) == constant and torch.isfinite(out.loss)
        trainer = ViQStageTrainer(components.model, training, train_dataset=components.train_dataset,
                                  eval_dataset=components.eval_dataset, data_collator=components.data_collator)
        metrics = trainer.evaluate()
        assert metrics["eval_psnr"] == pytest.approx(10 * np.log10(4 / metrics["eval_loss_mse"]), abs=1e-3)
        results[constant] = metrics["eval_psnr"]
    assert results[True] != results[False]
    with pytest.raises(ValueError, match="ablation of the decoder stage"):
        from transformers_viq.training import ViQStageModel

        ViQStageModel("stage2_2", make_tiny_model(levels=(4, 4, 4)), constant_codes=True)
