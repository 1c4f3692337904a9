# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Pictures of reconstructions: original | reconstruction | the numbers, captioned, on white.

* [`side_by_side`]: the picture `viq reconstruct` writes for each image (small images shown enlarged, pixel-exact);
* [`numbers_text`]: its text panel, from the numbers of [`~transformers_viq.pipeline.reconstruction_numbers`];
* [`codes_picture`]: a picture of the codes, one colour per code value, drawn over the image the model saw;
* [`font`], [`draw_text_block`]: the pieces, for other pictures (e.g. `eval/compression.py`'s grid);
* [`save_png`]: write an array or a PIL image as PNG, atomically.
"""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .file_utils import atomic_path
from .models.viq.configuration_viq import CODES_PER_PATCH


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


GOLDEN_RATIO_CONJUGATE = 0.6180339887498949


def code_colours(codes) -> np.ndarray:
    """
    One RGB colour per code value, `uint8 (n, 3)`: the hue steps by the golden ratio from one code to the next, so
    neighbouring values get distant hues, and saturation and brightness take three levels each, so that codes whose
    hues nearly coincide still differ. The same value always gets the same colour, in every picture.
    """
    codes = np.asarray(codes, dtype=np.int64).reshape(-1)
    hue = (codes * GOLDEN_RATIO_CONJUGATE) % 1.0
    saturation = 0.6 + 0.2 * ((codes // 3) % 3)
    value = 0.7 + 0.15 * (codes % 3)
    # HSV -> RGB, vectorised (the standard six-sector formula)
    sector = np.floor(hue * 6).astype(np.int64) % 6
    fraction = hue * 6 - np.floor(hue * 6)
    p = value * (1 - saturation)
    q = value * (1 - saturation * fraction)
    t = value * (1 - saturation * (1 - fraction))
    table = np.stack(
        [
            np.stack([value, t, p], -1),
            np.stack([q, value, p], -1),
            np.stack([p, value, t], -1),
            np.stack([p, q, value], -1),
            np.stack([t, p, value], -1),
            np.stack([value, p, q], -1),
        ]
    )  # (6, n, 3)
    rgb = table[sector, np.arange(len(codes))]
    return np.round(rgb * 255).astype(np.uint8)


def codes_picture(image: np.ndarray, codes, grid_hw: tuple[int, int], codes_per_patch: int = CODES_PER_PATCH,
                  patch_size: int = 16, alpha: float = 0.5) -> np.ndarray:  # fmt: skip
    """
    A picture of one image's codes: each `patch_size` square of the grid is split into `codes_per_patch` cells (a
    2x2 block for 4 codes: the patch's sub-codes in order, left to right then top to bottom), each cell filled with
    the colour of its code ([`code_colours`]), blended over the image with opacity `alpha` (1: codes only).

    Args:
        image (`np.ndarray`): `uint8 (H, W, 3)`, the image as the model saw it (before padding), so
            `H <= grid_h * patch_size` and `W <= grid_w * patch_size`.
        codes: the image's `grid_h * grid_w * codes_per_patch` codes, patch-major (as `ViQModel.encode` gives them).
        grid_hw (`tuple[int, int]`): its patch grid.

    Returns:
        `uint8 (H, W, 3)`: the picture, cropped to the image's size as the padding is.
    """
    grid_h, grid_w = (int(side) for side in grid_hw)
    codes = np.asarray(codes, dtype=np.int64).reshape(-1)
    if codes.size != grid_h * grid_w * codes_per_patch:
        raise ValueError(f"{codes.size} codes for a {grid_h}x{grid_w} grid of {codes_per_patch} codes per patch "
                         f"(expected {grid_h * grid_w * codes_per_patch}).")  # fmt: skip
    height, width = image.shape[:2]
    if height > grid_h * patch_size or width > grid_w * patch_size:
        raise ValueError(f"An image of {height}x{width} pixels is larger than its {grid_h}x{grid_w} patch grid.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}.")
    rows = max(1, math.isqrt(codes_per_patch))
    columns = math.ceil(codes_per_patch / rows)
    cells = np.zeros((grid_h, grid_w, rows * columns, 3), dtype=np.uint8)
    cells[:, :, :codes_per_patch] = code_colours(codes).reshape(grid_h, grid_w, codes_per_patch, 3)
    cells = cells.reshape(grid_h, grid_w, rows, columns, 3).transpose(0, 2, 1, 3, 4).reshape(
        grid_h * rows, grid_w * columns, 3)  # fmt: skip
    # each cell covers patch_size / rows x patch_size / columns pixels (nearest-neighbour enlargement)
    row_index = np.minimum(np.arange(grid_h * patch_size) * rows // patch_size, grid_h * rows - 1)
    column_index = np.minimum(np.arange(grid_w * patch_size) * columns // patch_size, grid_w * columns - 1)
    colour_map = cells[row_index[:, None], column_index[None, :]][:height, :width]
    blended = alpha * colour_map.astype(np.float32) + (1 - alpha) * image[..., :3].astype(np.float32)
    return np.round(blended).astype(np.uint8)


def save_png(image, path: str | os.PathLike) -> None:
    """Write a PIL image or a `uint8` array as PNG (atomically: a killed run leaves no half-written file)."""
    with atomic_path(path) as temporary:
        (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(temporary, format="PNG")


__all__ = [
    "code_colours",
    "codes_picture",
    "draw_text_block",
    "font",
    "numbers_text",
    "save_png",
    "side_by_side",
    "text_size",
]
