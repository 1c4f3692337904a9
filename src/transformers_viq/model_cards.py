# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Model cards, preset folders and Hub pushes for ViQ tokenizers and ViQ vision-language models.

* [`render_tokenizer_card`]: the card of a ViQ tokenizer (one of the five released sizes, or any `ViQConfig`).
* [`render_vlm_card`]: the card of a `ViQForConditionalGeneration` (Qwen2.5 on ViQ codes).
* [`write_presets`]: the folders `modeling_cards/viq-fsq-<size>/` (`config.json`, `preprocessor_config.json`,
  `README.md`), regenerated with `python -m transformers_viq.model_cards --write-presets modeling_cards`.
* [`save_for_hub`] / [`push_to_hub_with_card`]: save a model (and its processor) with `save_pretrained`, add the
  card as `README.md` and the package's code with an `auto_map` (so `trust_remote_code=True` loads it where only
  transformers is installed), and write it to a folder / upload everything in one commit.

Cards are rendered with `huggingface_hub.ModelCard.from_template` from the Jinja templates shipped in
`transformers_viq/model_card_templates/`; the front matter (`library_name`, `pipeline_tag`, `base_model`, `tags`,
`license`) comes from `ModelCardData`.
"""

from __future__ import annotations

import argparse
import ast
import filecmp
import importlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, ModelCardData

from .models.viq.configuration_viq import FSQ_LEVEL_PRESETS, ViQConfig
from .models.viq.image_processing_viq import ViQImageProcessor


TEMPLATES_DIR = Path(__file__).parent / "model_card_templates"
TOKENIZER_TEMPLATE = TEMPLATES_DIR / "viq_tokenizer.md"
VLM_TEMPLATE = TEMPLATES_DIR / "viq_vlm.md"

AUTHORS_WEIGHTS_REPO = "XuminYu/ViQ_weights"
CODE_URL = "https://github.com/yuxumin/ViQ"
PAPER_URL = "https://arxiv.org/abs/2606.27313"

TOKENIZER_TAGS = ["viq", "visual-tokenizer", "fsq", "siglip2", "image-tokenizer"]
VLM_TAGS = ["viq", "vision-language", "qwen2.5", "multimodal", "image-text-to-text"]
PRESET_FOLDER = "viq-fsq-{size}"

PROJECTOR_DESCRIPTIONS = {
    "pooled": (
        "pooled projector (per-token linear layer, learned softmax pooling over 2x2 patch windows, GELU, linear; a "
        "learned newline token after each row and learned begin/end tokens)"
    ),
    "mlp": "MLP projector (the 4 patch features of each 2x2 window concatenated, then Linear-GELU-Linear)",
}
IMAGE_TOKEN_FORMULAS = {"pooled": "`(h/2) * (w/2 + 1) + 2`", "mlp": "`(h/2) * (w/2)`"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# ----------------------------------------------------------------------------------------------------------------
# Cards
# ----------------------------------------------------------------------------------------------------------------


def render_tokenizer_card(
    size_or_config: str | ViQConfig,
    repo_id: str | None = None,
    weights_repo: str = AUTHORS_WEIGHTS_REPO,
    remote_code: bool = True,
) -> ModelCard:
    """
    The model card of a ViQ tokenizer in HF format.

    Args:
        size_or_config (`str` or [`ViQConfig`]):
            A released size (`"2k"`, `"4k"`, `"8k"`, `"16k"`, `"64k"`) or the config of the model.
        repo_id (`str`, *optional*):
            Where the card will live; used in the loading snippet (a placeholder folder name otherwise).
        weights_repo (`str`, *optional*, defaults to `"XuminYu/ViQ_weights"`):
            The authors' weights this model was converted from (the card's `base_model`).
        remote_code (`bool`, *optional*, defaults to `True`):
            Whether the repository carries the package's code (see [`save_for_hub`]): the card then also shows the
            `trust_remote_code=True` route for users with transformers alone; otherwise it says what to install.

    Returns:
        `huggingface_hub.ModelCard`: front matter with `library_name: transformers`, `pipeline_tag:
        image-feature-extraction`, `license`, `base_model` and the ViQ tags; text with the size, levels, codebook
        size, how to load and encode, and how the authors trained it.
    """
    config = _tokenizer_config(size_or_config)
    viq_size = config.preset or "custom"
    levels = list(config.fsq_levels)
    codebook_size = config.codebook_size
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-feature-extraction",
        license="apache-2.0",
        base_model=weights_repo,
        tags=list(TOKENIZER_TAGS),
        model_name=f"ViQ FSQ-{viq_size}",
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(TOKENIZER_TEMPLATE),
        repo_id=repo_id or f"path/to/{PRESET_FOLDER.format(size=viq_size)}",
        weights_repo=weights_repo,
        viq_size=viq_size,
        fsq_levels=levels,
        codebook_size=codebook_size,
        codes_per_patch=config.codes_per_patch,
        patch_size=config.vision_config.patch_size,
        hidden_size=config.vision_config.hidden_size,
        num_layers=config.vision_config.num_hidden_layers,
        bits_per_code=math.ceil(math.log2(codebook_size)),
        remote_code=remote_code,
    )


def render_vlm_card(
    config,
    base_model: str | None = None,
    training_details: str | None = None,
    repo_id: str | None = None,
    tokenizer_repo: str = AUTHORS_WEIGHTS_REPO,
    datasets: Sequence[str] | None = None,
    license: str = "apache-2.0",
    license_note: str | None = None,
    tags: Sequence[str] | None = None,
    remote_code: bool = True,
    **card_data_kwargs,
) -> ModelCard:
    """
    The model card of a ViQ vision-language model (`ViQForConditionalGeneration`).

    Args:
        config (`ViQQwenConfig`):
            The model's config (ViQ size, projector, image token and LLM shape are read from it).
        base_model (`str`, *optional*):
            The Qwen2.5 checkpoint the language model comes from (e.g. `"Qwen/Qwen2.5-0.5B-Instruct"`). Defaults to
            `config.text_config._name_or_path` when that is a Hub id; a `ValueError` otherwise.
        training_details (`str`, *optional*):
            Markdown describing the training: dataset, steps, learning rate, which parts were trained (vision frozen,
            projector trained, LLM full/frozen/LoRA), hardware.
        repo_id (`str`, *optional*):
            Where the card will live; used in the loading snippet.
        tokenizer_repo (`str`, *optional*, defaults to `"XuminYu/ViQ_weights"`):
            The ViQ tokenizer the model uses (listed in `base_model` next to the Qwen2.5 checkpoint).
        datasets (`list[str]`, *optional*):
            Hub ids of the training datasets (front matter `datasets`).
        license (`str`, *optional*, defaults to `"apache-2.0"`):
            Licence identifier for the front matter. Qwen2.5-3B and -72B carry Qwen's own licences (`"other"` with
            `license_name`/`license_link` in `card_data_kwargs`); pass the one of your `base_model`.
        license_note (`str`, *optional*):
            Text of the card's licence section (a default names both parents' licences).
        tags (`list[str]`, *optional*):
            Extra tags, added to `viq, vision-language, qwen2.5, multimodal, image-text-to-text`.
        remote_code (`bool`, *optional*, defaults to `True`):
            Whether the repository carries the package's code (see [`save_for_hub`]): the card then also shows the
            `trust_remote_code=True` route for users with transformers alone; otherwise it says what to install.
        **card_data_kwargs:
            More `ModelCardData` fields (`language`, `license_name`, `license_link`, `eval_results`, ...).

    Returns:
        `huggingface_hub.ModelCard` with `library_name: transformers`, `pipeline_tag: image-text-to-text` and
        `base_model: [base_model, tokenizer_repo]`.
    """
    vision = config.vision_config
    text = config.text_config
    base_model = base_model or _hub_id_of(text)
    if base_model is None:
        raise ValueError(
            "The VLM card needs `base_model`, the Hub id of the Qwen2.5 checkpoint of the language model, and the "
            "config does not name one: pass base_model='Qwen/Qwen2.5-0.5B-Instruct' (or yours) to save_for_hub, "
            "push_to_hub or render_vlm_card."
        )
    viq_size = getattr(vision, "preset", None) or "custom"
    projector_type = config.projector_type
    all_tags = list(dict.fromkeys([*VLM_TAGS, *(tags or [])]))
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        license=license,
        base_model=[base_model, tokenizer_repo],
        datasets=list(datasets) if datasets else None,
        tags=all_tags,
        model_name=f"ViQ-{viq_size} + {base_model.split('/')[-1]}",
        **card_data_kwargs,
    )
    if training_details is None:
        training_details = "No training details were given when this card was written."
    if license_note is None:
        license_note = (
            f"This model combines [`{base_model}`](https://huggingface.co/{base_model}) and the ViQ tokenizer "
            f"[`{tokenizer_repo}`](https://huggingface.co/{tokenizer_repo}) (released by its authors with "
            f"[github.com/yuxumin/ViQ]({CODE_URL}) under the Apache License 2.0); each part keeps its own licence. "
            f"The card's `license` field says `{license}`."
        )
    return ModelCard.from_template(
        card_data,
        template_path=str(VLM_TEMPLATE),
        model_title=f"ViQ-{viq_size} + {base_model.split('/')[-1]}",
        repo_id=repo_id or "path/to/viq-vlm",
        text_base_model=base_model,
        tokenizer_repo=tokenizer_repo,
        viq_size=viq_size,
        fsq_levels=list(vision.fsq_levels),
        codebook_size=vision.codebook_size,
        codes_per_patch=vision.codes_per_patch,
        projector_type=projector_type,
        projector_description=PROJECTOR_DESCRIPTIONS.get(projector_type, projector_type),
        image_token_formula=IMAGE_TOKEN_FORMULAS.get(projector_type, "see `get_num_image_tokens`"),
        image_token_id=config.image_token_id,
        text_hidden_size=getattr(text, "hidden_size", "?"),
        text_num_layers=getattr(text, "num_hidden_layers", "?"),
        training_details=training_details.strip(),
        license_note=license_note,
        remote_code=remote_code,
    )


def _tokenizer_config(size_or_config: str | ViQConfig) -> ViQConfig:
    if isinstance(size_or_config, ViQConfig):
        return size_or_config
    if isinstance(size_or_config, str):
        return ViQConfig.from_preset(size_or_config)
    raise TypeError(f"Expected a ViQ size or a ViQConfig, got {type(size_or_config).__name__}.")


def _hub_id_of(config) -> str | None:
    name = getattr(config, "_name_or_path", None) or getattr(config, "name_or_path", None) or ""
    if _HUB_ID.match(name) and not os.path.exists(name):
        return name
    return None


def default_card(obj: Any, repo_id: str | None = None, remote_code: bool = True, **card_kwargs) -> ModelCard:
    """
    The card for `obj` when none is given: [`render_tokenizer_card`] for a ViQ tokenizer (`model_type` `"viq"`; a
    `base_model` is the weights it was converted from), [`render_vlm_card`] for a VLM (`base_model`,
    `training_details`, `datasets`, `tags`, ... as that function takes them).
    """
    config = getattr(obj, "config", None)
    if isinstance(config, ViQConfig):
        if "base_model" in card_kwargs:
            card_kwargs["weights_repo"] = card_kwargs.pop("base_model") or AUTHORS_WEIGHTS_REPO
        unknown = sorted(set(card_kwargs) - {"weights_repo"})
        if unknown:
            raise ValueError(f"A tokenizer card takes `base_model`, not {', '.join(map(repr, unknown))}.")
        return render_tokenizer_card(config, repo_id=repo_id, remote_code=remote_code, **card_kwargs)
    if getattr(config, "model_type", None) == "viq_qwen":
        return render_vlm_card(config, repo_id=repo_id, remote_code=remote_code, **card_kwargs)
    raise ValueError(
        f"No default model card for {type(obj).__name__}; pass `card=` (render_tokenizer_card or render_vlm_card)."
    )


# ----------------------------------------------------------------------------------------------------------------
# Preset folders
# ----------------------------------------------------------------------------------------------------------------


def preset_config(size: str) -> ViQConfig:
    """The released architecture of a ViQ size, as a `ViQModel` config."""
    config = ViQConfig.from_preset(size)
    config.architectures = ["ViQModel"]
    return config


def write_preset(size: str, output_dir: str | os.PathLike) -> list[str]:
    """
    Write `config.json`, `preprocessor_config.json` and `README.md` of a released ViQ size into `output_dir`.

    `config.json` is what `save_pretrained` writes for `ViQConfig.from_preset(size)` (without `transformers_version`,
    so the files do not change with the installed version); `preprocessor_config.json` holds the
    `ViQImageProcessor()` defaults; `README.md` is `render_tokenizer_card(size)`.

    Returns:
        `list[str]`: The written paths.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config = preset_config(size).to_dict()
    config.pop("transformers_version", None)
    processor = ViQImageProcessor().to_dict()
    processor.pop("transformers_version", None)
    files = {
        "config.json": json.dumps(config, indent=2, sort_keys=True) + "\n",
        "preprocessor_config.json": json.dumps(processor, indent=2, sort_keys=True) + "\n",
        "README.md": str(render_tokenizer_card(size, remote_code=False)) + "\n",
    }
    written = []
    for name, content in files.items():
        path = output_dir / name
        path.write_text(content, encoding="utf-8")
        written.append(str(path))
    return written


def write_presets(output_root: str | os.PathLike, sizes: Sequence[str] | None = None) -> list[str]:
    """Write `output_root/viq-fsq-<size>/` for each released size (all five by default). Returns the written paths."""
    written = []
    for size in sizes or FSQ_LEVEL_PRESETS:
        written += write_preset(size, Path(output_root) / PRESET_FOLDER.format(size=size))
    return written


# ----------------------------------------------------------------------------------------------------------------
# Hub push
# ----------------------------------------------------------------------------------------------------------------


# The remote-code route (`trust_remote_code=True`): a saved model carries the code of its classes and an `auto_map`
# naming them, so that transformers alone loads it. transformers' own copy (`register_for_auto_class`) follows
# `from .name import` lines only, and the VLM's files import the tokenizer's folder (`from ..viq.modeling_viq import`);
# the bundle is therefore written here: the files of the model folders that the classes need, flat, with the imports
# of the sibling folder made local. Nothing outside `models/` may be needed (the layout test enforces that).
def _auto_maps(obj) -> dict[str, dict[str, type]]:
    """
    `{file that obj.save_pretrained writes: {Auto class: class}}` for the ViQ classes (empty for anything else); a
    `file:key` target is the dict under `key` in that file (the image processor's settings in a processor's file).
    """
    from .models.viq.modeling_viq import ViQModel
    from .models.viq_qwen.configuration_viq_qwen import ViQQwenConfig
    from .models.viq_qwen.modeling_viq_qwen import ViQForConditionalGeneration, ViQQwenModel
    from .models.viq_qwen.processing_viq import ViQProcessor

    if isinstance(obj, ViQModel):
        return {"config.json": {"AutoConfig": ViQConfig, "AutoModel": ViQModel}}
    if isinstance(obj, (ViQForConditionalGeneration, ViQQwenModel)):
        auto_map = {"AutoConfig": ViQQwenConfig, "AutoModel": ViQQwenModel}
        if isinstance(obj, ViQForConditionalGeneration):  # TRL's loader tries AutoModelForCausalLM
            auto_map.update(AutoModelForImageTextToText=ViQForConditionalGeneration,
                            AutoModelForCausalLM=ViQForConditionalGeneration)  # fmt: skip
        return {"config.json": auto_map}
    if isinstance(obj, ViQImageProcessor):
        return {"preprocessor_config.json": {"AutoImageProcessor": ViQImageProcessor}}
    if isinstance(obj, ViQProcessor):
        processor = {"AutoProcessor": ViQProcessor}
        image_processor = {"AutoImageProcessor": ViQImageProcessor, **processor}
        return {"processor_config.json": processor, "processor_config.json:image_processor": image_processor,
                "tokenizer_config.json": processor}  # fmt: skip
    return {}


def remote_code_files(classes) -> dict[str, str]:
    """
    `{file name: source}` of the code that `classes` need where only transformers is installed: each class's module
    and, recursively, the model modules it imports relatively, flat, with `from ..<folder>.<module> import` rewritten
    to `from .<module> import`.

    Raises:
        `ValueError` if one of those modules imports something of the package outside `models/` (a service), or two
        of them have the same file name.
    """
    package_models = f"{__package__}.models."
    files: dict[str, str] = {}
    done: set[str] = set()
    todo = [cls.__module__ for cls in classes]
    while todo:
        module = todo.pop()
        if module in done:
            continue
        done.add(module)
        path = Path(importlib.import_module(module).__file__)
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.level:
                target = f"{module.rsplit('.', node.level)[0]}.{node.module}"
                if node.module is None or not target.startswith(package_models):
                    raise ValueError(f"{path.name} imports {target}, which is no model module: a model pushed with "
                                     "its code could not load it without this package.")  # fmt: skip
                todo.append(target)
        if path.name in files:
            raise ValueError(f"Two model modules are named {path.name}; one flat folder cannot hold both.")
        files[path.name] = re.sub(r"^(\s*)from \.+(?:\w+\.)*(\w+) import", r"\1from .\2 import", source,
                                  flags=re.MULTILINE)  # fmt: skip
    return files


def _write_remote_code(obj, folder: Path) -> None:
    """Add the code of `obj`'s classes and their `auto_map` to `folder`, where `obj.save_pretrained` wrote."""
    auto_maps = _auto_maps(obj)
    classes = {cls for auto_map in auto_maps.values() for cls in auto_map.values()}
    for name, source in remote_code_files(sorted(classes, key=lambda cls: cls.__name__)).items():
        (folder / name).write_text(source, encoding="utf-8")
    for target, auto_map in auto_maps.items():
        filename, _, key = target.partition(":")
        path = folder / filename
        if not path.is_file():
            continue
        saved = json.loads(path.read_text(encoding="utf-8"))
        entry = saved.get(key) if key else saved
        if isinstance(entry, dict):
            names = {auto_class: f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"
                     for auto_class, cls in auto_map.items()}  # fmt: skip
            entry["auto_map"] = {**(entry.get("auto_map") or {}), **names}
            path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _save_one(obj, folder: Path, remote_code: bool) -> None:
    """`obj.save_pretrained(folder)`, plus (with `remote_code`) the code of its classes and their `auto_map`."""
    obj.save_pretrained(folder)
    if remote_code:
        _write_remote_code(obj, folder)


def save_for_hub(
    obj_or_objs, folder: str | os.PathLike, card: ModelCard | str | None = None, *, repo_id: str | None = None,
    remote_code: bool = True, base_model: str | None = None, training_details: str | None = None, **card_kwargs,
) -> list[str]:  # fmt: skip
    """
    Write what [`push_to_hub_with_card`] uploads into a local folder: each object's `save_pretrained` files, the
    model card as `README.md`, and (with `remote_code`) the package's modeling code with an `auto_map`, so that
    `AutoModel*.from_pretrained(folder_or_repo, trust_remote_code=True)` loads it where only transformers is
    installed. Where `transformers_viq` is imported its own classes are used and the code files are ignored.

    Args:
        obj_or_objs (object or `list` of objects with `save_pretrained`):
            What to save, e.g. `model` or `[model, processor]`. Their files go to the folder root; two objects writing
            the same file name with different contents is an error.
        folder (`str` or `os.PathLike`):
            Where to write (created if missing).
        card (`ModelCard` or `str`, *optional*):
            The card; defaults to `default_card(first object, repo_id)`.
        repo_id (`str`, *optional*):
            The repository the folder is meant for (used in the default card's loading snippet).
        remote_code (`bool`, *optional*, defaults to `True`):
            Also write the code files (`configuration_viq.py`, `modeling_viq.py`, ...) and the `auto_map`.
        base_model (`str`, *optional*), training_details (`str`, *optional*), card_kwargs:
            The default card's arguments, as `push_to_hub` takes them: for a VLM, the Qwen2.5 checkpoint it was built
            from and how it was trained (see [`render_vlm_card`]); for a tokenizer, the weights it was converted from.
            Not with `card`.

    Returns:
        `list[str]`: The written files, relative to `folder`, sorted.
    """
    objs = list(obj_or_objs) if isinstance(obj_or_objs, (list, tuple)) else [obj_or_objs]
    if not objs:
        raise ValueError("Nothing to save: `obj_or_objs` is empty.")
    for obj in objs:
        if not callable(getattr(obj, "save_pretrained", None)):
            raise TypeError(f"{type(obj).__name__} has no `save_pretrained`; cannot push it.")
    card_kwargs = _card_kwargs(base_model, training_details, card_kwargs)
    if card is None:
        card = default_card(objs[0], repo_id=repo_id, remote_code=remote_code, **card_kwargs)
    elif card_kwargs:
        raise ValueError(f"Pass either `card` or the default card's arguments ({', '.join(sorted(card_kwargs))}).")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="viq-save-") as tmp:
        sources: dict[str, str] = {}
        staged = []
        for index, obj in enumerate(objs):
            staging = Path(tmp) / f"obj{index}"
            _save_one(obj, staging, remote_code)
            for path in sorted(p for p in staging.rglob("*") if p.is_file()):
                relative = path.relative_to(staging).as_posix()
                if relative in sources and not filecmp.cmp(path, Path(tmp) / sources[relative][1], shallow=False):
                    raise ValueError(
                        f"{type(obj).__name__} and {sources[relative][0]} both write {relative!r} with different "
                        "contents; push them to different repositories."
                    )
                sources.setdefault(relative, (type(obj).__name__, path.relative_to(tmp)))
                staged.append((relative, path))
        for relative, path in staged:
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    readme = card.content if isinstance(card, ModelCard) else str(card)
    (folder / "README.md").write_text(readme if readme.endswith("\n") else readme + "\n", encoding="utf-8")
    return sorted({*sources, "README.md"})


def _card_kwargs(base_model, training_details, card_kwargs: dict) -> dict:
    named = {"base_model": base_model, "training_details": training_details}
    return {**{key: value for key, value in named.items() if value is not None}, **card_kwargs}


def push_to_hub_with_card(
    obj_or_objs,
    repo_id: str,
    card: ModelCard | str | None = None,
    *,
    commit_message: str | None = None,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    remote_code: bool = True,
    api: HfApi | None = None,
    base_model: str | None = None,
    training_details: str | None = None,
    **card_kwargs,
):
    """
    Save objects with `save_pretrained`, add the model card as `README.md`, and upload all files in one commit.

    Args:
        obj_or_objs (object or `list` of objects with `save_pretrained`):
            What to push, e.g. `model` or `[model, processor]`. Their files go to the repo root; two objects writing
            the same file name with different contents is an error.
        repo_id (`str`):
            The Hub repository (created if missing).
        card (`ModelCard` or `str`, *optional*):
            The card (`render_tokenizer_card(...)`, `render_vlm_card(...)`, or Markdown text). Defaults to
            `default_card(first object)`: a tokenizer card for a `ViQModel`, a VLM card for a
            `ViQForConditionalGeneration` whose config names its Qwen2.5 checkpoint.
        commit_message (`str`, *optional*):
            Defaults to "Upload <class names> with model card".
        token (`str` or `bool`, *optional*), private (`bool`, *optional*), revision (`str`, *optional*),
        create_pr (`bool`, *optional*, defaults to `False`):
            As for `HfApi.create_repo` / `create_commit`. A `revision` branch is created if missing.
        remote_code (`bool`, *optional*, defaults to `True`):
            Also upload the package's modeling code with an `auto_map` (see [`save_for_hub`]): the repo then loads
            with `trust_remote_code=True` where only transformers is installed.
        api (`HfApi`, *optional*):
            The client to use (defaults to `HfApi(token=token)`).
        base_model (`str`, *optional*), training_details (`str`, *optional*), card_kwargs:
            The default card's arguments (see [`save_for_hub`]).

    Returns:
        The `CommitInfo` of the upload.
    """
    objs = list(obj_or_objs) if isinstance(obj_or_objs, (list, tuple)) else [obj_or_objs]
    if not objs:
        raise ValueError("Nothing to push: `obj_or_objs` is empty.")
    api = api if api is not None else HfApi(token=token)
    commit_message = commit_message or f"Upload {', '.join(type(o).__name__ for o in objs)} with model card"

    with tempfile.TemporaryDirectory(prefix="viq-push-") as tmp:
        folder = Path(tmp) / "repo"
        files = save_for_hub(objs, folder, card, repo_id=repo_id, remote_code=remote_code, base_model=base_model,
                             training_details=training_details, **card_kwargs)  # fmt: skip
        repo_id = api.create_repo(repo_id, token=token, private=private, exist_ok=True).repo_id
        if revision is not None and not create_pr:
            api.create_branch(repo_id=repo_id, branch=revision, token=token, exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in files]
        return api.create_commit(
            repo_id=repo_id,
            operations=operations,
            commit_message=commit_message,
            token=token,
            revision=revision,
            create_pr=create_pr,
        )


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m transformers_viq.model_cards",
        description="Write the preset folders of the released ViQ sizes (config, image processor, model card).",
    )
    parser.add_argument("--write-presets", metavar="DIR", required=True, help="e.g. modeling_cards")
    parser.add_argument("--sizes", nargs="+", choices=list(FSQ_LEVEL_PRESETS), default=None)
    args = parser.parse_args(argv)
    for path in write_presets(args.write_presets, args.sizes):
        print(path)
    return 0


__all__ = [
    "AUTHORS_WEIGHTS_REPO",
    "TOKENIZER_TAGS",
    "VLM_TAGS",
    "default_card",
    "preset_config",
    "push_to_hub_with_card",
    "render_tokenizer_card",
    "render_vlm_card",
    "save_for_hub",
    "write_preset",
    "write_presets",
]


if __name__ == "__main__":
    raise SystemExit(main())

