"""Fetching OpenAI's released GPT-2 files from the Hugging Face Hub.

`huggingface_hub` is an optional dependency, imported only here and only when a download is needed:
everything else in this project works offline. Downloaded files land in the Hub's own cache
(`~/.cache/huggingface/`), so a second run finds them without a network.

GPT-2 comes in four sizes; the names map to the official repositories:
    gpt2 (124M), gpt2-medium (355M), gpt2-large (774M), gpt2-xl (1.5B)
"""

from __future__ import annotations

from pathlib import Path

from src.errors import UserError

GPT2_REPOS = {
    name: f"openai-community/{name}" for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
}


def hub_repo(name: str) -> str | None:
    """'gpt2-medium' or 'openai-community/gpt2-medium' -> the Hub repository id; None for other names."""
    short = name.removeprefix("openai-community/")
    return GPT2_REPOS.get(short)


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
        try:
            paths = [Path(hf_hub_download(repo_id, name)) for name in filenames]
            return paths[0].parent
        except Exception as err:  # offline, blocked, hub down: all end in the same advice
            problem = f"downloading them from the Hugging Face Hub failed ({type(err).__name__})"
    advice = advice or (
        f"offline, download them from https://huggingface.co/{repo_id} into one folder and pass that folder instead"
    )
    raise UserError(f"cannot get {' and '.join(filenames)} of {repo_id}: {problem}; {advice}")
