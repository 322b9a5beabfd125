"""Run the tutorial's chapters from top to bottom, the way Jupyter would, and time each one.

    python tutorial/run_chapters.py              # every chapter, the full profile (the times in README.md)
    python tutorial/run_chapters.py --fast       # the quick profile CI runs (TUTORIAL_PROFILE=fast)
    python tutorial/run_chapters.py 01 03        # only the chapters whose names start with 01 or 03

Each chapter runs in a fresh Python kernel (ipykernel, started with this Python) whose working folder is
`tutorial/`, exactly as Jupyter starts a notebook there. A failing cell is named by its chapter, its number
and its first line. tests/test_tutorial.py runs every chapter through `run_chapter` below.

Needs `pip install nbclient ipykernel jupytext` (all in requirements-dev.txt).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

TUTORIAL = Path(__file__).resolve().parent
CHAPTERS = sorted(TUTORIAL.glob("[0-9][0-9]-*.md"))  # the Markdown files are the source of every notebook


class ChapterFailed(Exception):
    """A cell of a chapter raised: the message names the chapter, the cell and the error."""


def first_line(source: str) -> str:
    """The first line of a cell that says something (a comment says what the cell is for)."""
    return next((line.strip() for line in source.splitlines() if line.strip()), "")


def kernel_env(profile: str, threads: int | None = None) -> dict[str, str]:
    """The environment of a chapter's kernel: ours, the profile, and no PYTHONPATH (the set-up cell of every
    chapter must find `src/` by itself, as it does for a learner)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["TUTORIAL_PROFILE"] = profile
    env["PYTHONUNBUFFERED"] = "1"
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def kernel_config(curve: bool) -> dict:
    """Encrypted sockets between us and the kernel where pyzmq can (and no warning about plain TCP)."""
    return {"KernelManager": {"transport_encryption": "auto"}} if curve else {}


def run_chapter(path: Path, profile: str = "full", timeout: float = 600, threads: int | None = None) -> float:
    """Execute the notebook paired with the chapter `path` (NN-name.md or .ipynb); return the seconds it took.

    Raises ChapterFailed naming the chapter and the failing cell (its number and first line).
    """
    import nbformat
    import zmq
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError
    from traitlets.config import Config

    notebook = Path(path).with_suffix(".ipynb")
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=timeout, resources={"metadata": {"path": str(TUTORIAL)}},
                            config=Config(kernel_config(zmq.has("curve"))))
    start = time.perf_counter()
    # "python3" is ipykernel's own kernel: jupyter_client starts it with sys.executable, this very Python.
    with client.setup_kernel(env=kernel_env(profile, threads)):
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            try:
                client.execute_cell(cell, index)
            except (CellExecutionError, CellTimeoutError) as err:
                where = f"{notebook.name}, cell {index} ({first_line(cell.source)!r})"
                plain = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # the kernel's traceback, without its colours
                raise ChapterFailed(f"{where} failed in the {profile} profile:\n{plain}") from None
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="run only the chapters whose names start with these")
    parser.add_argument("--fast", action="store_true", help="the quick profile (TUTORIAL_PROFILE=fast), as CI runs")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the kernels (default: torch decides)")
    args = parser.parse_args(argv)
    profile = "fast" if args.fast else "full"
    chosen = [p for p in CHAPTERS if not args.chapters or p.name.startswith(tuple(args.chapters))]
    if not chosen:
        parser.error(f"no chapter starts with {' or '.join(args.chapters)}")
    failed = 0
    for path in chosen:
        try:
            seconds = run_chapter(path, profile, threads=args.threads)
            print(f"{path.stem:28s} {profile:5s} {seconds:6.1f} s", flush=True)
        except ChapterFailed as err:
            failed += 1
            print(f"{path.stem:28s} {profile:5s} FAILED\n{err}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
