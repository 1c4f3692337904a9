"""Run by .ci/check_dist in a fresh virtual environment holding only the built wheel and its dependencies: what a user
of the installed package does first. Fails (non-zero exit) at the first thing that does not work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result.stdout


def main(photo: str) -> None:
    import transformers_viq

    installed = Path(transformers_viq.__file__).resolve()
    assert "site-packages" in installed.parts, f"transformers_viq comes from {installed}, not the installed wheel"

    assert "encode" in run("viq", "--help") and "exit codes" in run("viq", "encode", "--help")

    # a tiny checkpoint, made here with the installed package's own helpers
    from transformers_viq import ViQImageProcessor, ViQModel
    from transformers_viq.testing import make_tiny_model

    make_tiny_model().save_pretrained("tiny-viq")
    ViQImageProcessor(max_pixels=256 * 256).save_pretrained("tiny-viq")
    out = run("viq", "encode", photo, "-o", "codes.safetensors", "--model", "tiny-viq", "--device", "cpu", "-q")
    from transformers_viq import ViQCodes

    codes = ViQCodes.load("codes.safetensors")
    assert codes.num_images == 1 and codes.codes.numel() > 0, out

    # the Auto classes, after `import transformers_viq`
    from transformers import AutoImageProcessor, AutoModel

    assert type(AutoModel.from_pretrained("tiny-viq")) is ViQModel
    assert type(AutoImageProcessor.from_pretrained("tiny-viq")) is ViQImageProcessor

    # what the package reads from its own files at run time: the model card templates
    from transformers_viq import render_tokenizer_card

    assert "FSQ-16k" in render_tokenizer_card("16k").text

    # `lmms-eval --model viq_qwen`: the entry point of the installed wheel
    from lmms_eval.models import MODEL_REGISTRY_V2, get_model

    assert "viq_qwen" in MODEL_REGISTRY_V2.list_model_names()
    assert get_model("viq_qwen").__module__ == "transformers_viq.integrations.lmms_eval"
    print(f"dist_smoke: the installed wheel works ({installed.parent})")


if __name__ == "__main__":
    main(sys.argv[1])
