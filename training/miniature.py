"""The miniature of the paper, end to end on a CPU: `make miniature` (about 20 minutes on 2 cores).

Synthetic scenes with independently drawn colour, shape, column and count (`transformers_viq.synthetic`; a held-out
split never seen in training, and a blank-image control), then every step of the paper at width 64, each through the
project's own commands and the recipes in `training/recipes/miniature/`:

    1. data and stand-ins      scenes (1024 for the tokenizer; those and 3072 more for the VLMs, which memorise
                               fewer); random stand-ins of SigLIP2 (teacher), Qwen2 (the LLM of the stages and of the
                               VLMs) and LPIPS, and of the Qwen-Image VAE, trained as an autoencoder on the training
                               scenes (transformers_viq.testing.training)
    2. the tokenizer           training/train_viq.py: Stage 1 -> 2-1 -> 2-2 -> decoder, and the decoder again on
                               constant codes (the ablation that shows what the codes carry)
    3. codes                   viq extract (the VLMs' training scenes), viq encode (held-out scenes: codebook usage)
    4. two VLMs                training/sft.py on the codes and, separately, on the pixels
    5. evaluation              lmms-eval --model viq_qwen on the held-out questions and their blank-image copies;
                               eval/reconstruction.py on the held-out scenes

It writes `results.json` and `results.md` (the paper's tables at miniature scale) to the output folder, with the
models in `viq/`, `vlm-codes/` and `vlm-pixels/`. Each step's output is kept: a rerun skips the steps already done
(`--force` redoes them), and each step's log is in `logs/`.

    python training/miniature.py                       # -> outputs/miniature
    python training/miniature.py --steps-scale 0.1     # a quick pass (numbers far from the targets)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "training" / "recipes" / "miniature"
WIDTH = 64
TEACHER_GRID = 6  # the stand-in teacher's "384" input is 96x96, the scenes' size
VAE = {"base_dim": 8, "z_dim": 4, "dim_mult": [1, 2, 2, 2], "num_res_blocks": 1, "attn_scales": [],
       "temperal_downsample": [False, True, True], "dropout": 0.0}  # fmt: skip
EPOCHS = 5  # of the VLMs' SFT: 1280 steps over their 4096 scenes (20 epochs over 1024 scenes memorised them)
VAE_STEPS = 1000  # the stand-in VAE's autoencoder training (the real one is pretrained)
# paper targets at miniature scale (issue "Training that learns")
TARGETS = {"codebook_usage": 0.5, "psnr": 24.0, "psnr_gain": 6.0, "colour": 0.9, "shape": 0.8, "spatial": 0.7,
           "blank_to_chance": 0.1, "pixels_to_codes": 0.05}  # fmt: skip


class Step:
    """One command of the run, with its log file and the folder whose presence means it is done."""

    def __init__(self, out: Path, name: str, command: list[str], done: Path, force: bool):
        self.out, self.name, self.command, self.done, self.force = out, name, command, done, force

    def run(self, env: dict) -> float:
        log = self.out / "logs" / f"{self.name}.log"
        if self.done.exists() and not self.force:
            print(f"[miniature] {self.name}: done before ({self.done}), skipped", flush=True)
            return 0.0
        if self.done.exists():
            shutil.rmtree(self.done) if self.done.is_dir() else self.done.unlink()
        print(f"[miniature] {self.name}: {' '.join(self.command)}", flush=True)
        start = time.perf_counter()
        with open(log, "w") as handle:
            result = subprocess.run(self.command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            tail = log.read_text().splitlines()[-15:]
            raise SystemExit(f"[miniature] {self.name} failed (exit {result.returncode}); the end of {log}:\n"
                             + "\n".join(tail))  # fmt: skip
        print(f"[miniature] {self.name}: {seconds:.0f} s", flush=True)
        return seconds


def stage_command(recipe: str, out: Path, scale: float, steps: int, extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "training/train_viq.py", "--config", str(RECIPES / recipe),
            "--max_steps", str(max(2, round(steps * scale))), *(extra or [])]  # fmt: skip


def paths_for(out: Path) -> dict[str, str]:
    """Every path the recipes name under `outputs/miniature`, relocated under `out`."""
    names = ("assets", "data", "data-vlm", "viq-stage1", "viq-stage2-1", "viq-stage2-2", "viq", "viq-constant",
             "codes", "vlm-codes", "vlm-pixels")  # fmt: skip
    return {name: str(out / name) for name in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="outputs/miniature")
    parser.add_argument("--num-train", type=int, default=1024, help="the tokenizer's training scenes")
    parser.add_argument("--num-train-vlm", type=int, default=4096,
                        help="the VLMs' training scenes (the tokenizer's first, then more of the same stream)")
    parser.add_argument("--num-heldout", type=int, default=200, help="held-out scenes (never seen in training)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every recipe's steps (0.1: quick)")
    parser.add_argument("--force", action="store_true", help="redo the steps already done")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from transformers_viq.synthetic import words, write_shapes_dataset
    from transformers_viq.testing.training import fit_vae_stand_in, make_tiny_training_assets

    start = time.perf_counter()
    out = Path(args.output_dir).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    p = paths_for(out)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    timings: dict[str, float] = {}

    # 1. data and stand-ins (the VLMs' LLM is the stand-in Qwen2 of the stages too: 2 layers, a small vocabulary)
    # The VLMs train on more scenes than the tokenizer: one seeded stream, so the tokenizer's scenes are the first of
    # the VLMs', and the held-out split (drawn from its own stream, minus any training scene) is one split for both.
    # With 1024 scenes the VLMs memorise them (20 epochs: train loss 0.009, held-out shape 0.78); with 4096 scenes at
    # the same steps the decoder's held-out PSNR falls (23.6 dB against 24.2 dB).
    if args.force or not (out / "data" / "heldout.json").exists():
        write_shapes_dataset(p["data"], num_train=args.num_train, num_heldout=args.num_heldout, seed=args.seed)
    if args.force or not (out / "data-vlm" / "heldout.json").exists():
        write_shapes_dataset(p["data-vlm"], num_train=args.num_train_vlm, num_heldout=args.num_heldout, seed=args.seed)
    check_one_heldout_split(out)
    if args.force or not (out / "assets" / "qwen2").exists():
        make_tiny_training_assets(p["assets"], num_rows=2, seed=args.seed, hidden_size=WIDTH, teacher_layers=4,
                                  teacher_grid=TEACHER_GRID, words=words(), vae_config=VAE,
                                  text_initializer_range=0.1)  # fmt: skip
    fitted = out / "assets" / "qwen-image-vae" / "stand_in_fit.json"
    if args.force or not fitted.exists():
        print("[miniature] stand-in VAE: trained as an autoencoder on the training scenes", flush=True)
        begin = time.perf_counter()
        images = sorted(str(f) for f in (out / "data" / "train").glob("*.png"))
        steps = max(2, round(VAE_STEPS * args.steps_scale))
        mse = fit_vae_stand_in(out / "assets" / "qwen-image-vae", images, steps=steps, seed=args.seed)
        fitted.write_text(json.dumps({"steps": VAE_STEPS, "mse": mse}) + "\n")
        timings["vae_stand_in"] = round(time.perf_counter() - begin, 1)
    scale, force = args.steps_scale, args.force
    data = ["--dataset_name_or_path", f"{p['data']}/train.json", "--image_folder", p["data"]]
    stand_ins = ["--teacher_name_or_path", f"{p['assets']}/siglip2-teacher.bin", "--text_model_name_or_path",
                 f"{p['assets']}/qwen2"]  # fmt: skip
    vae = ["--vae_name_or_path", f"{p['assets']}/qwen-image-vae"]
    decoder = ["--init_from", p["viq-stage2-2"], "--lpips_path", f"{p['assets']}/lpips.safetensors",
               "--eval_dataset_name_or_path", f"{p['data']}/heldout.json", *data]  # fmt: skip
    heldout_images = sorted(str(f) for f in (out / "data" / "heldout").glob("*.png"))
    tasks = ",".join(f"miniature_{kind}{suffix}" for suffix in ("", "_blank")
                     for kind in ("colour", "shape", "position", "count"))  # fmt: skip
    steps = [
        Step(out, "stage1", stage_command("viq_stage1.yaml", out, scale, 400,
                                          ["--output_dir", p["viq-stage1"], *data, *stand_ins]),
             Path(p["viq-stage1"]), force),  # fmt: skip
        Step(out, "stage2_1", stage_command("viq_stage2_1.yaml", out, scale, 400,
                                            ["--init_from", p["viq-stage1"], "--output_dir", p["viq-stage2-1"],
                                             *data, *stand_ins, *vae]), Path(p["viq-stage2-1"]), force),  # fmt: skip
        Step(out, "stage2_2", stage_command("viq_stage2_2.yaml", out, scale, 400,
                                            ["--init_from", p["viq-stage2-1"], "--output_dir", p["viq-stage2-2"],
                                             *data, *stand_ins, *vae]), Path(p["viq-stage2-2"]), force),  # fmt: skip
        Step(out, "decoder", stage_command("viq_decoder.yaml", out, scale, 1500, ["--output_dir", p["viq"], *decoder]),
             Path(p["viq"]), force),  # fmt: skip
        Step(out, "decoder_constant_codes", stage_command("viq_decoder.yaml", out, scale, 1500,
                                                          ["--output_dir", p["viq-constant"], "--constant_codes",
                                                           "true", *decoder]),
             Path(p["viq-constant"]), force),  # fmt: skip
        Step(out, "extract", [sys.executable, "-m", "transformers_viq.cli", "extract", f"{p['data-vlm']}/train.json",
                              "--image-folder", p["data-vlm"], "-o", p["codes"], "--model", p["viq"], "--device",
                              "cpu"],
             Path(p["codes"]), force),  # fmt: skip
        Step(out, "encode_heldout", [sys.executable, "-m", "transformers_viq.cli", "encode", *heldout_images, "-o",
                                     str(out / "heldout-codes.safetensors"), "--model", p["viq"], "--device", "cpu"],
             out / "heldout-codes.safetensors", force),  # fmt: skip
        Step(out, "sft_codes", [sys.executable, "training/sft.py", "--config", str(RECIPES / "sft_codes.yaml"),
                                "--viq_model", p["viq"], "--llm_model", f"{p['assets']}/qwen2",
                                "--dataset_name", p["codes"],
                                "--output_dir", p["vlm-codes"], "--num_train_epochs", str(max(scale * EPOCHS, 0.05))],
             Path(p["vlm-codes"]), force),  # fmt: skip
        Step(out, "sft_pixels", [sys.executable, "training/sft.py", "--config", str(RECIPES / "sft_pixels.yaml"),
                                 "--viq_model", p["viq"], "--llm_model", f"{p['assets']}/qwen2", "--dataset_name",
                                 f"{p['data-vlm']}/train.json", "--image_folder", p["data-vlm"], "--output_dir",
                                 p["vlm-pixels"], "--num_train_epochs", str(max(scale * EPOCHS, 0.05))],
             Path(p["vlm-pixels"]), force),  # fmt: skip
    ]
    for kind in ("codes", "pixels"):
        steps.append(Step(out, f"lmms_eval_{kind}", [sys.executable, "-m", "lmms_eval", "--model", "viq_qwen",
                                                     "--model_args", f"pretrained={p['vlm-' + kind]}", "--tasks",
                                                     tasks, "--include_path", f"{p['data']}/tasks", "--batch_size",
                                                     "16", "--device", "cpu", "--output_path",
                                                     str(out / f"eval-{kind}")],
                          out / f"eval-{kind}", force))  # fmt: skip
    steps.append(Step(out, "reconstruction", [sys.executable, "eval/reconstruction.py", "--model", p["viq"],
                                              "--images", f"{p['data']}/heldout", "--resolution", "96", "--device",
                                              "cpu", "--save-examples", "8", "--output-dir",
                                              str(out / "reconstruction"), "--quiet"],
                      out / "reconstruction", force))  # fmt: skip
    for step in steps:
        timings[step.name] = round(step.run(env), 1)

    results = collect(out, p)
    results["step_seconds"] = timings
    results["wall_time_s"] = round(time.perf_counter() - start, 1)
    results["targets"] = check_targets(results)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = results_markdown(results)
    (out / "results.md").write_text(table)
    print(table)
    print(f"[miniature] wrote {out}/results.json and results.md in {results['wall_time_s']:.0f} s")
    return 0


def check_one_heldout_split(out: Path) -> None:
    """The tokenizer's and the VLMs' held-out scenes are the same and none of them is a training scene of either."""
    splits = {name: json.loads((out / name / "heldout.json").read_text()) for name in ("data", "data-vlm")}
    scenes = {name: [row["scene"] for row in rows] for name, rows in splits.items()}
    if scenes["data"] != scenes["data-vlm"]:
        raise SystemExit(f"[miniature] the held-out scenes of {out / 'data'} and {out / 'data-vlm'} differ: write "
                         "both with one --seed and --num-heldout (or rerun with --force)")  # fmt: skip
    train = json.loads((out / "data-vlm" / "train.json").read_text())
    seen = {json.dumps(row["scene"], sort_keys=True) for row in train}
    if any(json.dumps(scene, sort_keys=True) in seen for scene in scenes["data"]):
        raise SystemExit("[miniature] a held-out scene is also a training scene")


def collect(out: Path, p: dict) -> dict:
    """The numbers of the run, read back from what each command wrote."""
    from transformers_viq.codes_io import ViQCodes
    from transformers_viq.integrations.lmms_eval_report import find_results, load_json
    from transformers_viq.synthetic import CHANCE

    config = load_json(Path(p["viq"]) / "config.json")
    codebook = 1
    for level in config["fsq_levels"]:
        codebook *= level
    heldout = ViQCodes.load(out / "heldout-codes.safetensors")
    used = len({int(code) for code in heldout.codes.reshape(-1).tolist()})

    def eval_psnr(folder: str) -> float:
        state = load_json(Path(folder) / "trainer_state.json")
        return [entry["eval_psnr"] for entry in state["log_history"] if "eval_psnr" in entry][-1]

    def step_time(folder: str) -> float:
        state = load_json(Path(folder) / "trainer_state.json")
        runtime = [entry["train_runtime"] for entry in state["log_history"] if "train_runtime" in entry][-1]
        return runtime / state["global_step"]

    accuracy, blank = {}, {}
    for kind in ("codes", "pixels"):
        scores = load_json(find_results(out / f"eval-{kind}"))["results"]
        accuracy[kind] = {q: round(scores[f"miniature_{q}"]["exact_match,none"], 4) for q in CHANCE}
        blank[kind] = {q: round(scores[f"miniature_{q}_blank"]["exact_match,none"], 4) for q in CHANCE}
    reconstruction = load_json(out / "reconstruction" / "results.json")
    return {
        "codebook_size": codebook,
        "codebook_usage": round(used / codebook, 4),
        "codes_used": used,
        "psnr": round(eval_psnr(p["viq"]), 2),
        "psnr_constant_codes": round(eval_psnr(p["viq-constant"]), 2),
        "psnr_eval_reconstruction": round(reconstruction["psnr"], 2),
        "ssim_eval_reconstruction": round(reconstruction["ssim"], 4),
        "accuracy": accuracy,
        "accuracy_blank": blank,
        "chance": {q: round(v, 4) for q, v in CHANCE.items()},
        "step_time_s": {kind: round(step_time(p[f"vlm-{kind}"]), 4) for kind in ("codes", "pixels")},
    }


def check_targets(r: dict) -> dict:
    """Each target of the miniature with whether it is met."""
    codes, pixels, blank, chance = r["accuracy"]["codes"], r["accuracy"]["pixels"], r["accuracy_blank"], r["chance"]
    spatial = max(codes["position"], codes["count"])
    met = {
        "codebook_usage >= 0.5": r["codebook_usage"] >= TARGETS["codebook_usage"],
        "psnr >= 24 dB": r["psnr"] >= TARGETS["psnr"],
        "psnr - psnr_constant_codes >= 6 dB": r["psnr"] - r["psnr_constant_codes"] >= TARGETS["psnr_gain"],
        "codes: colour >= 0.9": codes["colour"] >= TARGETS["colour"],
        "codes: shape >= 0.8": codes["shape"] >= TARGETS["shape"],
        "codes: position or count >= 0.7": spatial >= TARGETS["spatial"],
        "blank images within 0.1 of chance": all(abs(blank[k][q] - chance[q]) <= TARGETS["blank_to_chance"]
                                                 for k in blank for q in chance),  # fmt: skip
        "pixels within 0.05 of codes": all(abs(pixels[q] - codes[q]) <= TARGETS["pixels_to_codes"] for q in codes),
    }
    return met


def results_markdown(r: dict) -> str:
    """The paper's tables, at miniature scale: tokenizer (Table 3), understanding (Table 1), training speed."""
    questions = list(r["chance"])
    lines = ["# The miniature of the paper: results on the held-out scenes", "",
             "Synthetic 96x96 scenes; every model at width 64, trained on this CPU (`make miniature`). Numbers on "
             f"{'the held-out split'}, never seen in training.", "",
             "## Tokenizer (cf. Table 3)", "",
             "| model | codebook | codes used (held-out) | PSNR (dB) | PSNR, eval/reconstruction.py | SSIM |",
             "|---|---:|---:|---:|---:|---:|",
             f"| ViQ miniature | {r['codebook_size']} | {r['codes_used']} ({r['codebook_usage']:.0%}) "
             f"| {r['psnr']:.2f} | {r['psnr_eval_reconstruction']:.2f} | {r['ssim_eval_reconstruction']:.3f} |",
             f"| same decoder, constant codes | 1 | 1 | {r['psnr_constant_codes']:.2f} | | |", "",
             "## Understanding (cf. Table 1): exact match on held-out questions", "",
             "| VLM | images | " + " | ".join(questions) + " |", "|---|---|" + "---:|" * len(questions)]  # fmt: skip
    for kind in ("codes", "pixels"):
        lines.append(f"| ViQ miniature + Qwen2 (2 layers), on {kind} | scenes | "
                     + " | ".join(f"{r['accuracy'][kind][q]:.3f}" for q in questions) + " |")  # fmt: skip
        lines.append(f"| ViQ miniature + Qwen2 (2 layers), on {kind} | blank | "
                     + " | ".join(f"{r['accuracy_blank'][kind][q]:.3f}" for q in questions) + " |")  # fmt: skip
    lines.append("| chance | | " + " | ".join(f"{r['chance'][q]:.3f}" for q in questions) + " |")
    codes, pixels = r["step_time_s"]["codes"], r["step_time_s"]["pixels"]
    lines += ["", "## Training speed (the same SFT run)", "", "| input | seconds per step |", "|---|---:|",
              f"| codes | {codes:.3f} |", f"| pixels | {pixels:.3f} ({pixels / codes:.2f}x) |", "",
              "## Targets", ""]  # fmt: skip
    lines += [f"- [{'x' if ok else ' '}] {name}" for name, ok in r["targets"].items()]
    lines += ["", f"Wall time: {r['wall_time_s']:.0f} s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
