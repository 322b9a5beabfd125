"""Fetching OpenAI's released GPT-2 files from the Hugging Face Hub.

`huggingface_hub` is an optional dependency, imported only here and only when a download is needed:
everything else in this project works offline. Downloaded files land in the Hub's own cache
(`~/.cache/huggingface/`), so a second run finds them without a network. A file already in that cache is
used without asking the network at all; when it is missing and the Hub cannot be reached, the error comes
at once (the Hub client on its own would spend half a minute retrying before saying so).

GPT-2 comes in four sizes; the names map to the official repositories:
    gpt2 (124M), gpt2-medium (355M), gpt2-large (774M), gpt2-xl (1.5B)

Who uses it: `model.py` (`GPT.from_pretrained("gpt2")`), `engine/checkpoint.py` and `sample.py` (a released
model by name), `engine/tokenizers.py` (GPT-2's tokenizer files).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from src.engine.errors import UserError
from src.engine.files import atomic_write_bytes
from src.engine.gpt2_files import CONFIG, LAYOUTS, WEIGHTS, find_layout

GPT2_REPOS = {
    name: f"openai-community/{name}" for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
}
GPT2_TOKENIZER_REPO = "openai-community/gpt2"


def hub_repo(name: str) -> str | None:
    """'gpt2-medium' or 'openai-community/gpt2-medium' -> the Hub repository id; None for other names."""
    short = name.removeprefix("openai-community/")
    return GPT2_REPOS.get(short)


def resolve_pretrained(name: str | os.PathLike) -> Path:
    """The folder to load: `name` itself, or for a released GPT-2 name ("gpt2", "gpt2-medium", ...) its
    download from the Hugging Face Hub (a local folder of that name wins)."""
    path = Path(name)
    repo = hub_repo(str(name))
    if repo is not None and not path.exists():
        path = download(repo, [CONFIG, WEIGHTS])
    return path


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can we open a connection to the Hub (or to the proxy that reaches it) at all? No network, a firewall,
    HF_HUB_OFFLINE=1: no."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    proxy = next((os.environ[v] for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy") if os.environ.get(v)),
                 None)
    if proxy and "://" not in proxy:
        proxy = "http://" + proxy
    target = urlparse(proxy or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        socket.create_connection((target.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def download(repo_id: str, filenames: list[str], advice: str | None = None) -> Path:
    """Download `filenames` of a Hub repository (or find them in the Hub cache); return their folder.

    Raises a UserError that says what went wrong and what to do instead (`advice`, or by default:
    download the files elsewhere and pass their folder) when the package is missing or the Hub cannot
    be reached.
    """
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        problem = "the optional package huggingface_hub is not installed (pip install huggingface_hub)"
    else:
        try:  # already downloaded once: no network needed
            return [Path(hf_hub_download(repo_id, name, local_files_only=True)) for name in filenames][0].parent
        except Exception:
            pass
        if not hub_reachable():
            problem = "the Hugging Face Hub cannot be reached (offline?) and they are not in its local cache"
        else:
            try:
                paths = [Path(hf_hub_download(repo_id, name)) for name in filenames]
                return paths[0].parent
            except Exception as err:  # blocked, hub down, no such file: all end in the same advice
                problem = f"downloading them from the Hugging Face Hub failed ({type(err).__name__})"
    advice = advice or (
        f"offline, download them from https://huggingface.co/{repo_id} into one folder and pass that folder instead"
    )
    raise UserError(f"cannot get {' and '.join(filenames)} of {repo_id}: {problem}; {advice}")


def gpt2_tokenizer_folder(cache_dir: str | os.PathLike) -> Path:
    """The folder that holds GPT-2's tokenizer files, downloading them into it if they are missing.

    Looks in $GPT2_TOKENIZER_DIR if set, else in `cache_dir`/gpt2/. If the folder lacks them, tries to
    download vocab.json and merges.txt from the Hugging Face Hub (this needs the optional
    `huggingface_hub` package and a network) and keeps a copy there. Otherwise raises a UserError that
    says which files to put where.
    """
    folder = Path(os.environ.get("GPT2_TOKENIZER_DIR") or Path(cache_dir) / "gpt2")
    if find_layout(folder) is not None:
        return folder
    advice = (
        f"GPT-2's tokenizer files are not in {folder}/ either: put vocab.json and merges.txt (from "
        f"https://huggingface.co/{GPT2_TOKENIZER_REPO}) or encoder.json and vocab.bpe (from OpenAI's GPT-2 "
        f"release) into {folder}/, or set GPT2_TOKENIZER_DIR to a folder that holds them"
    )
    downloaded = download(GPT2_TOKENIZER_REPO, list(LAYOUTS[0]), advice)
    for name in LAYOUTS[0]:  # keep a copy beside our other caches
        atomic_write_bytes(folder / name, (downloaded / name).read_bytes())
    return folder
