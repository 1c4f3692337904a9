"""The README's demo runs end to end on the committed smoke checkpoint and bundled samples."""

import runpy
from pathlib import Path

import torch

from transformers_viq import ViQCodes


REPO = Path(__file__).resolve().parents[1]


def test_demo_writes_codes_and_report(tmp_path, capsys):
    demo = runpy.run_path(str(REPO / "examples" / "demo.py"), run_name="demo")
    demo["main"](["--output-dir", str(tmp_path)])
    codes = ViQCodes.load(tmp_path / "codes.safetensors")
    samples = sorted((REPO / "assets" / "samples").glob("*.png"))
    assert codes.num_images == len(samples) >= 3
    assert codes.fsq_levels == [8, 8, 8, 6, 5]
    assert codes.codes.unique().numel() > 100  # the smoke model's codes vary from patch to patch
    report = (tmp_path / "report.md").read_text()
    assert "tiny smoke checkpoint" in report and "XuminYu/ViQ_weights" in report
    for sample in samples:
        assert sample.name in report
    assert "tiny smoke checkpoint" in capsys.readouterr().out


def test_committed_smoke_checkpoint_is_consistent():
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(REPO / "examples" / "tiny-viq")
    processor = AutoImageProcessor.from_pretrained(REPO / "examples" / "tiny-viq")
    assert model.config.fsq_levels == [8, 8, 8, 6, 5]
    assert processor.max_pixels == 512 * 512
    assert torch.equal(model.quantizer.fsq.basis, torch.tensor([1, 8, 64, 512, 3072]))
