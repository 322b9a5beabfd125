"""GPT-2's own tokenizer from its released files (vocab.json + merges.txt), without importing PyTorch.

The files are found, or downloaded, by `hub.py`; their byte alphabet and layouts are in `gpt2_files.py`.
Nothing here imports PyTorch, so `prepare.py --tokenizer gpt2`, whose worker processes import it again,
starts them in a fraction of a second. (Our own tokenizer files load with `bpe.load_tokenizer`.)

Who uses it: `checkpoint.py` (a Hugging Face GPT-2 folder's tokenizer, `--tokenizer gpt2`), `prepare.py`.
"""

from __future__ import annotations

import os

from src.bpe import GPT2_PATTERN, BPETokenizer
from src.engine.corpus import CACHE_DIR
from src.engine.gpt2_files import read_tokenizer_files
from src.engine.hub import gpt2_tokenizer_folder


def gpt2_tokenizer(cache_dir: str | os.PathLike = CACHE_DIR) -> BPETokenizer:
    """GPT-2's own tokenizer (50,257 tokens), from its released files (found, or downloaded, by the hub code)."""
    folder = gpt2_tokenizer_folder(cache_dir)
    vocab, merges, specials = read_tokenizer_files(folder)
    return BPETokenizer.from_token_strings(vocab, merges, specials, GPT2_PATTERN, str(folder))
