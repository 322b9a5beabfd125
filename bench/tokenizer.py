"""Benchmark our pure-Python BPE (src/bpe.py) against tiktoken and Hugging Face `tokenizers`.

    python bench/tokenizer.py [--data ../shared/data/tinyshakespeare.txt]

Prints one table:
- encode speed in MB/s (UTF-8 bytes per second) of the three on the same vocabulary, one thread each.
  The vocabulary is GPT-2's if its files are in data/.cache/gpt2/ (or $GPT2_TOKENIZER_DIR); otherwise
  a large one that HF `tokenizers` trains on the data (it stops when no pair repeats). "cold cache" is
  a fresh tokenizer (every word is new to our cache); "warm" encodes the same text a second time.
- training time for vocab 512 (on the first 100 kB), 4096 and 32768 (on the whole file), ours against
  HF's trainer (Rust; tiktoken has none), both stopping early when no pair occurs twice any more.

Fairness: every contender runs once untimed first (ours warm fills its cache there; the untimed runs also
give the ids compared and the vocabulary sizes reached), then the contenders of a row take turns, round by
round, the order rotating each round, so drift on a shared machine hits them alike; each one's fastest
timed run counts. The script also checks that all three give identical ids on the whole text, and names the
CPU: the MB/s are this machine's.
"""

from __future__ import annotations

import os

os.environ["RAYON_NUM_THREADS"] = "1"  # HF tokenizers: one thread (read when tokenizers is imported)
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # so that `src` imports when run as `python bench/tokenizer.py`

import tiktoken  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # noqa: E402

from src.bpe import ENDOFTEXT, GPT2_PATTERN, BPETokenizer  # noqa: E402
from src.engine.corpus import CACHE_DIR, read_text  # noqa: E402
from src.engine.errors import UserError, run_cli  # noqa: E402
from src.engine.gpt2_files import find_layout, read_tokenizer_files  # noqa: E402
from src.engine.perf import cpu_description  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


def timed(fn):
    """`fn` as a contender for `best_in_turns`: a function that runs it and returns the seconds it took."""
    def run() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    return run


def best_in_turns(contenders: dict, rounds: int) -> dict[str, float]:
    """Fastest of `rounds` runs of each contender (name: a function returning the seconds it took), the
    contenders taking turns: every round runs each once, starting one further along each round. Timed one
    after another, a slow minute of the machine would fall on one of them only."""
    names = list(contenders)
    seconds = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            seconds[name].append(contenders[name]())
    return {name: min(times) for name, times in seconds.items()}


def local_gpt2_dir() -> Path | None:
    """A folder with GPT-2's files on this machine, if any (no download: a benchmark must not need a network)."""
    for folder in (os.environ.get("GPT2_TOKENIZER_DIR"), CACHE_DIR / "gpt2"):
        if folder and find_layout(folder) is not None:
            return Path(folder)
    return None


def hf_trainer(vocab_size: int, special_tokens=(), min_frequency: int = 0) -> trainers.BpeTrainer:
    return trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )


def hf_byte_level(model=None) -> Tokenizer:
    """An HF tokenizer set up like GPT-2's: byte-level, GPT-2's regex, no prefix space."""
    tokenizer = Tokenizer(model or models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return tokenizer


def vocabulary(text: str, folder: Path) -> tuple[str, Path]:
    """(description, folder with vocab + merges files) of the vocabulary the encoders are compared on."""
    gpt2 = local_gpt2_dir()
    if gpt2 is not None:
        return f"GPT-2's ({gpt2})", gpt2
    hf = hf_byte_level()
    hf.train_from_iterator([text], hf_trainer(50257, [ENDOFTEXT]))
    hf.model.save(str(folder))
    return f"{hf.get_vocab_size()} tokens, trained by HF tokenizers on this file (GPT-2's files not found)", folder


def encode_rows(text: str, folder: Path) -> tuple[list[tuple], str]:
    vocab, merges, specials = read_tokenizer_files(folder)
    ours = BPETokenizer.from_token_strings(vocab, merges, specials, GPT2_PATTERN, str(folder))
    vocab_file, merges_file = find_layout(folder)
    hf = hf_byte_level(models.BPE.from_file(str(vocab_file), str(merges_file)))
    tk = tiktoken.Encoding(
        name="bench",
        pat_str=GPT2_PATTERN,
        mergeable_ranks={token: i for i, token in ours.vocab.items()},
        special_tokens=ours.special_tokens,
    )
    n_mb = len(text.encode("utf-8")) / 1e6

    def ours_cold() -> float:  # a fresh tokenizer each time (its making untimed): every word new to its cache
        fresh = BPETokenizer(ours.vocab, ours.merges, ours.special_tokens, ours.pattern)
        return timed(lambda: fresh.encode_ordinary(text))()

    ids = ours.encode_ordinary(text)  # the untimed runs: they fill ours's cache, and give the ids to compare
    same = ids == tk.encode_ordinary(text) and ids == hf.encode(text).ids
    best = best_in_turns({"cold": ours_cold, "warm": timed(lambda: ours.encode_ordinary(text)),
                          "tiktoken": timed(lambda: tk.encode_ordinary(text)), "HF": timed(lambda: hf.encode(text))},
                         rounds=3)
    cold, warm, tk_time, hf_time = best["cold"], best["warm"], best["tiktoken"], best["HF"]
    speed = lambda seconds: f"{n_mb / seconds:.2f}"
    ratio = lambda seconds: f"{tk_time / seconds:.2f}x tiktoken speed"
    rows = [
        ("encode, MB/s (ours: cold cache)", speed(cold), speed(tk_time), speed(hf_time), ratio(cold)),
        ("encode, MB/s (ours: warm cache)", speed(warm), speed(tk_time), speed(hf_time), ratio(warm)),
    ]
    return rows, f"identical ids from all three on the whole text: {'yes' if same else 'NO'}"


def train_rows(text: str) -> list[tuple]:
    rows = []
    for vocab_size, sample, rounds in ((512, text[:100_000], 3), (4096, text, 1), (32768, text, 1)):
        hf = hf_byte_level()
        train_ours = lambda s=sample, v=vocab_size: BPETokenizer.train(s, v)
        # min_frequency=2: HF stops where ours does, when no pair occurs twice any more
        train_hf = lambda s=sample, v=vocab_size, h=hf: h.train_from_iterator([s], hf_trainer(v, min_frequency=2))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "stopped early": the reached size is shown instead
            ours = train_ours()  # untimed, as HF's next line: the sizes reached, and a warm-up for both
            train_hf()
            best = best_in_turns({"ours": timed(train_ours), "HF": timed(train_hf)}, rounds)
        ours_time, hf_time = best["ours"], best["HF"]
        size = f"{len(sample.encode('utf-8')) / 1e6:.2f} MB" if len(sample) > 100_000 else "100 kB"
        reached = ""
        if ours.vocab_size < vocab_size or hf.get_vocab_size() < vocab_size:
            reached = f" (reached: ours {ours.vocab_size}, HF {hf.get_vocab_size()})"
        rows.append(
            (
                f"train vocab {vocab_size} on {size}, s{reached}",
                f"{ours_time:.3f}",
                "-",
                f"{hf_time:.3f}",
                f"{ours_time / hf_time:.1f}x HF time",
            )
        )
    return rows


def print_table(rows: list[tuple]) -> None:
    header = ("task", "ours", "tiktoken", "HF tokenizers", "ratio")
    widths = [max(len(str(row[k])) for row in [header, *rows]) for k in range(len(header))]
    line = lambda row: "| " + " | ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="UTF-8 text file (default: %(default)s)")
    args = parser.parse_args()
    if not Path(args.data).exists():
        raise UserError(f"benchmark text not found: {args.data} (pass --data FILE, e.g. tiny Shakespeare)")
    text = read_text(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        description, folder = vocabulary(text, Path(tmp))
        encode, check = encode_rows(text, folder)
    print(f"data: {args.data} ({len(text.encode('utf-8')) / 1e6:.2f} MB); encode vocabulary: {description}")
    print(f"single thread; CPU: {cpu_description()}; Python {platform.python_version()}, tiktoken "
          f"{tiktoken.__version__}; {check}")
    print("each contender once untimed, then the contenders of a row in turns: the fastest of 3 rounds "
          "(training at 4096 and 32768: 1)")
    print_table(encode + train_rows(text))


if __name__ == "__main__":
    run_cli(main)
