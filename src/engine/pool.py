"""Encoding on every core: worker processes that tokenize pieces of text, results back in order (machinery).

Three things matter for a corpus of many gigabytes, and each is a pain reported by users of the anchors:
- the *spawn* start method, the only one on Windows and the default on macOS: a worker starts a fresh
  interpreter and imports only what it needs. This module and the tokenizers do not import PyTorch, so a
  worker starts in a fraction of a second and holds tens of megabytes, not a copy of the parent;
- bounded memory: at most `in_flight` tasks are queued at any time, never the whole input (a `Pool.imap`
  would read the entire corpus into its task queue as fast as it can);
- order: results come back in the order the tasks went out, so the output does not depend on how many
  workers there are or which one finished first.

With one worker nothing is spawned: the tasks run in this process (the same results, without the copies).

Who uses it: `prepare.py`.
"""

from __future__ import annotations

import json
import multiprocessing
import signal
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from src.bpe import tokenizer_from_dict
from src.engine.errors import UserError
from src.tokenizer import Tokenizer

_tokenizer: Tokenizer | None = None  # each worker's own copy, built once by `start_worker`


def start_worker(tokenizer_json: str, ignore_interrupt: bool = True) -> None:
    """Build the tokenizer in this process. Ctrl-C is left to the main process, which stops the workers."""
    global _tokenizer
    if ignore_interrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _tokenizer = tokenizer_from_dict(json.loads(tokenizer_json))


def encode_texts(texts: list[str]) -> list[np.ndarray]:
    """One task: the ids of each text, as a compact array (uint16 when the vocabulary fits 16 bits).
    Special-token strings inside a corpus are ordinary text here: documents are separated by the sources."""
    dtype = np.uint16 if _tokenizer.vocab_size <= 2**16 else np.int32
    return [np.asarray(_tokenizer.encode(text, allowed_special="none"), dtype=dtype) for text in texts]


def worker_imports(_: object = None) -> list[str]:
    """The modules a worker has imported (the tests check that PyTorch is not among them)."""
    return sorted(sys.modules)


def ordered_map(tasks: Iterable, tokenizer_json: str, workers: int, in_flight: int | None = None,
                function=encode_texts) -> Iterator:
    """`function(task)` for every task, in order, on `workers` processes with at most `in_flight` tasks queued."""
    if workers == 1:
        start_worker(tokenizer_json, ignore_interrupt=False)
        yield from map(function, tasks)
        return
    in_flight = in_flight or 4 * workers
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=start_worker, initargs=(tokenizer_json,))
    pending = deque()
    try:
        for task in tasks:
            pending.append(pool.submit(function, task))
            if len(pending) >= in_flight:
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _result(future):
    """A task's result; a worker the system killed (out of memory, most often) is one line, not a traceback."""
    try:
        return future.result()
    except BrokenProcessPool:
        raise UserError("a worker process died (killed by the system, most often for memory, or it could not "
                        "start); fewer --workers use less memory, and a rerun continues from the last saved "
                        "shard") from None
