"""The README's demo runs end to end on the committed miniature tokenizer and the bundled samples and scenes."""

import runpy
from pathlib import Path

import torch

from transformers_viq import ViQCodes


REPO = Path(__file__).resolve().parents[1]


def test_demo_writes_codes_and_report(tmp_path, capsys):
    demo = runpy.run_path(str(REPO / "examples" / "demo.py"), run_name="demo")
    demo["main"](["--output-dir", str(tmp_path)])
    codes = ViQCodes.load(tmp_path / "codes.safetensors")
    samples = sorted((REPO / "assets" / "samples").glob("*.png")) + sorted((REPO / "assets" / "scenes").glob("*.png"))
    assert codes.num_images == len(samples) >= 7
    assert codes.fsq_levels == [4, 4, 4]
    assert codes.codes.unique().numel() > 16  # the miniature's codebook of 64 is in use
    report = (tmp_path / "report.md").read_text()
    assert "miniature tokenizer" in report and "XuminYu/ViQ_weights" in report
    for sample in samples:
        assert sample.name in report
    # sizes are written one way everywhere, height x width: the size fed is 16 x the patch grid, side by side
    assert "| size fed (HxW) | grid (HxW) |" in report
    rows = [line.split(" | ") for line in report.splitlines() if line.startswith("| ") and ".png" in line]
    assert len(rows) == len(samples)
    for row in rows:
        fed, grid = [tuple(int(v) for v in cell.split("x")) for cell in row[1:3]]
        assert fed == (16 * grid[0], 16 * grid[1]), row
    assert any(h != w for h, w in codes.image_grid_hw.tolist())  # a non-square image tells the orders apart
    # the trained tokenizer reconstructs the scenes it was trained on the like of, far better than photographs
    quality = {row[0].removeprefix("| "): float(row[-1].strip(" |")) for row in rows}
    scenes = [value for name, value in quality.items() if name.startswith("scene")]
    assert len(scenes) == 4 and min(scenes) > 18, quality
    assert "miniature tokenizer" in capsys.readouterr().out


def test_demo_on_the_smoke_checkpoint_says_its_codes_mean_nothing(tmp_path, capsys):
    demo = runpy.run_path(str(REPO / "examples" / "demo.py"), run_name="demo")
    demo["main"]([str(REPO / "assets" / "samples" / "coffee_200x304.png"), "--model", str(REPO / "examples" /
                  "tiny-viq"), "--output-dir", str(tmp_path)])  # fmt: skip
    assert ViQCodes.load(tmp_path / "codes.safetensors").fsq_levels == [8, 8, 8, 6, 5]
    assert "tiny smoke checkpoint" in capsys.readouterr().out


def test_committed_smoke_checkpoint_is_consistent():
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(REPO / "examples" / "tiny-viq")
    processor = AutoImageProcessor.from_pretrained(REPO / "examples" / "tiny-viq")
    assert model.config.fsq_levels == [8, 8, 8, 6, 5]
    assert processor.max_pixels == 512 * 512
    assert torch.equal(model.quantizer.fsq.basis, torch.tensor([1, 8, 64, 512, 3072]))


def test_make_demo_and_the_quick_start_say_how_to_use_the_environment():
    import shutil
    import subprocess

    import pytest

    if shutil.which("make") is None:
        pytest.skip("no make here")
    planned = subprocess.run(["make", "-n", "demo"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    demo_line = next(i for i, line in enumerate(planned.splitlines()) if "examples/demo.py" in line)
    assert "source .venv/bin/activate" in "\n".join(planned.splitlines()[demo_line:])  # printed after the demo
    quick_start = (REPO / "README.md").read_text().split("## Quick start")[1].split("## Usage")[0]
    assert "source .venv/bin/activate" in quick_start and 'pip install -e ".[lmms-eval]"' in quick_start
