# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Talking to the Hugging Face Hub: offline mode, one quick request before a download, plain network errors.

`huggingface_hub` retries a failed download request five times with growing pauses (and, when the file is not
cached, with a 60-second timeout per try), so without a network a load can take from half a minute to several
minutes before it fails. This package asks the Hub once, without retries ([`probe_file`]), before it downloads
anything that is not cached, and turns a failure into a [`HubUnreachableError`] that says what to do. Offline
(`HF_HUB_OFFLINE=1` or `local_files_only=True`) it never touches the network.

[`hub_error_reason`] is the one place that recognises Hub and network failures in an error (or anything it was raised
from) and says in one line what went wrong; the `viq` command gives every such failure the same exit code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "proxies")


class HubUnreachableError(ConnectionError):
    """The Hub could not be asked (no network, or offline mode) and what was needed is not in the local cache."""


def is_offline(hub_kwargs: Mapping | None = None) -> bool:
    """Whether the caller asked for no network: `local_files_only=True`, or `HF_HUB_OFFLINE=1` in the environment."""
    from huggingface_hub import constants

    return bool((hub_kwargs or {}).get("local_files_only")) or bool(constants.HF_HUB_OFFLINE) or _env_offline()


def _env_offline() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; a value set later in the process counts too.
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in ("1", "ON", "YES", "TRUE")


def looks_like_path(name: str) -> bool:
    """
    A local path rather than a Hub id (`name` or `owner/name`): it starts with `.`, `/` or `~`, has a path separator
    that is not the one of `owner/name` (two or more `/`, or the system's own separator), or its parent folder exists
    (`examples/tiny-vq` in the repository, where `examples/` is a folder).
    """
    name = os.fspath(name)
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name):
        return True
    parent = os.path.dirname(name)
    return bool(parent) and os.path.isdir(os.path.expanduser(parent))


class NoSuchFolderError(FileNotFoundError):
    """A name that looks like a local path (see [`looks_like_path`]) is not a folder: said before any Hub request."""


def check_local_folder(name: str | os.PathLike, hint: str = "", allow_file: bool = False) -> None:
    """
    Raise a [`NoSuchFolderError`] ("no folder NAME", then `hint`) when `name` looks like a local path and is not a
    folder (with `allow_file`, nor a file: a config read from its `config.json`), so that a typo in a path reads as
    one, not as a failure to reach the Hub. Anything else passes.
    """
    text = os.fspath(name)
    expanded = os.path.expanduser(text)
    if os.path.isdir(expanded) or (allow_file and os.path.isfile(expanded)) or not looks_like_path(text):
        return
    what = f"no folder {text}" + (" (it is a file)" if os.path.isfile(expanded) else "")
    raise NoSuchFolderError(what + (f"; {hint}" if hint else ""))


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def is_network_error(error: BaseException, builtin: bool = True) -> bool:
    """
    A failure to reach a server (refused, unreachable, timed out, proxy, DNS), as opposed to an answer: an error of the
    HTTP clients (httpx, requests, urllib3), and with `builtin` also Python's `ConnectionError` / `TimeoutError`
    (right for a call known to be a Hub request; elsewhere those also come from pipes, locks and worker processes).
    """
    if builtin and isinstance(error, (ConnectionError, TimeoutError)):
        return True
    for cls in type(error).__mro__:  # httpx / httpx2 / requests, without importing them
        module = cls.__module__.split(".")[0]
        if module in ("httpx", "httpx2", "requests", "urllib3") and cls.__name__ in (
            "TransportError", "TimeoutException", "NetworkError", "ProxyError", "ConnectionError", "Timeout",
        ):  # fmt: skip
            return True
    return False


def cached_file(repo_id: str, filename: str, revision: str | None = None, cache_dir=None) -> str | None:
    """Local path of a Hub file in the Hugging Face cache, or `None` (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    return found if isinstance(found, str) else None


def offline_error(repo_id: str, filename: str) -> HubUnreachableError:
    return HubUnreachableError(
        f"{repo_id}: {filename} is not in the local Hugging Face cache, and downloads are off (HF_HUB_OFFLINE=1 or "
        "local_files_only=True). Download it once with the network on, or load a local folder."
    )


def probe_file(repo_id: str, filename: str, *, revision: str | None = None, token=None) -> bool:
    """
    Ask the Hub once, without retries, whether `filename` exists in `repo_id`.

    Returns:
        `True` if it exists; `False` if the Hub answered that it does not (no such file, no such repository, or one
        this token may not read: the actual download then raises the precise error).

    Raises:
        [`HubUnreachableError`] when offline (without asking) or when the Hub cannot be reached.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    if is_offline():
        raise offline_error(repo_id, filename)
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision), token=token,
                             timeout=constants.HF_HUB_ETAG_TIMEOUT)  # fmt: skip
    except HfHubHTTPError:
        return False
    except Exception as error:
        if is_network_error(error):
            raise HubUnreachableError(
                f"cannot reach the Hugging Face Hub at {endpoint()} to get {repo_id}/{filename} "
                f"({type(error).__name__}: {_first_line(error)}); it is not in the local cache. Check the network "
                "or proxy settings (HF_ENDPOINT, HTTPS_PROXY), or load a local folder."
            ) from error
        raise
    return True


def ensure_fetchable(repo_id: str, filename: str, hub_kwargs: Mapping) -> bool:
    """
    The one "ask once" rule before a Hub file is fetched: `True` if it is in the cache; otherwise, offline, an
    [`offline_error`], and online one request without retries ([`probe_file`]), so that a missing network fails in
    seconds (a `HubUnreachableError`) rather than after the downloaders' retries. Returns `False` when it may be
    downloaded.
    """
    kwargs = {k: v for k, v in hub_kwargs.items() if k in HUB_KWARGS and v is not None}
    if not kwargs.get("force_download") and cached_file(repo_id, filename, kwargs.get("revision"),
                                                        kwargs.get("cache_dir")):  # fmt: skip
        return True
    if is_offline(kwargs):
        raise offline_error(repo_id, filename)
    probe_file(repo_id, filename, revision=kwargs.get("revision"), token=kwargs.get("token"))
    return False


def check_model_source(name: str | os.PathLike, filename: str = "config.json", **hub_kwargs) -> None:
    """
    Before handing `name` to a `from_pretrained` of transformers: a missing local folder is a `FileNotFoundError`
    at once, and a Hub id that is not cached while the Hub cannot be reached (or downloads are off) a
    [`HubUnreachableError`] after one request, instead of transformers' retries. Anything else passes.
    """
    check_local_folder(name)
    text = os.path.expanduser(os.fspath(name))
    if os.path.isdir(text):
        return
    try:
        ensure_fetchable(text, filename, hub_kwargs)
    except HubUnreachableError as error:
        raise HubUnreachableError(f"{error} (There is no local folder {text!r} either.)") from error


def cached_dataset(repo_id: str, cache_dir=None) -> bool:
    """Whether some files of the Hub dataset `repo_id` are in the Hugging Face cache (`datasets` keeps them there)."""
    from huggingface_hub import constants

    folder = "datasets--" + repo_id.replace("/", "--")
    return os.path.isdir(os.path.join(os.fspath(cache_dir or constants.HF_HUB_CACHE), folder))


def probe_dataset(repo_id: str, *, token=None) -> bool:
    """
    Ask the Hub once, without retries, whether the dataset `repo_id` exists (`datasets.load_dataset` retries a
    failed request five times, with pauses, before it fails).

    Returns:
        `True` if it exists; `False` if the Hub answered that it does not or may not be read (`load_dataset` then
        raises the precise error).

    Raises:
        [`HubUnreachableError`] when offline (without asking) or when the Hub cannot be reached.
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    what = f"the dataset {repo_id}"
    if is_offline():
        raise HubUnreachableError(f"offline mode (HF_HUB_OFFLINE=1) and {what} is not in the local cache.")
    try:
        HfApi().dataset_info(repo_id, token=token, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except HfHubHTTPError:
        return False
    except Exception as error:
        if is_network_error(error):
            raise HubUnreachableError(
                f"cannot reach the Hugging Face Hub at {endpoint()} to get {what} ({type(error).__name__}: "
                f"{_first_line(error)}); it is not in the local cache. Check the network or proxy settings "
                "(HF_ENDPOINT, HTTPS_PROXY), or give a local folder or file."
            ) from error
        raise
    return True


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split("\n")[0].split())


def hub_error_reason(error: BaseException) -> str | None:
    """
    One plain line saying why the Hub failed, if `error` (or an error it was raised from) is a Hub or network failure:
    offline without a cached copy, no network, an unknown or gated repository or revision, a server error. `None`
    for anything else (a missing file in a local folder, a damaged checkpoint, a bad image, ...).
    """
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, HubUnreachableError):
            return _first_line(error)
        if isinstance(error, (OfflineModeIsEnabled, LocalEntryNotFoundError)) and is_offline():
            return ("not in the local Hugging Face cache, and downloads are off (HF_HUB_OFFLINE=1): download it once "
                    "with the network on, or load a local folder")  # fmt: skip
        if isinstance(error, GatedRepoError):
            return (f"gated repository ({_first_line(error)}): accept its terms on the Hub and log in "
                    "(`hf auth login` or HF_TOKEN)")  # fmt: skip
        if isinstance(error, RepositoryNotFoundError):
            return "no such repository on the Hub (or a private one: log in with `hf auth login` or set HF_TOKEN)"
        if isinstance(error, RevisionNotFoundError):
            return f"no such revision on the Hub ({_first_line(error)})"
        if isinstance(error, HfHubHTTPError) and not isinstance(error, RemoteEntryNotFoundError):
            return f"the Hugging Face Hub refused the request ({_first_line(error)})"
        if is_network_error(error, builtin=False):  # a BrokenPipeError or a lock's Timeout is no Hub failure
            return (f"cannot reach the Hugging Face Hub at {endpoint()} ({type(error).__name__}: "
                    f"{_first_line(error)}); check the network or proxy settings, or load a local folder")  # fmt: skip
        error = error.__cause__ or error.__context__
    return None


__all__ = [
    "HUB_KWARGS",
    "HubUnreachableError",
    "NoSuchFolderError",
    "check_local_folder",
    "cached_file",
    "ensure_fetchable",
    "hub_error_reason",
    "is_network_error",
    "is_offline",
    "looks_like_path",
    "probe_file",
]
