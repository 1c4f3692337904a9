# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""The demo page: Gradio Blocks over a [`DemoBackend`].

Each event handler turns the backend's results (or its `DemoInputError`) into what the page shows; a problem with
what the user gave becomes a message in the status line, never a stack trace, and the server keeps serving. The
element ids (`#status`, `#encode-numbers`, ...) are the page's contract with its browser test.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..logging_utils import get_logger, one_line
from .backend import DemoBackend, DemoInputError, shown


logger = get_logger(__name__)

TITLE = "ViQ: what the codes keep"
INTRO = (
    "Pick a sample or upload an image, then **Encode** it into ViQ's discrete codes (4 per 16x16 patch) and "
    "**Reconstruct** it from them alone. Download the codes file and load it back to decode it. The numbers are "
    "measured at the image's own size."
)


def _problem(text: str) -> str:
    return f"**Problem:** {text}"


def _ratio(big: int, small: int) -> str:
    return f"{big / small:,.1f}x" if small else "-"


def encode_markdown(numbers: dict) -> str:
    """The "Encode" panel: grid, codes, bits per pixel, and bytes of the codes next to PNG and JPEG."""
    uint16 = numbers["code_bytes_uint16"]
    fed = ""
    if (numbers["fed_height"], numbers["fed_width"]) != (numbers["height"], numbers["width"]):
        fed = f"; the model saw {numbers['fed_height']} x {numbers['fed_width']}"
    rows = [
        f"**{numbers['name']}**: {numbers['height']} x {numbers['width']} pixels (height x width){fed}",
        "",
        "| | this image |",
        "|:--|--:|",
        f"| patch grid | {numbers['grid_h']} x {numbers['grid_w']} patches |",
        f"| codes | {numbers['num_codes']:,} ({numbers['distinct_codes']:,} distinct) |",
        f"| codebook | {numbers['codebook_size']:,} codes, {numbers['bits_per_code']} bits per code |",
        f"| bits per pixel | {numbers['bpp']:.4f} bit-packed, {numbers['bpp_uint16']:.4f} as uint16 |",
        f"| bytes of the codes, bit-packed | {numbers['code_bytes_packed']:,} |",
        f"| bytes of the codes, uint16 | {uint16:,} (codes file: {numbers['codes_file_bytes']:,}) |",
        f"| bytes of PNG | {numbers['png_bytes']:,} ({_ratio(numbers['png_bytes'], uint16)} the codes) |",
        f"| bytes of JPEG q90 | {numbers['jpeg90_bytes']:,} ({_ratio(numbers['jpeg90_bytes'], uint16)} the codes) |",
        f"| bytes of raw RGB | {numbers['raw_rgb_bytes']:,} ({_ratio(numbers['raw_rgb_bytes'], uint16)} the codes) |",
    ]
    return "\n".join(rows)


def _db(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.2f} dB"


def reconstruct_markdown(numbers: dict, jpeg: dict) -> str:
    """The "Reconstruct" panel: PSNR and SSIM of the reconstruction and of JPEG at the codes' bytes."""
    quality = f"quality {jpeg['quality']}"
    if not jpeg["fits"]:
        quality += ", the lowest: over the budget"
    rows = [
        f"Measured at the image's own size, {numbers['height']} x {numbers['width']} pixels.",
        "",
        "| | ViQ codes | JPEG at the same bytes |",
        "|:--|--:|--:|",
        f"| bytes | {numbers['code_bytes_uint16']:,} (uint16 codes) | {jpeg['bytes']:,} ({quality}) |",
        f"| PSNR | {_db(numbers['psnr'])} | {_db(jpeg['psnr'])} |",
        f"| SSIM | {numbers['ssim']:.4f} | {jpeg['ssim']:.4f} |",
    ]
    return "\n".join(rows)


def decoded_markdown(decoded) -> str:
    codes = decoded.codes
    lines = [f"Decoded {codes.num_images} image(s) from {codes.codes.numel():,} codes "
             f"(codebook {codes.codebook_size:,}, made by `{codes.model or 'an unrecorded model'}`):", ""]  # fmt: skip
    for index, name in enumerate(decoded.names):
        grid_h, grid_w = codes.image_grid_hw[index].tolist()
        height, width = decoded.images[index].shape[:2]
        lines.append(f"* **{name}**: grid {grid_h} x {grid_w} patches, decoded at {height} x {width} pixels"
                     + (" (shown)" if index == 0 else ""))  # fmt: skip
    return "\n".join(lines)


def first_image(codes):
    """The codes of the first image of a codes file, as a one-image `ViQCodes` (what the VLM reads)."""
    if codes.num_images == 1:
        return codes
    return type(codes)(codes.split()[0], codes.image_grid_hw[:1], codes.fsq_levels, model=codes.model,
                       viq_size=codes.viq_size, codes_per_patch=codes.codes_per_patch, patch_size=codes.patch_size,
                       images=codes.images[:1])  # fmt: skip


def build_page(backend: DemoBackend, samples: list[str | Path], title: str = TITLE):
    """The Gradio Blocks of the demo page (not launched). `samples`: image files offered in the sample picker."""
    import gradio as gr

    samples = {Path(path).name: str(path) for path in samples}

    cleared = ("", None, gr.DownloadButton(value=None, interactive=False), None, None, "")

    def start_with(name: str, original):
        state = {"name": name, "original": original, "encoded": None, "codes": None}
        height, width = original.shape[:2]
        status = f"Loaded **{name}** ({height} x {width} pixels). Press **Encode** or **Reconstruct**."
        return (state, original, status, *cleared)

    def refused(message: str):
        return (None, None, _problem(message), *cleared)

    def on_sample(choice):
        if not choice:
            return (gr.skip(),) * 9
        try:
            name, original = backend.read_image(samples[choice], choice)
        except DemoInputError as error:
            return refused(str(error))
        return start_with(name, original)

    def on_upload(path):
        if not path:
            return (gr.skip(),) * 9
        name = Path(path).name
        try:
            name, original = backend.read_image(path, name)
        except DemoInputError as error:
            return refused(str(error))
        except Exception as error:  # noqa: BLE001 - anything else about an upload is a message, not a crash
            logger.warning("upload %s failed: %s", name, error)
            return refused(f"{name} could not be read: {one_line(error)}")
        return start_with(name, original)

    def encoded_outputs(encoded):
        return (
            encode_markdown(encoded.numbers),
            shown(encoded.picture),
            gr.DownloadButton(value=encoded.codes_file, interactive=True),
        )

    def ensure_encoded(state, progress):
        if not state or state.get("original") is None:
            raise DemoInputError("Pick a sample or upload an image first.")
        if state.get("encoded") is None:
            progress(0.1, desc="Encoding")
            state = dict(state, encoded=backend.encode(state["name"], state["original"]))
        return state

    def on_encode(state, progress=gr.Progress()):
        try:
            state = ensure_encoded(state, progress)
        except DemoInputError as error:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), _problem(str(error))
        encoded = state["encoded"]
        status = f"Encoded **{encoded.name}** into {encoded.numbers['num_codes']:,} codes."
        return (state, *encoded_outputs(encoded), status)

    def on_reconstruct(state, progress=gr.Progress()):
        try:
            state = ensure_encoded(state, progress)
            progress(0.5, desc="Decoding")
            result = backend.reconstruct(state["encoded"])
        except DemoInputError as error:
            return (gr.skip(),) * 7 + (_problem(str(error)),)
        encoded = state["encoded"]
        status = f"Reconstructed **{encoded.name}** from its {encoded.numbers['num_codes']:,} codes."
        return (state, *encoded_outputs(encoded), result.side_by_side, shown(result.jpeg),
                reconstruct_markdown(result.numbers, result.jpeg_numbers), status)  # fmt: skip

    def on_codes(path, progress=gr.Progress()):
        if not path:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        name = Path(path).name
        progress(0.2, desc="Decoding")
        try:
            decoded = backend.load_codes(path, name)
        except DemoInputError as error:
            return gr.skip(), None, "", _problem(str(error))
        # the loaded codes are now what the page is about (the VLM reads them), not the image loaded before
        state = {"name": name, "original": None, "encoded": None, "codes": first_image(decoded.codes)}
        status = f"Loaded the codes file **{name}** and decoded it."
        return state, decoded.images[0], decoded_markdown(decoded), status

    def on_ask(question, state, progress=gr.Progress()):
        state = state or {}
        encoded = state.get("encoded")
        codes = state.get("codes") or (encoded.codes if encoded is not None else None)
        progress(0.2, desc="Answering")
        try:
            answer, source = backend.answer(question, codes=codes, image=state.get("original"))
        except DemoInputError as error:
            return "", _problem(str(error))
        return answer, f"Answered from {source}."

    with gr.Blocks(title=title) as page:
        gr.Markdown(f"# {title}\n\n{INTRO}")
        gr.Markdown(backend.describe(), elem_id="model-description")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                sample = gr.Radio(list(samples), label="Bundled samples", elem_id="samples")
                upload = gr.File(label="Or upload an image", file_types=["image"], type="filepath", elem_id="upload")
                image = gr.Image(label="Image", type="numpy", format="png", interactive=False, elem_id="image")
                with gr.Row():
                    encode_button = gr.Button("Encode", variant="primary", elem_id="encode-button")
                    reconstruct_button = gr.Button("Reconstruct", variant="primary", elem_id="reconstruct-button")
                status = gr.Markdown("Pick a sample or upload an image.", elem_id="status")
            with gr.Column(scale=2):
                encode_numbers = gr.Markdown(elem_id="encode-numbers")
                codes_picture = gr.Image(
                    label="The codes: one colour per code value, 4 cells per patch (left to right, top to bottom)",
                    type="numpy", format="png", interactive=False, elem_id="codes-picture",
                )  # fmt: skip
                download = gr.DownloadButton("Download the codes (.safetensors)", interactive=False,
                                             elem_id="download-codes")  # fmt: skip
        with gr.Row():
            side_by_side = gr.Image(label="Original | reconstruction | numbers", type="pil", format="png",
                                    interactive=False, elem_id="side-by-side")  # fmt: skip
        with gr.Row():
            jpeg = gr.Image(label="JPEG at the same bytes", type="numpy", format="png", interactive=False,
                            elem_id="jpeg")  # fmt: skip
            reconstruct_numbers = gr.Markdown(elem_id="reconstruct-numbers")
        gr.Markdown("## Load a codes file")
        with gr.Row():
            codes_upload = gr.File(label="A codes file (.safetensors, from this page or `viq encode`)",
                                   file_types=[".safetensors"], type="filepath", elem_id="codes-upload")  # fmt: skip
            decoded = gr.Image(label="Decoded from the file", type="numpy", format="png", interactive=False,
                               elem_id="decoded")  # fmt: skip
        decoded_info = gr.Markdown(elem_id="decoded-info")
        if backend.vlm is not None:
            gr.Markdown("## Ask the VLM about the image (it reads the codes, not the pixels)")
            with gr.Row():
                question = gr.Textbox(label="Question", value="What is in this picture?", elem_id="question")
                ask_button = gr.Button("Ask", variant="primary", elem_id="ask-button")
            answer = gr.Textbox(label="Answer", interactive=False, elem_id="answer")
            answer_source = gr.Markdown(elem_id="answer-source")
            ask_button.click(on_ask, [question, state], [answer, answer_source])

        loaded = [state, image, status, encode_numbers, codes_picture, download, side_by_side, jpeg,
                  reconstruct_numbers]  # fmt: skip
        sample.input(on_sample, sample, loaded)
        # the upload box is emptied once its file is read (the image shows what was loaded), ready for the next one
        upload.upload(on_upload, upload, loaded).then(lambda: None, None, upload)
        encode_button.click(on_encode, state, [state, encode_numbers, codes_picture, download, status])
        reconstruct_button.click(on_reconstruct, state, [state, encode_numbers, codes_picture, download, side_by_side,
                                                         jpeg, reconstruct_numbers, status])  # fmt: skip
        codes_upload.upload(on_codes, codes_upload, [state, decoded, decoded_info, status])
    return page


__all__ = ["TITLE", "build_page", "decoded_markdown", "encode_markdown", "reconstruct_markdown"]
