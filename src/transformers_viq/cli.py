# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""The `viq` command line: argument parsing, the commands and their exit codes. The work is done by the library
(`transformers_viq.pipeline`, `.visualization`, `.extraction`, the converter script).

    viq encode IMAGE... -o codes.safetensors      images -> one codes file (see `transformers_viq.codes_io`)
    viq decode codes.safetensors -o DIR           codes file -> one PNG per image
    viq reconstruct IMAGE... -o DIR               reconstruction PNGs + side-by-side PNGs with bpp/bytes/PSNR/SSIM
    viq convert --size 16k -o DIR                 the authors' published layout -> HF format (optionally push)
    viq extract DATASET -o DIR                    a `datasets` dataset of images -> Parquet shards of codes

Also `python -m transformers_viq.cli ...`. Run `viq --help` or `viq COMMAND --help` for the options and exit codes.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap
import traceback
from pathlib import Path

from .exit_codes import EXIT_HUB, EXIT_INCOMPATIBLE, EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE
from .logging_utils import one_line
from .models.viq.configuration_viq import FSQ_LEVEL_PRESETS
from .original_checkpoint import AUTHORS_REPO


DEFAULT_MODEL = AUTHORS_REPO
DEFAULT_SIZE = "16k"
SIZES = tuple(FSQ_LEVEL_PRESETS)

EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}    success
  {EXIT_RUNTIME}    runtime or model error (the model cannot be loaded or run, out of memory, conversion failed,
       a missing optional dependency)
  {EXIT_USAGE}    usage error or bad input: a bad option, a missing file, an unreadable image, a file that
       is not a ViQ codes file, an output that would overwrite an input or (without --overwrite) a file
  {EXIT_INCOMPATIBLE}    the codes were made with a different codebook than the model (decode/extract refuse them)
  {EXIT_HUB}    the Hugging Face Hub cannot be reached or refused the request (no network, HF_HUB_OFFLINE=1
       without a cached copy, an unknown, private or gated repository); no retries
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)

Errors are one line on stderr, `viq: error: ...`; --debug adds the traceback (the exit code stays the same)."""

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


def _say(args, text: str) -> None:
    if not args.quiet:
        print(text)


# Library messages name Python arguments; the command line names its flags.
_FLAGS = [
    (re.compile(r"`?\bdo_resize=False\b`?"), "--no-resize"),
    (re.compile(r"`?\bdo_resize=True\b`?"), "the default resizing (without --no-resize)"),
    (re.compile(r"`?\bmax_pixels=(\d+)`?"), r"--max-pixels \1"),
    (re.compile(r"`?\bmax_pixels\b`?"), "--max-pixels"),
    (re.compile(r"`?\bbatch_size\b`?"), "--batch-size"),
    (re.compile(r"`?\boverwrite=True\b`?"), "--overwrite"),
    (re.compile(r"`?\bdtype='(\w+)'`?"), r"--dtype \1"),
    (re.compile(r"\b(device|dtype) '"), r"--\1 '"),
    (re.compile(r"(?<![\w-])size='(\w+)'"), r"--size \1"),
]


def flags_in(message: str) -> str:
    """A library message with Python argument names replaced by the command's flags (`max_pixels`: `--max-pixels`)."""
    for pattern, flag in _FLAGS:
        message = pattern.sub(flag, message)
    return message


def _reason(error: BaseException) -> str:
    """What went wrong, in one line: the Hub failure if that is the cause, else the error's first line."""
    from .hub_utils import hub_error_reason

    return hub_error_reason(error) or one_line(error)


# ------------------------------------------------------------------------------------------------------------------
# Checks before any model loads
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


def check_images(paths) -> list[Path]:
    """Existing files that Pillow identifies as images (header only): a bad file fails before the model loads."""
    from .image_io import check_image_file

    paths = check_input_files(paths)
    for path in paths:
        try:
            check_image_file(path)
        except ValueError as error:
            raise CLIError(f"cannot read image {path}: {one_line(error)}", EXIT_USAGE) from None
    return paths


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_file(output: Path, inputs, overwrite: bool) -> None:
    """`-o FILE` must not be an input, a folder, or (without --overwrite) an existing file (`CLIError`, exit 2)."""
    for path in inputs:
        if _same_file(output, Path(path)) or output.resolve() == Path(path).resolve():
            raise CLIError(f"-o {output} is one of the inputs; write the result to another file", EXIT_USAGE)
    if output.is_dir():
        raise CLIError(f"-o {output} is a folder; give a file name such as codes.safetensors", EXIT_USAGE)
    if output.exists() and not overwrite:
        raise CLIError(f"-o {output} exists; pass --overwrite to replace it", EXIT_USAGE)


def check_output_folder(output: Path, names, inputs, overwrite: bool) -> None:
    """
    `-o DIR` must not be a file, and none of the files to write into it (`names`) may be an input, or (without
    --overwrite) an existing file (`CLIError`, exit code 2). Nothing is created here.
    """
    if output.exists() and not output.is_dir():
        raise CLIError(f"-o {output} is a file; give a folder", EXIT_USAGE)
    inputs = [Path(path) for path in inputs]
    existing = []
    for name in names:
        target = output / name
        for path in inputs:
            if _same_file(target, path) or target.resolve() == path.resolve():
                raise CLIError(f"-o {output} would overwrite the input {path} with {name}; write to another folder",
                               EXIT_USAGE)  # fmt: skip
        if target.exists():
            existing.append(name)
    if existing and not overwrite:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise CLIError(f"-o {output} already holds {shown}; pass --overwrite to replace them", EXIT_USAGE)


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


def _load(args, model: str | None = None, size: str | None = None, preprocess: bool = True):
    """The pipeline for the command's `--model/--size/--device/--dtype` (and preprocessing options)."""
    from .pipeline import ModelLoadError, ViQPipeline

    options = {}
    if preprocess:
        options = {"max_pixels": args.max_pixels, "do_resize": not args.no_resize}
    try:
        return ViQPipeline.from_pretrained(
            model if model is not None else args.model,
            size if size is not None else args.size,
            device=args.device,
            dtype=args.dtype,
            **options,
        )
    except FileNotFoundError as error:
        raise CLIError(one_line(error), EXIT_USAGE) from error
    except ValueError as error:  # a bad --device or --size for this model
        raise CLIError(one_line(error), EXIT_USAGE) from error
    except ModelLoadError as error:  # (a Hub failure among its causes gets EXIT_HUB in `main`)
        raise CLIError(one_line(error), EXIT_RUNTIME) from error


# ------------------------------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------------------------------
def command_encode(args) -> int:
    import math

    paths = check_images(args.images)
    output = Path(args.output)
    if output.is_dir():
        raise CLIError(f"-o {output} is a folder; give a file name such as codes.safetensors", EXIT_USAGE)
    if output.suffix == "":
        output = output.with_name(output.name + ".safetensors")  # `-o codes` -> codes.safetensors
    elif output.suffix.lower() != ".safetensors":
        hint = " (to write pictures, use `viq reconstruct IMAGE -o DIR`)" if _is_image_name(output) else ""
        raise CLIError(f"-o {output}: encode writes a codes file, whose name ends in .safetensors{hint}", EXIT_USAGE)
    check_output_file(output, paths, args.overwrite)
    pipe = _load(args)
    try:
        codes = pipe.encode([str(path) for path in paths], names=[path.name for path in paths],
                            batch_size=args.batch_size, progress=not args.quiet)  # fmt: skip
    except ValueError as error:
        raise CLIError(one_line(error), EXIT_USAGE) from error
    codes.save(output)
    bits = math.ceil(math.log2(codes.codebook_size))
    _say(
        args,
        f"encoded {codes.num_images} image(s): {codes.codes.numel():,} codes from a {codes.codebook_size:,}-code "
        f"codebook ({bits} bits/code) -> {output} ({output.stat().st_size:,} bytes)",
    )
    return EXIT_OK


def _is_image_name(path: Path) -> bool:
    from PIL import Image

    return path.suffix.lower() in Image.registered_extensions()


def command_decode(args) -> int:
    import json

    from .codes_io import ViQCodes
    from .models.viq.validation_viq import IncompatibleCodebookError
    from .original_checkpoint import is_original_layout
    from .pipeline import load_config, resolve_model
    from .visualization import save_png

    (path,) = check_input_files([args.codes])
    try:
        codes = ViQCodes.load(path)
    except (ValueError, KeyError, json.JSONDecodeError) as error:
        raise CLIError(f"cannot read codes file {path}: {one_line(error)}", EXIT_USAGE) from None
    model, size = args.model, args.size
    recorded = args.model is None and codes.model is not None
    if recorded:  # the model that made the codes
        model = codes.model
        if size is None and codes.viq_size and is_original_layout(model, codes.viq_size):
            size = codes.viq_size
    hint = f" (the model recorded in {path}; pass --model to use another copy)" if recorded else ""
    try:
        model, size = resolve_model(model, size)
        config = load_config(model, size)
    except FileNotFoundError as error:
        raise CLIError(f"{one_line(error)}{hint}", EXIT_USAGE) from error
    except Exception as error:  # noqa: BLE001 - hub errors, bad configs: one line
        raise CLIError(f"cannot load the config of model {model}: {_reason(error)}{hint}", EXIT_RUNTIME) from error
    try:
        codes.check_compatible(config)
    except IncompatibleCodebookError as error:
        raise CLIError(f"{path}: {one_line(error)}", EXIT_INCOMPATIBLE) from None
    output = Path(args.output)
    records = codes.images or [{"name": f"image-{index}.png"} for index in range(codes.num_images)]
    stems = unique_stems(record.get("name", f"image-{index}") for index, record in enumerate(records))
    check_output_folder(output, [f"{stem}.png" for stem in stems], [path], args.overwrite)
    pipe = _load(args, model, size, preprocess=False)
    arrays = pipe.decode(codes, batch_size=args.batch_size, progress=not args.quiet,
                         keep_model_size=args.keep_model_size)  # fmt: skip
    output.mkdir(parents=True, exist_ok=True)
    for stem, array in zip(stems, arrays):
        save_png(array, output / f"{stem}.png")
    recorded = all(codes.source_size(index) is not None for index in range(codes.num_images))
    at = "the size the model saw" if args.keep_model_size or not recorded else "each image's original size"
    _say(args, f"decoded {len(arrays)} image(s) at {at} -> {output}/")
    return EXIT_OK


def command_reconstruct(args) -> int:
    from .file_utils import write_json
    from .metrics import check_quality_dependencies
    from .pipeline import MEASURED_AT, reconstruction_numbers
    from .visualization import numbers_text, save_png, side_by_side

    check_quality_dependencies()  # PSNR/SSIM need the `eval` extra: say so before anything runs or is written
    paths = check_images(args.images)
    output = Path(args.output)
    stems = unique_stems(path.name for path in paths)
    names = [name for stem in stems for name in (f"{stem}.png", f"{stem}_side_by_side.png")] + ["metrics.json"]
    check_output_folder(output, names, paths, args.overwrite)
    pipe = _load(args)
    label = pipe.model_id + (f" ({pipe.viq_size})" if pipe.viq_size else "")
    rows = []
    items = [(path.name, path) for path in paths]
    reconstructions = pipe.reconstruct(items, args.batch_size, progress=not args.quiet,
                                       keep_model_size=args.keep_model_size)  # fmt: skip
    try:
        for stem, item in zip(stems, reconstructions):
            numbers = reconstruction_numbers(item, pipe.codebook_size)
            output.mkdir(parents=True, exist_ok=True)
            save_png(item.reconstruction, output / f"{stem}.png")
            save_png(side_by_side(item.original, item.reconstruction, numbers_text(numbers, label)),
                     output / f"{stem}_side_by_side.png")  # fmt: skip
            numbers.update(reconstruction=f"{stem}.png", side_by_side=f"{stem}_side_by_side.png")
            rows.append(numbers)
    except ValueError as error:
        raise CLIError(one_line(error), EXIT_USAGE) from error
    at = "model" if args.keep_model_size else "source"
    write_json(output / "metrics.json", {"model": pipe.model_id, "viq_size": pipe.viq_size, "measured_at": at,
                                         "measured_at_meaning": MEASURED_AT[at], "images": rows})  # fmt: skip
    if not args.quiet:
        print(f"numbers at {MEASURED_AT[at]} (size column: height x width, as patch grids are written)")
        print(
            f"{'image':<28} {'size':>11} {'bpp':>7} {'code B':>8} {'PNG B':>9} {'JPEG90 B':>9} {'PSNR':>7} {'SSIM':>6}"
        )
        for row in rows:
            print(
                f"{row['name'][:28]:<28} {row['height']:>5}x{row['width']:<5} {row['bpp']:>7.4f} "
                f"{row['code_bytes_packed']:>8,} {row['png_bytes']:>9,} {row['jpeg90_bytes']:>9,} "
                f"{row['psnr']:>7.2f} {row['ssim']:>6.4f}"
            )
        print(f"reconstructions, side-by-side pictures and metrics.json -> {output}/")
    return EXIT_OK


def command_convert(args) -> int:
    from . import convert_viq_original_to_hf as converter
    from .hub_utils import NoSuchFolderError, check_local_folder

    try:
        check_local_folder(args.source)
    except NoSuchFolderError as error:
        raise CLIError(str(error), EXIT_USAGE) from None
    if os.path.isfile(os.path.join(os.path.expanduser(args.source), "config.json")):
        raise CLIError(f"--source {args.source} is a folder in HF format (config.json), not the authors' layout: "
                       "nothing to convert", EXIT_USAGE)  # fmt: skip
    if args.check_image:
        check_images(args.check_image)
    if args.config and not os.path.isdir(args.config):
        check_input_files([args.config])
    try:
        converter.check_output_dir(args)
    except (FileExistsError, ValueError) as error:
        raise CLIError(one_line(error), EXIT_USAGE) from None
    try:
        result = converter.run(args)
    except FileNotFoundError as error:
        raise CLIError(one_line(error), EXIT_USAGE) from error
    except ValueError as error:
        if str(error).startswith("cannot read --config"):
            raise CLIError(one_line(error), EXIT_USAGE) from error
        raise CLIError(f"conversion failed: {_reason(error)}", EXIT_RUNTIME) from error
    except Exception as error:  # noqa: BLE001 - conversion and proof failures: one line
        raise CLIError(f"conversion failed: {_reason(error)}", EXIT_RUNTIME) from error
    _say(
        args,
        f"converted {args.source} ({args.size}) -> {result['output_dir']}: {result['codes_identical']:,} of "
        f"{result['codes_checked']:,} codes identical"
        + (f"; pushed to {args.push_to_hub}" if args.push_to_hub else ""),
    )
    return EXIT_OK


def command_extract(args) -> int:
    from .extraction import (
        DEFAULT_MAX_BATCH_PIXELS,
        check_extraction_dependencies,
        default_num_workers,
        dtype_name,
        extract_codes,
        is_llava_json,
        process_device,
        process_environment,
    )
    from .hub_utils import looks_like_path
    from .models.viq.validation_viq import IncompatibleCodebookError

    check_extraction_dependencies()  # the `eval` extra: say so before the model loads or anything is written
    dataset = args.dataset
    local = looks_like_path(dataset) or dataset.lower().endswith((".json", ".jsonl"))
    if local and not os.path.exists(os.path.expanduser(dataset)):
        raise CLIError(f"no such dataset: {dataset}", EXIT_USAGE)
    if args.image_folder is not None:
        if not is_llava_json(dataset):
            raise CLIError("--image-folder applies to LLaVA-style .json/.jsonl files only", EXIT_USAGE)
        if not os.path.isdir(os.path.expanduser(args.image_folder)):
            raise CLIError(f"no such image folder: {args.image_folder}", EXIT_USAGE)
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise CLIError(f"-o {output} is a file; give a folder for the shards", EXIT_USAGE)
    try:
        env = process_environment()  # RANK/WORLD_SIZE/LOCAL_RANK as torchrun and accelerate launch set them
    except ValueError as error:
        raise CLIError(f"bad process environment: {one_line(error)}", EXIT_USAGE) from None
    rank = env.rank if args.rank is None else args.rank
    world_size = env.world_size if args.world_size is None else args.world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise CLIError(f"rank {rank} is not in [0, world size {world_size})", EXIT_USAGE)
    text_columns = None
    if args.text_columns is not None:
        text_columns = [name.strip() for name in args.text_columns.split(",") if name.strip()]
    args.device = process_device(args.device, env.local_rank)  # one GPU per process of a job: cuda:LOCAL_RANK
    pipe = _load(args)
    num_workers = args.num_workers
    if num_workers is None:
        num_workers = default_num_workers(env.local_world_size, pipe.device)
    try:
        result = extract_codes(
            dataset,
            output,
            pipe,
            split=args.split,
            image_column=args.image_column,
            text_columns=text_columns,
            image_folder=args.image_folder,
            max_batch_pixels=args.max_batch_pixels or DEFAULT_MAX_BATCH_PIXELS,
            batch_size=args.batch_size,
            num_workers=num_workers,
            shard_size=args.shard_size,
            limit=args.limit,
            rank=rank,
            world_size=world_size,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except FileNotFoundError as error:
        raise CLIError(one_line(error), EXIT_USAGE) from error
    except IncompatibleCodebookError as error:
        raise CLIError(one_line(error), EXIT_INCOMPATIBLE) from error
    except ValueError as error:
        raise CLIError(one_line(error), EXIT_USAGE) from error
    summary = (
        f"rank {rank}/{world_size}: {result.num_written} sample(s) written in {len(result.shards)} shard(s), "
        f"{result.num_skipped} unreadable skipped, {result.num_already_done} already done -> {output}/"
    )
    if result.num_images:
        summary += (
            f"\n  {result.num_images} image(s) in {result.seconds:.1f} s: {result.images_per_second:.1f} images/s "
            f"({dtype_name(pipe.dtype)} on {pipe.device}, "
            f"{f'{num_workers} reader process(es)' if num_workers else 'stages in turn'}); stored "
            f"{result.stored_bytes_per_image:,.0f} bytes per image"
        )
        if result.source_bytes:
            summary += f" (source files: {result.source_bytes_per_image:,.0f} bytes per image)"
    _say(args, summary)
    return EXIT_OK


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _own_copy_of_option(parser: argparse.ArgumentParser, dest: str, **changes) -> None:
    """Give one subcommand its own copy of an option it shares with others through a parent parser (argparse shares
    the parent's action objects), with other `default`/`help`."""
    import copy

    shared = next(action for action in parser._actions if action.dest == dest)
    own = copy.copy(shared)
    for name, value in changes.items():
        setattr(own, name, value)
    for container in (parser, *parser._action_groups):
        actions = container._group_actions if container is not parser else parser._actions
        actions[:] = [own if action is shared else action for action in actions]
    for option in own.option_strings:
        parser._option_string_actions[option] = own


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
    from .convert_viq_original_to_hf import add_arguments as add_convert_arguments

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", "-q", action="store_true", help="no progress bars, no summary")
    common.add_argument("--debug", action="store_true", help="also print the traceback of an error")

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
    encode.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="codes file to write (.safetensors; added to a name without extension)")  # fmt: skip
    encode.add_argument("--overwrite", action="store_true", help="replace -o if it exists")
    encode.set_defaults(handler=command_encode)

    keep_model_size = argparse.ArgumentParser(add_help=False)
    keep_model_size.add_argument(
        "--keep-model-size",
        action="store_true",
        help="write images at the size the model saw (the processor's resize, a multiple of 16 in native mode) "
        "instead of each image's original size",
    )
    keep_model_size.add_argument("--overwrite", action="store_true", help="replace files that exist in -o")

    decode = add(
        "decode",
        "Decode a codes file to one PNG per image, at each image's original size as recorded by `viq encode` "
        "(padding cropped, then resized back from the size the model saw; --keep-model-size keeps that one). "
        "The model defaults to the one recorded in the file.",
        [common, model, keep_model_size],
    )
    decode.add_argument("codes", metavar="FILE", help="codes file written by `viq encode`")
    decode.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the PNGs")
    decode.set_defaults(handler=command_decode)

    recon = add(
        "reconstruct",
        "Encode and decode images; write each reconstruction and a side-by-side PNG "
        "(original | reconstruction | bpp, bytes vs raw RGB/PNG/JPEG, PSNR, SSIM) plus metrics.json. Pictures and "
        "numbers are at each image's original size (--keep-model-size: at the size the model saw); metrics.json "
        "says which. Needs the `eval` extra (scikit-image).",
        [common, model, preprocess, keep_model_size],
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
    add_convert_arguments(convert)
    convert.set_defaults(handler=command_convert)

    extract = add(
        "extract",
        "Extract a `datasets` dataset of images, or a LLaVA-style JSON file, to Parquet shards of uint16 codes (with "
        "the text columns and the source row index) plus viq_codes.json. Reading, decoding and preprocessing run in "
        "--num-workers processes while the model encodes batches packed by --max-batch-pixels, and shards are written "
        "meanwhile. Resumable: run it again to continue; RANK/WORLD_SIZE (as torchrun and accelerate launch set them; "
        "or --rank/--world-size) split the work across processes, each on cuda:LOCAL_RANK. Unreadable images are "
        "logged and skipped (skipped-*.jsonl).",
        [common, model, preprocess],
    )
    extract.add_argument(
        "dataset", metavar="DATASET", help="save_to_disk folder, LLaVA-style .json/.jsonl file, or a load_dataset name"
    )
    extract.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the shards")
    extract.add_argument("--split", default=None, help="split to extract (needed when the dataset has several)")
    extract.add_argument("--image-column", default=None,
                         help="image column (default: the first Image column; `images` for LLaVA JSON)")  # fmt: skip
    extract.add_argument("--image-folder", default=None, metavar="DIR",
                         help="folder the image paths of a LLaVA JSON file are relative to")  # fmt: skip
    extract.add_argument("--text-columns", default=None, metavar="A,B",
                         help="comma-separated columns to carry over (default: every non-image column)")  # fmt: skip
    extract.add_argument("--max-batch-pixels", type=_positive_int, default=None, metavar="N",
                         help="processed pixels per packed model call; a larger image is encoded alone "
                         "(default: four 1024x1024 images' worth, 4194304)")  # fmt: skip
    _own_copy_of_option(extract, "batch_size", default=None,
                        help="also at most this many images per packed model call (default: no limit)")  # fmt: skip
    extract.add_argument("--num-workers", type=_non_negative_int, default=None, metavar="N",
                         help="reader processes (read, decode, preprocess) running while the model encodes; "
                         "0 runs every stage in turn (default: 0 on the CPU, where the encoder needs every core; "
                         "with a GPU, this process's share of the CPUs less one, at most 16)")  # fmt: skip
    extract.add_argument("--shard-size", type=_positive_int, default=1000, help="samples per shard (default 1000)")
    extract.add_argument("--limit", type=_positive_int, default=None, help="only the first N samples")
    extract.add_argument("--overwrite", action="store_true", help="delete this rank's shards and start over")
    extract.add_argument("--rank", type=int, default=None, help="this process's rank (default: env RANK or 0)")
    extract.add_argument("--world-size", type=_positive_int, default=None,
                         help="number of processes (default: env WORLD_SIZE or 1)")  # fmt: skip
    extract.set_defaults(handler=command_extract)
    return parser


def _report(args, message: str, code: int) -> int:
    if getattr(args, "debug", False):
        traceback.print_exc()
    print(f"viq: error: {flags_in(message)}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `viq` console script; returns the exit code."""
    from .logging_utils import configure

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, usage errors (already printed as one line)
        return int(stop.code) if isinstance(stop.code, int) else EXIT_USAGE
    configure("info" if args.debug else "warning", progress=not args.quiet)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("viq: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - every error is one line (with --debug, also the traceback)
        return _report_error(args, error)


def _report_error(args, error: Exception) -> int:
    """The exit code and one-line message of an error; every Hub or network failure gets `EXIT_HUB`."""
    from .hub_utils import hub_error_reason

    hub = hub_error_reason(error)
    if isinstance(error, CLIError):
        return _report(args, str(error), EXIT_HUB if hub is not None else error.code)
    if hub is not None:
        return _report(args, hub, EXIT_HUB)
    if isinstance(error, ImportError):  # an optional dependency (e.g. scikit-image for reconstruct) is missing
        return _report(args, one_line(error), EXIT_RUNTIME)
    message = one_line(error)
    if "out of memory" in message.lower():
        message += " (try a smaller --batch-size or --max-pixels)"
    hint = "" if args.debug else " (run with --debug for the traceback)"
    return _report(args, f"{type(error).__name__}: {message}{hint}", EXIT_RUNTIME)


if __name__ == "__main__":
    sys.exit(main())
