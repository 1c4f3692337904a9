# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Pictures of reconstructions: original | reconstruction | the numbers, captioned, on white.

* [`side_by_side`]: the picture `viq reconstruct` writes for each image (small images shown enlarged, pixel-exact);
* [`numbers_text`]: its text panel, from the numbers of [`~transformers_viq.pipeline.reconstruction_numbers`];
* [`font`], [`draw_text_block`]: the pieces, for other pictures (e.g. `eval/compression.py`'s grid);
* [`save_png`]: write an array or a PIL image as PNG, atomically.
"""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .file_utils import atomic_path


def font(size: int = 14):
    """Pillow's default font at `size` points (a bitmap font where Pillow has no FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):
        return ImageFont.load_default()


def _ratio(big: int, small: int) -> str:
    return f"{big / small:,.1f}x" if small else "-"


def numbers_text(numbers: dict, model_id: str | None = None) -> list[str]:
    """The text panel of a side-by-side picture; fields separated by tabs are drawn as aligned columns."""
    psnr = numbers["psnr"]
    packed = numbers["code_bytes_packed"]
    fed_size = (numbers.get("fed_height", numbers["height"]), numbers.get("fed_width", numbers["width"]))
    if numbers.get("measured_at", "model") == "source":
        fed = f"{numbers['height']}x{numbers['width']} px (HxW), the image's own size"
        if fed_size != (numbers["height"], numbers["width"]):
            fed += f" (model saw {fed_size[0]}x{fed_size[1]})"
    else:
        fed = f"{numbers['height']}x{numbers['width']} px (HxW) as the model saw it"
        if (numbers["source_height"], numbers["source_width"]) != (numbers["height"], numbers["width"]):
            fed += f" (file {numbers['source_height']}x{numbers['source_width']})"
    lines = [
        numbers["name"],
        fed,
        f"grid {numbers['grid_h']}x{numbers['grid_w']} patches, {numbers['num_codes']:,} codes",
        f"codebook {numbers['codebook_size']:,} codes, {numbers['bits_per_code']} bits/code",
        "",
        f"bits per pixel\t{numbers['bpp']:.4f}",
        f"bits per pixel, uint16\t{numbers['bpp_uint16']:.4f}",
        "",
        "bytes\t\tvs codes",
        f"codes, bit-packed\t{packed:,}\t1x",
        f"codes, uint16\t{numbers['code_bytes_uint16']:,}\t{_ratio(numbers['code_bytes_uint16'], packed)}",
        f"raw RGB\t{numbers['raw_rgb_bytes']:,}\t{_ratio(numbers['raw_rgb_bytes'], packed)}",
        f"PNG of original\t{numbers['png_bytes']:,}\t{_ratio(numbers['png_bytes'], packed)}",
        f"JPEG q90 of original\t{numbers['jpeg90_bytes']:,}\t{_ratio(numbers['jpeg90_bytes'], packed)}",
        "",
        "PSNR\t" + ("inf" if math.isinf(psnr) else f"{psnr:.2f} dB"),
        f"SSIM\t{numbers['ssim']:.4f}",
    ]
    if model_id:
        lines += ["", f"model: {model_id}"]
    return lines


def text_size(draw: ImageDraw.ImageDraw, text: str, text_font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text or " ", font=text_font)
    return right - left, bottom - top


def draw_text_block(
    draw, origin: tuple[int, int], lines: list[str], text_font, line_height: int, gap: int = 14, render: bool = True
):
    """
    Draw lines at `origin`; a line `label<TAB>value<TAB>note` is drawn in columns (value right-aligned). Returns the
    block's `(width, height)`.
    """
    rows = [line.split("\t") for line in lines]
    label_width = max((text_size(draw, r[0], text_font)[0] for r in rows if len(r) > 1), default=0)
    value_width = max((text_size(draw, r[1], text_font)[0] for r in rows if len(r) > 1), default=0)
    note_width = max((text_size(draw, r[2], text_font)[0] for r in rows if len(r) > 2), default=0)
    plain_width = max((text_size(draw, r[0], text_font)[0] for r in rows if len(r) == 1), default=0)
    x, y = origin
    for index, row in enumerate(rows if render else []):
        top = y + index * line_height
        if len(row) == 1:
            if row[0]:
                draw.text((x, top), row[0], fill="black", font=text_font)
            continue
        draw.text((x, top), row[0], fill="black", font=text_font)
        value_right = x + label_width + gap + value_width
        if row[1]:
            draw.text(
                (value_right - text_size(draw, row[1], text_font)[0], top), row[1], fill="black", font=text_font
            )
        if len(row) > 2 and row[2]:
            draw.text((value_right + gap, top), row[2], fill=(90, 90, 90), font=text_font)
    columns = label_width + gap + value_width + (gap + note_width if note_width else 0)
    return max(plain_width, columns), line_height * len(rows)


def side_by_side(
    original: np.ndarray, reconstruction: np.ndarray, lines: list[str], font_size: int = 14, min_side: int = 192
) -> Image.Image:
    """
    A PNG-ready picture: original | reconstruction | a text panel, captioned, on white. Images whose longer side is
    under `min_side` pixels are shown enlarged by an integer factor (nearest neighbour, so pixels stay visible) and
    the captions say so.
    """
    text_font = font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_height = max(text_size(probe, "Ag|", text_font)[1], font_size) + 5
    margin = 12
    caption_height = line_height + 2
    panel_width, panel_height = draw_text_block(probe, (0, 0), lines, text_font, line_height, render=False)
    height, width = original.shape[:2]
    factor = max(1, math.ceil(min_side / max(height, width)))
    shown = [Image.fromarray(array) for array in (original, reconstruction)]
    if factor > 1:
        shown = [image.resize((width * factor, height * factor), Image.Resampling.NEAREST) for image in shown]
    captions = ["original", "reconstruction"]
    if factor > 1:
        captions = [f"{caption} (shown {factor}x)" for caption in captions]
    column = max(width * factor, *(text_size(probe, caption, text_font)[0] for caption in captions))
    canvas_height = max(height * factor + caption_height, panel_height) + 2 * margin
    canvas_width = 2 * column + panel_width + 6 * margin
    canvas = Image.new("RGB", (canvas_width, canvas_height), "white")
    draw = ImageDraw.Draw(canvas)
    for index, (caption, image) in enumerate(zip(captions, shown)):
        x = margin + index * (column + margin)
        draw.text((x, margin), caption, fill="black", font=text_font)
        canvas.paste(image, (x, margin + caption_height))
    draw_text_block(draw, (2 * (column + margin) + 2 * margin, margin), lines, text_font, line_height)
    return canvas


def save_png(image, path: str | os.PathLike) -> None:
    """Write a PIL image or a `uint8` array as PNG (atomically: a killed run leaves no half-written file)."""
    with atomic_path(path) as temporary:
        (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(temporary, format="PNG")


__all__ = ["draw_text_block", "font", "numbers_text", "save_png", "side_by_side", "text_size"]
