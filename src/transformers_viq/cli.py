# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""The `viq` command line: images to codes files, codes files to images, reconstructions with numbers, conversion.

    viq encode IMAGE... -o codes.safetensors      images -> one codes file (see `transformers_viq.codes_io`)
    viq decode codes.safetensors -o DIR           codes file -> one PNG per image
    viq reconstruct IMAGE... -o DIR               reconstruction PNGs + side-by-side PNGs with bpp/bytes/PSNR/SSIM
    viq convert --size 16k -o DIR                 the authors' published layout -> HF format (optionally push)
    viq extract DATASET -o DIR                    a `datasets` dataset of images -> Parquet shards of codes

Also `python -m transformers_viq.cli ...`. Run `viq --help` or `viq COMMAND --help` for the options and exit codes.

The helpers below (`load_model`, `load_rgb`, `fed_image`, `reconstruct`, ...) are public: the evaluation scripts under
`eval/` use them, so that the command line and the reports measure exactly the same pipeline.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .configuration_viq import FSQ_LEVEL_PRESETS

DEFAULT_MODEL = "XuminYu/ViQ_weights"
DEFAULT_SIZE = "16k"
SIZES = tuple(FSQ_LEVEL_PRESETS)

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INCOMPATIBLE = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}    success
  {EXIT_RUNTIME}    runtime or model error (the model cannot be loaded or run, out of memory, conversion failed)
  {EXIT_USAGE}    usage error or bad input: a bad option, a missing file, an unreadable image, a file that
       is not a ViQ codes file
  {EXIT_INCOMPATIBLE}    the codes file was made with a different codebook than the model (decode refuses it)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)

Errors are one line on stderr, `viq: error: ...`; pass --debug for the traceback."""

MODEL_HELP = (
    f"model: a folder or Hub repo in HF format (config.json + safetensors), or the authors' published layout with "
    f"--size. Default: {DEFAULT_MODEL} --size {DEFAULT_SIZE} (the real tokenizer; downloaded once, then read from "
    f"the Hugging Face cache)."
)


class CLIError(Exception):
    """An error reported as one line, `viq: error: MESSAGE`, with exit code `code`."""

    def __init__(self, message: str, code: int = EXIT_RUNTIME):
        super().__init__(message)
        self.code = code


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split("\n")[0].split())


# ------------------------------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------------------------------
def check_input_files(paths) -> list[Path]:
    """Every path must be an existing file (raises `CLIError` with exit code 2 otherwise)."""
    checked = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise CLIError(f"no such file: {path}", EXIT_USAGE)
        if not path.is_file():
            raise CLIError(f"not a file: {path}", EXIT_USAGE)
        checked.append(path)
    return checked


def check_images_readable(paths) -> None:
    """Cheap check before any model loads: each file is identified by Pillow as an image (header only)."""
    for path in paths:
        try:
            with Image.open(path):  # opening parses the header: enough to reject what is not an image
                pass
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise CLIError(f"cannot read image {path}: {_one_line(error)}", EXIT_USAGE) from None


def run_script(prog: str, parser: argparse.ArgumentParser, run, argv: list[str] | None = None) -> int:
    """Entry point of the eval scripts: parse, run, and turn a `CLIError` into one stderr line and its exit code."""
    args = parser.parse_args(argv)
    try:
        run(args)
    except CLIError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return error.code
    return EXIT_OK


def _finite_or_null(value):
    """`value` with every non-finite float replaced by `None` (JSON has no infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    return value


def pil_to_rgb(image: Image.Image) -> np.ndarray:
    """
    A PIL image as `uint8` RGB `(height, width, 3)` for pictures and metrics, decoded by the image processor (EXIF
    orientation, transparency on white, range checks: out-of-range 16-bit or float images raise, nothing is clipped);
    16-bit and float sources are rounded to 8 bits here only. Encoding reads the files itself at full precision.
    """
    from .image_processing_viq import ViQImageProcessor

    decoded = ViQImageProcessor().decode_image(image)
    if decoded.dtype != np.uint8:
        decoded = np.round(decoded * 255).astype(np.uint8)
    return np.ascontiguousarray(decoded.transpose(1, 2, 0))


def load_rgb(path) -> np.ndarray:
    """Read an image file with [`pil_to_rgb`]; raises `CLIError` (exit code 2) for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise CLIError(f"no such file: {path}", EXIT_USAGE)
    try:
        with Image.open(path) as image:
            image.load()
            array = pil_to_rgb(image)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise CLIError(f"cannot read image {path}: {_one_line(error)}", EXIT_USAGE) from None
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise CLIError(f"cannot read image {path}: it is empty", EXIT_USAGE)
    return array


def fed_size(processor, height: int, width: int) -> tuple[int, int]:
    """The size `(height, width)` the processor feeds to the model for an input of this size, before padding."""
    if processor.do_resize:
        return processor.get_resized_size(height, width)
    return height, width


def fed_image(processor, array: np.ndarray) -> np.ndarray:
    """The `uint8` image as the model sees it (resized like the processor does, before normalisation and padding)."""
    height, width = fed_size(processor, *array.shape[:2])
    if (height, width) == array.shape[:2]:
        return array
    resized = processor.resize(np.ascontiguousarray(array.transpose(2, 0, 1)), (height, width))
    return np.ascontiguousarray(resized.transpose(1, 2, 0))


def unique_stems(names) -> list[str]:
    """File stems for output files, made unique (`a`, `a-2`, ...) when two inputs share a name."""
    seen: dict[str, int] = {}
    stems = []
    for name in names:
        stem = Path(name).stem or "image"
        count = seen.get(stem, 0) + 1
        seen[stem] = count
        stems.append(stem if count == 1 else f"{stem}-{count}")
    return stems


# ------------------------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------------------------
def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CLIError(f"--device {device}: CUDA is not available on this machine (use --device cpu)", EXIT_USAGE)
    return device


def resolve_model(model: str | None, size: str | None) -> tuple[str, str | None]:
    """
    `(model, size)` to load: `--size` selects the authors' layout; without it, a folder with `config.json` (or any Hub
    repo other than the authors') is read in HF format, and the authors' repo or a local folder in their layout
    defaults to size 16k.
    """
    if model is None:
        return DEFAULT_MODEL, size or DEFAULT_SIZE
    if size is None:
        if model == DEFAULT_MODEL:
            return model, DEFAULT_SIZE
        if os.path.isdir(model) and not os.path.isfile(os.path.join(model, "config.json")):
            return model, DEFAULT_SIZE
    return model, size


def looks_like_path(model: str) -> bool:
    """A local path rather than a Hub id (`owner/name`)."""
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or os.sep != "/" and os.sep in model


def check_model_path(model: str) -> None:
    if looks_like_path(model) and not os.path.isdir(os.path.expanduser(model)):
        raise CLIError(f"no such model folder: {model}", EXIT_USAGE)


def load_config(model: str, size: str | None):
    """The `ViQConfig` of a model without loading its weights."""
    from . import ViQConfig

    if size is not None:
        return ViQConfig.from_preset(size)
    return ViQConfig.from_pretrained(model)


def load_model(
    model: str | None = None,
    size: str | None = None,
    device: str = "auto",
    dtype: str = "float32",
    max_pixels: int | None = None,
    do_resize: bool = True,
):
    """
    Load a ViQ model and its image processor for inference. Returns `(model, processor, model_id, size)`.

    An HF-format folder/repo brings its `preprocessor_config.json` (if any); the authors' layout uses the default
    processor. `max_pixels` and `do_resize` override the processor's settings.
    """
    import torch

    from . import ViQImageProcessor, ViQModel

    model_id, size = resolve_model(model, size)
    check_model_path(model_id)
    device = resolve_device(device)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    try:
        viq = ViQModel.from_pretrained(model_id, viq_size=size, dtype=torch_dtype)
    except Exception as error:  # hub errors, missing files, bad configs: one line
        where = f"{model_id}" + (f" (size {size})" if size else "")
        raise CLIError(f"cannot load model {where}: {_one_line(error)}", EXIT_RUNTIME) from error
    viq = viq.to(device).eval()
    overrides = {"do_resize": do_resize}
    if max_pixels is not None:
        overrides["max_pixels"] = int(max_pixels)
    processor = None
    has_own = size is None and not (
        os.path.isdir(model_id) and not os.path.isfile(os.path.join(model_id, "preprocessor_config.json"))
    )
    if has_own:
        try:
            processor = ViQImageProcessor.from_pretrained(model_id, **overrides)
        except (OSError, ValueError) as error:
            if "preprocessor_config.json" not in str(error) or "does not appear to have" not in str(error):
                raise CLIError(f"cannot load the image processor of {model_id}: {_one_line(error)}", EXIT_RUNTIME) from error
    if processor is None:  # no processor saved with the model (e.g. the authors' layout): the defaults
        processor = ViQImageProcessor(**overrides)
    return viq, processor, model_id, size


def _progress(iterable, total: int, quiet: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img", disable=quiet or not sys.stderr.isatty(), leave=False)


def _batches(items: list, batch_size: int):
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def encode_arrays(viq, processor, arrays: list[np.ndarray], names: list[str] | None = None):
    """Encode `uint8` RGB arrays in one packed call: `(codes (cpu long), image_grid_hw (cpu long))`."""
    device = next(viq.parameters()).device
    try:
        inputs = processor(images=arrays, return_tensors="pt")
    except ValueError as error:
        names = names or [f"image {index}" for index in range(len(arrays))]
        for name, array in zip(names, arrays):  # find the image at fault, to name it
            try:
                processor(images=[array])
            except ValueError as single:
                message = re.sub(r"^Image 0 \(ndarray of shape \([^)]*\), dtype \w+\): ", "", _one_line(single))
                raise CLIError(f"{name}: {message}", EXIT_USAGE) from single
        raise CLIError(_one_line(error), EXIT_USAGE) from error
    out = viq.encode(inputs["pixel_values"].to(device), inputs["image_grid_hw"].to(device), return_pooler_output=False)
    return out.image_codes.cpu(), out.image_grid_hw.cpu()


def decode_codes(viq, processor, codes, grid_hw, sizes: list[tuple[int, int]] | None = None) -> list[np.ndarray]:
    """Codes of one or more images -> `uint8` RGB arrays, cropped to `sizes` (the fed sizes) where given."""
    device = next(viq.parameters()).device
    decoded = viq.decode(codes.to(device), grid_hw.to(device))
    arrays = processor.postprocess(decoded, return_tensors="np")
    if sizes is not None:
        arrays = [array[:height, :width] for array, (height, width) in zip(arrays, sizes)]
    return arrays


@dataclass
class Reconstruction:
    """One image through encode -> decode, with the image the model saw."""

    name: str
    original: np.ndarray  # uint8 (H, W, 3) as fed to the model (resized, not padded)
    reconstruction: np.ndarray  # uint8, same shape
    codes: np.ndarray  # int64 (4 * h * w,)
    grid_hw: tuple[int, int]
    source_size: tuple[int, int]  # (height, width) of the file
    extra: dict = field(default_factory=dict)


def reconstruct(
    viq, processor, items, batch_size: int = 4, quiet: bool = True, desc: str = "reconstruct", total: int | None = None
):
    """
    Encode and decode images in packed batches of `batch_size`. `items` is any iterable (read lazily) of paths or of
    `(name, uint8 array or path)` pairs. Yields [`Reconstruction`]s in input order.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    bar = _progress(None, total, quiet, desc)

    def run(batch):
        arrays = [load_rgb(source) if isinstance(source, (str, os.PathLike)) else source for _, source in batch]
        codes, grid = encode_arrays(viq, processor, arrays, [name for name, _ in batch])
        fed = [fed_image(processor, array) for array in arrays]
        recon = decode_codes(viq, processor, codes, grid, [image.shape[:2] for image in fed])
        counts = (4 * grid[:, 0] * grid[:, 1]).tolist()
        for (name, _), array, image, output, image_codes, hw in zip(
            batch, arrays, fed, recon, codes.split(counts), grid.tolist()
        ):
            yield Reconstruction(name, image, output, image_codes.numpy(), tuple(hw), tuple(array.shape[:2]))
        bar.update(len(batch))

    try:
        batch = []
        for item in items:
            batch.append((Path(item).name, item) if isinstance(item, (str, os.PathLike)) else tuple(item))
            if len(batch) == max(1, batch_size):
                yield from run(batch)
                batch = []
        if batch:
            yield from run(batch)
    finally:
        bar.close()


# ------------------------------------------------------------------------------------------------------------------
# Numbers and pictures for one reconstruction
# ------------------------------------------------------------------------------------------------------------------
def reconstruction_numbers(item: Reconstruction, codebook_size: int) -> dict:
    """bpp, byte sizes (codes, raw RGB, PNG and JPEG q90 of the fed original), PSNR and SSIM of one reconstruction."""
    from . import metrics

    height, width = item.original.shape[:2]
    pixels = height * width
    bits = metrics.bits_per_code(codebook_size)
    num_codes = int(item.codes.size)
    psnr = metrics.psnr(item.original, item.reconstruction)
    return {
        "name": item.name,
        "source_height": item.source_size[0],
        "source_width": item.source_size[1],
        "height": height,
        "width": width,
        "grid_h": item.grid_hw[0],
        "grid_w": item.grid_hw[1],
        "num_codes": num_codes,
        "codebook_size": codebook_size,
        "bits_per_code": bits,
        "bpp": num_codes * bits / pixels,
        "bpp_uint16": num_codes * 16 / pixels,
        "code_bytes_packed": math.ceil(num_codes * bits / 8),
        "code_bytes_uint16": 2 * num_codes,
        "raw_rgb_bytes": 3 * pixels,
        "png_bytes": metrics.png_bytes(item.original),
        "jpeg90_bytes": metrics.jpeg_bytes(item.original, 90),
        "psnr": psnr,
        "ssim": metrics.ssim(item.original, item.reconstruction),
    }


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
    fed = f"{numbers['width']}x{numbers['height']} px as fed"
    if (numbers["source_height"], numbers["source_width"]) != (numbers["height"], numbers["width"]):
        fed += f" (file {numbers['source_width']}x{numbers['source_height']})"
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


def _text_size(draw: ImageDraw.ImageDraw, text: str, text_font) -> tuple[int, int]:
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
    label_width = max((_text_size(draw, r[0], text_font)[0] for r in rows if len(r) > 1), default=0)
    value_width = max((_text_size(draw, r[1], text_font)[0] for r in rows if len(r) > 1), default=0)
    note_width = max((_text_size(draw, r[2], text_font)[0] for r in rows if len(r) > 2), default=0)
    plain_width = max((_text_size(draw, r[0], text_font)[0] for r in rows if len(r) == 1), default=0)
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
                (value_right - _text_size(draw, row[1], text_font)[0], top), row[1], fill="black", font=text_font
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
    line_height = max(_text_size(probe, "Ag|", text_font)[1], font_size) + 5
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
    column = max(width * factor, *(_text_size(probe, caption, text_font)[0] for caption in captions))
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


def save_png(image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(path, format="PNG")


# ------------------------------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------------------------------
def _say(args, text: str) -> None:
    if not args.quiet:
        print(text)


def _load(args):
    return load_model(args.model, args.size, args.device, args.dtype, args.max_pixels, not args.no_resize)


def command_encode(args) -> int:
    import torch

    from . import ViQCodes

    paths = check_input_files(args.images)
    check_images_readable(paths)
    output = Path(args.output)
    if output.is_dir():
        raise CLIError(f"-o {output} is a folder; give a file name such as codes.safetensors", EXIT_USAGE)
    viq, processor, model_id, size = _load(args)
    all_codes, all_grids, records = [], [], []
    bar = _progress(None, len(paths), args.quiet, "encode")
    try:
        for batch in _batches(paths, args.batch_size):
            arrays = [load_rgb(path) for path in batch]  # readable? and the size fed to the model
            # the processor reads the files itself, so 16-bit and float images keep their precision
            codes, grid = encode_arrays(viq, processor, [str(path) for path in batch], [str(path) for path in batch])
            all_codes.append(codes)
            all_grids.append(grid)
            for path, array in zip(batch, arrays):
                height, width = fed_size(processor, *array.shape[:2])
                records.append({"name": path.name, "height": int(height), "width": int(width)})
            bar.update(len(batch))
    finally:
        bar.close()
    # a local folder is recorded as an absolute path, so that `viq decode` finds it from any working directory
    recorded = str(Path(model_id).expanduser().resolve()) if os.path.isdir(os.path.expanduser(model_id)) else model_id
    codes = ViQCodes(
        torch.cat(all_codes),
        torch.cat(all_grids),
        list(viq.config.fsq_levels),
        model=recorded,
        viq_size=size or getattr(viq.config, "preset", None),
        images=records,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=output.parent, prefix=f".{output.name}.", delete=False) as handle:
        temporary = handle.name
    try:
        codes.save(temporary)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # as a plain open() would have created it
        os.replace(temporary, output)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    bits = math.ceil(math.log2(codes.codebook_size))
    _say(
        args,
        f"encoded {codes.num_images} image(s): {codes.codes.numel():,} codes from a {codes.codebook_size:,}-code "
        f"codebook ({bits} bits/code) -> {output} ({output.stat().st_size:,} bytes)",
    )
    return EXIT_OK


def command_decode(args) -> int:
    import torch

    from . import ViQCodes

    (path,) = check_input_files([args.codes])
    try:
        codes = ViQCodes.load(path)
    except (ValueError, KeyError, json.JSONDecodeError) as error:
        raise CLIError(f"cannot read codes file {path}: {_one_line(error)}", EXIT_USAGE) from None
    model, size = args.model, args.size
    if model is None and codes.model:  # the model that made the codes
        model = codes.model
        authors_layout = model == DEFAULT_MODEL or (
            os.path.isdir(model) and not os.path.isfile(os.path.join(model, "config.json"))
        )
        if size is None and authors_layout:
            size = codes.viq_size
    model_id, size = resolve_model(model, size)
    try:
        check_model_path(model_id)
    except CLIError as error:
        if args.model is None and codes.model:
            error.args = (f"{error} (the model recorded in {path}; pass --model to use another copy)",)
        raise
    try:
        config = load_config(model_id, size)
    except Exception as error:
        hint = f" (the model recorded in {path}; pass --model to use another)" if args.model is None else ""
        raise CLIError(
            f"cannot load the config of model {model_id}: {_one_line(error)}{hint}", EXIT_RUNTIME
        ) from error
    try:
        codes.check_compatible(config)
    except ValueError as error:
        raise CLIError(f"{path}: {_one_line(error)}", EXIT_INCOMPATIBLE) from None
    viq, processor, _, _ = load_model(model_id, size, args.device, args.dtype)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    per_image = codes.split()
    patch = codes.patch_size
    records = codes.images or [{"name": f"image-{index}.png"} for index in range(codes.num_images)]
    stems = unique_stems(record.get("name", f"image-{index}") for index, record in enumerate(records))
    written = []
    bar = _progress(None, codes.num_images, args.quiet, "decode")
    try:
        for batch in _batches(list(range(codes.num_images)), args.batch_size):
            batch_codes = torch.cat([per_image[index] for index in batch])
            grid = codes.image_grid_hw[batch]
            sizes = []
            for index in batch:
                grid_h, grid_w = codes.image_grid_hw[index].tolist()
                height = min(int(records[index].get("height", grid_h * patch)), grid_h * patch)
                width = min(int(records[index].get("width", grid_w * patch)), grid_w * patch)
                sizes.append((height, width))
            for index, array in zip(batch, decode_codes(viq, processor, batch_codes, grid, sizes)):
                target = output / f"{stems[index]}.png"
                save_png(array, target)
                written.append(target)
            bar.update(len(batch))
    finally:
        bar.close()
    _say(args, f"decoded {len(written)} image(s) -> {output}/")
    return EXIT_OK


def command_reconstruct(args) -> int:
    paths = check_input_files(args.images)
    check_images_readable(paths)
    viq, processor, model_id, size = _load(args)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    stems = unique_stems(path.name for path in paths)
    label = model_id + (f" ({size})" if size else "")
    rows = []
    items = [(path.name, path) for path in paths]
    for stem, item in zip(stems, reconstruct(viq, processor, items, args.batch_size, args.quiet, "reconstruct")):
        numbers = reconstruction_numbers(item, viq.config.codebook_size)
        save_png(item.reconstruction, output / f"{stem}.png")
        picture = side_by_side(item.original, item.reconstruction, numbers_text(numbers, label))
        save_png(picture, output / f"{stem}_side_by_side.png")
        numbers.update(reconstruction=f"{stem}.png", side_by_side=f"{stem}_side_by_side.png")
        rows.append(numbers)
    report = {"model": model_id, "viq_size": size, "images": rows}
    # strict JSON: an exact reconstruction's infinite PSNR is written as null
    (output / "metrics.json").write_text(json.dumps(_finite_or_null(report), indent=2, allow_nan=False) + "\n")
    if not args.quiet:
        print(
            f"{'image':<28} {'size':>11} {'bpp':>7} {'code B':>8} {'PNG B':>9} {'JPEG90 B':>9} {'PSNR':>7} {'SSIM':>6}"
        )
        for row in rows:
            print(
                f"{row['name'][:28]:<28} {row['width']:>5}x{row['height']:<5} {row['bpp']:>7.4f} "
                f"{row['code_bytes_packed']:>8,} {row['png_bytes']:>9,} {row['jpeg90_bytes']:>9,} "
                f"{row['psnr']:>7.2f} {row['ssim']:>6.4f}"
            )
        print(f"reconstructions, side-by-side pictures and metrics.json -> {output}/")
    return EXIT_OK


def command_convert(args) -> int:
    from .convert_viq_original_to_hf import convert_viq_checkpoint

    source = args.source
    check_model_path(source)
    if args.check_image:
        check_images_readable(check_input_files(args.check_image))
    config = None
    if args.config:
        from . import ViQConfig

        if not os.path.isdir(args.config):
            check_input_files([args.config])
        try:
            config = ViQConfig.from_pretrained(args.config)
        except Exception as error:
            raise CLIError(f"cannot read config {args.config}: {_one_line(error)}", EXIT_USAGE) from None
    try:
        result = convert_viq_checkpoint(
            source, args.size, args.output, check_images=args.check_image, push_to_hub=args.push_to_hub, config=config
        )
    except FileNotFoundError as error:
        raise CLIError(_one_line(error), EXIT_USAGE) from error
    except Exception as error:
        raise CLIError(f"conversion failed: {_one_line(error)}", EXIT_RUNTIME) from error
    _say(
        args,
        f"converted {source} ({args.size}) -> {result['output_dir']}: {result['codes_identical']:,} of "
        f"{result['codes_checked']:,} codes identical"
        + (f"; pushed to {args.push_to_hub}" if args.push_to_hub else ""),
    )
    return EXIT_OK


def command_extract(args) -> int:
    from .extraction import extract_codes

    dataset = args.dataset
    expanded = os.path.expanduser(dataset)
    if (looks_like_path(dataset) or os.sep in dataset) and not os.path.exists(expanded):
        raise CLIError(f"no such dataset: {dataset}", EXIT_USAGE)
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise CLIError(f"-o {output} is a file; give a folder for the shards", EXIT_USAGE)
    try:
        rank = int(os.environ.get("RANK", "0")) if args.rank is None else args.rank
        world_size = int(os.environ.get("WORLD_SIZE", "1")) if args.world_size is None else args.world_size
    except ValueError as error:
        raise CLIError(f"bad RANK/WORLD_SIZE in the environment: {_one_line(error)}", EXIT_USAGE) from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise CLIError(f"rank {rank} is not in [0, world size {world_size})", EXIT_USAGE)
    text_columns = None
    if args.text_columns is not None:
        text_columns = [name.strip() for name in args.text_columns.split(",") if name.strip()]
    viq, processor, model_id, size = _load(args)
    recorded = str(Path(model_id).expanduser().resolve()) if os.path.isdir(os.path.expanduser(model_id)) else model_id
    try:
        result = extract_codes(
            dataset,
            output,
            viq,
            processor,
            split=args.split,
            image_column=args.image_column,
            text_columns=text_columns,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            limit=args.limit,
            rank=rank,
            world_size=world_size,
            overwrite=args.overwrite,
            model_id=recorded,
            viq_size=size,
            progress=not args.quiet and sys.stderr.isatty(),
        )
    except FileNotFoundError as error:
        raise CLIError(_one_line(error), EXIT_USAGE) from error
    except ValueError as error:
        message = _one_line(error)
        code = EXIT_INCOMPATIBLE if "holds codes made with" in message else EXIT_USAGE
        raise CLIError(message, code) from error
    _say(
        args,
        f"rank {rank}/{world_size}: {result.num_written} sample(s) written in {len(result.shards)} shard(s), "
        f"{result.num_skipped} unreadable skipped, {result.num_already_done} already done -> {output}/",
    )
    return EXIT_OK


# ------------------------------------------------------------------------------------------------------------------
# Parser
# ------------------------------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (`viq: error: ...`, exit code 2)."""

    def error(self, message):
        hint = f" (see `{self.prog} --help`)"
        self.exit(EXIT_USAGE, f"viq: error: {message}{hint}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _device(text: str) -> str:
    if text in ("auto", "cpu", "mps") or text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", "-q", action="store_true", help="no progress bars, no summary")
    common.add_argument("--debug", action="store_true", help="show the full traceback on errors")

    model = argparse.ArgumentParser(add_help=False)
    group = model.add_argument_group("model", MODEL_HELP)
    group.add_argument(
        "--model", default=None, help=f"HF-format folder/repo, or the authors' repo (default {DEFAULT_MODEL})"
    )
    group.add_argument(
        "--size",
        choices=SIZES,
        default=None,
        help=f"authors' layout size (default {DEFAULT_SIZE} for {DEFAULT_MODEL}; omit for HF format)",
    )
    group.add_argument("--device", type=_device, default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    group.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="weights dtype")
    group.add_argument("--batch-size", type=_positive_int, default=4, help="images per packed model call (default 4)")

    preprocess = argparse.ArgumentParser(add_help=False)
    group = preprocess.add_argument_group("preprocessing")
    group.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=None,
        help="pixel budget per image: larger images are downscaled (refused with --no-resize); "
        "default: the processor's",
    )
    group.add_argument(
        "--no-resize",
        action="store_true",
        help="the authors' preprocessing: no resize, zero padding to multiples of 16 (cropped after decoding)",
    )

    parser = _Parser(
        prog="viq",
        description=textwrap.fill(
            "ViQ visual tokenizer: encode images to discrete codes, decode codes to images, "
            "measure reconstructions, convert the published weights.",
            100,
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"viq (transformers-viq) {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def add(name, help_text, parents):
        return commands.add_parser(
            name,
            help=help_text,
            description=textwrap.fill(help_text, 100),
            parents=parents,
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    encode = add(
        "encode",
        "Encode images to one codes file (uint16 codes, grids, model, per-image name and size).",
        [common, model, preprocess],
    )
    encode.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    encode.add_argument("-o", "--output", required=True, metavar="FILE", help="codes file to write (.safetensors)")
    encode.set_defaults(handler=command_encode)

    decode = add(
        "decode",
        "Decode a codes file to one PNG per image (padding cropped to the recorded size). "
        "The model defaults to the one recorded in the file.",
        [common, model],
    )
    decode.add_argument("codes", metavar="FILE", help="codes file written by `viq encode`")
    decode.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the PNGs")
    decode.set_defaults(handler=command_decode)

    recon = add(
        "reconstruct",
        "Encode and decode images; write each reconstruction and a side-by-side PNG "
        "(original | reconstruction | bpp, bytes vs raw RGB/PNG/JPEG, PSNR, SSIM) plus metrics.json.",
        [common, model, preprocess],
    )
    recon.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    recon.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the PNGs and metrics.json")
    recon.set_defaults(handler=command_reconstruct)

    convert = add(
        "convert",
        "Convert the authors' published layout to HF format (config.json + safetensors + "
        "preprocessor_config.json), checking that both give the same codes.",
        [common],
    )
    convert.add_argument("--size", choices=SIZES, required=True, help="which published codebook size")
    convert.add_argument("--source", default=DEFAULT_MODEL, help=f"Hub repo or local folder (default {DEFAULT_MODEL})")
    convert.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    convert.add_argument("--push-to-hub", default=None, metavar="REPO", help="also push the result to this Hub repo")
    convert.add_argument(
        "--check-image",
        action="append",
        default=None,
        metavar="IMAGE",
        help="image to compare codes on (repeatable; default: the bundled samples)",
    )
    convert.add_argument("--config", default=None, metavar="FILE",
                         help="architecture config.json (default: the released architecture of --size)")  # fmt: skip
    convert.set_defaults(handler=command_convert)

    extract = add(
        "extract",
        "Extract a `datasets` dataset of images to Parquet shards of uint16 codes (with the text columns and the "
        "source row index) plus viq_codes.json. Resumable: run it again to continue; RANK/WORLD_SIZE (or --rank/"
        "--world-size) split the work across processes. Unreadable images are logged and skipped (skipped-*.jsonl).",
        [common, model, preprocess],
    )
    extract.add_argument("dataset", metavar="DATASET", help="save_to_disk folder, or a name/path for load_dataset")
    extract.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the shards")
    extract.add_argument("--split", default=None, help="split to extract (needed when the dataset has several)")
    extract.add_argument("--image-column", default=None, help="image column (default: the first Image column)")
    extract.add_argument("--text-columns", default=None, metavar="A,B",
                         help="comma-separated columns to carry over (default: every non-image column)")  # fmt: skip
    extract.add_argument("--shard-size", type=_positive_int, default=1000, help="samples per shard (default 1000)")
    extract.add_argument("--limit", type=_positive_int, default=None, help="only the first N samples")
    extract.add_argument("--overwrite", action="store_true", help="delete this rank's shards and start over")
    extract.add_argument("--rank", type=int, default=None, help="this process's rank (default: env RANK or 0)")
    extract.add_argument("--world-size", type=_positive_int, default=None,
                         help="number of processes (default: env WORLD_SIZE or 1)")  # fmt: skip
    extract.set_defaults(handler=command_extract)
    return parser


def quiet_libraries(verbose: bool) -> None:
    from transformers.utils import logging as hf_logging

    if not (verbose and sys.stderr.isatty()):
        hf_logging.disable_progress_bar()
    if not verbose:
        hf_logging.set_verbosity_error()
        try:
            from diffusers.utils import logging as diffusers_logging

            diffusers_logging.set_verbosity_error()
        except ImportError:
            pass


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `viq` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, usage errors (already printed as one line)
        return int(stop.code) if isinstance(stop.code, int) else EXIT_USAGE
    quiet_libraries(verbose=not args.quiet)
    try:
        return args.handler(args)
    except CLIError as error:
        if args.debug:
            raise
        print(f"viq: error: {error}", file=sys.stderr)
        return error.code
    except ImportError as error:  # an optional dependency (e.g. scikit-image for reconstruct) is missing
        if args.debug:
            raise
        print(f"viq: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        print("viq: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # anything unforeseen: still one line, unless --debug
        if args.debug:
            raise
        message = _one_line(error)
        if "out of memory" in message.lower():
            message += " (try a smaller --batch-size or --max-pixels)"
        print(f"viq: error: {type(error).__name__}: {message} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
