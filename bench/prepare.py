"""Tokenizing speed of `src/prepare.py` on this machine: 1 worker against 2, a BPE and the character tokenizer.

    python bench/prepare.py [--mb 24] [--workers 1 2] [--vocab-size 2048] [--tokenizer-json PATH] [--repeats 1]

The corpus is the default text (`src.engine.corpus.default_corpus_path()`, Shakespeare, 4.5 MB) cut into
documents of about 64 kB and copied until it holds `--mb` megabytes, in .txt files of about 4 MB each
(documents separated by `<|endoftext|>`), in a temporary folder. Then, for each tokenizer and each number of
workers, `python src/prepare.py CORPUS --out TMP --tokenizer PATH.json --workers N` runs as a subprocess (the
whole command is timed: start-up, reading, encoding, routing, writing shards), into a temporary folder removed
afterwards. With `--repeats R` the configurations take turns: R rounds, each running every configuration once,
in an order that rotates every round, so that drift and other work on the machine hit the 1-worker and the
N-worker runs alike (the fastest of its R runs counts for each). The tokenizers are given as saved files, so
no run learns one and every run does the same work: a byte-level BPE of `--vocab-size` tokens learned once on
the first 1 MB (its learning time is printed apart), GPT-2's own if `--tokenizer-json` names its file (a
tokenizer.json this project wrote, e.g. by `prepare.py --tokenizer gpt2`), and the character vocabulary of the
text.

Reported per run: wall-clock and CPU seconds (prepare.py and its workers), MB/s of source text, tokens/s, the
speed-up of N workers over 1, and whether the output is the same as with 1 worker (the manifest's
dataset_sha256, one hash over the tokenizer and every shard: the output must be byte for byte the same for
any number of workers). Then an *estimate*, not a measurement: the time to tokenize 10 billion tokens (10B x
the measured bytes per token; GPT-2's tokenizer on web text takes ~4.3 bytes per token, so ~43 GB) on 16 and
64 cores, from the measured 1-worker rate and the measured scaling efficiency (speed-up / workers) of the
largest worker count, assumed to hold at 16 and 64; and the same from CPU time, which other programs busy
on the machine do not distort (wall-clock speed-ups need idle cores: on a loaded machine 2 workers can be
slower than 1, and the CPU columns say what the code itself would do).
Repeated copies of one text are kinder to the BPE's word cache than web text, whose rarer words miss it
more often: on real text expect lower rates.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from argparse import RawDescriptionHelpFormatter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # so that `src` imports when run as `python bench/prepare.py`

from src.bpe import ENDOFTEXT, BPETokenizer  # noqa: E402
from src.engine.corpus import default_corpus_path  # noqa: E402
from src.engine.errors import ArgumentParser, UserError, positive_int, run_cli  # noqa: E402
from src.engine.perf import cpu_description  # noqa: E402
from src.tokenizer import CharTokenizer  # noqa: E402

DOCUMENT_CHARS = 64_000  # documents of about this size, cut at line ends
FILE_BYTES = 4_000_000  # .txt files of about this size
BPE_SAMPLE_CHARS = 1_000_000  # the BPE learns from this much of the text
TARGET_TOKENS = 10_000_000_000  # the extrapolation: GPT-2-scale pretraining data
CORES = (16, 64)


def machine() -> str:
    """CPU model, cores, load, Python and torch versions (torch's from its metadata: prepare.py never imports it)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = "not installed"
    load = " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"{cpu_description()}, {usable} usable core(s) of {os.cpu_count()}, load average {load}; python "
            f"{platform.python_version()}, torch {torch_version}")


def documents(text: str, size: int = DOCUMENT_CHARS) -> list[str]:
    """`text` cut into documents of about `size` characters, at line ends."""
    docs, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end == -1 else end + 1
        docs.append(text[start:end])
        start = end
    return [d for d in docs if d.strip()]


def build_corpus(folder: Path, megabytes: float) -> tuple[int, int]:
    """Copies of the default text's documents until `megabytes` MB, in .txt files. Returns (bytes, documents)."""
    docs = documents(default_corpus_path().read_text(encoding="utf-8"))
    folder.mkdir(parents=True)
    target, total, count, index = int(megabytes * 1e6), 0, 0, 0
    while total < target:
        batch, size = [], 0
        while size < FILE_BYTES and total + size < target:
            doc = docs[count % len(docs)]
            batch.append(doc)
            size += len(doc.encode("utf-8")) + len(ENDOFTEXT)
            count += 1
        path = folder / f"part_{index:04d}.txt"
        path.write_text(ENDOFTEXT.join(batch), encoding="utf-8")
        total += path.stat().st_size
        index += 1
    return total, count


def learn_bpe(corpus: Path, vocab_size: int, out: Path) -> float:
    """A byte-level BPE learned from the corpus's first characters, saved as `out`. Returns seconds taken."""
    text = (corpus / "part_0000.txt").read_text(encoding="utf-8")[:BPE_SAMPLE_CHARS]
    started = time.perf_counter()
    tokenizer = BPETokenizer.train(text, vocab_size, special_tokens=[ENDOFTEXT])
    seconds = time.perf_counter() - started
    out.write_text(tokenizer.to_json(), encoding="utf-8")
    return seconds


def char_tokenizer(corpus: Path, out: Path) -> None:
    """The character vocabulary prepare.py's `--tokenizer char` would collect (every copy has the same text)."""
    characters = set()
    for path in corpus.glob("*.txt"):
        characters.update(path.read_text(encoding="utf-8"))
    characters.discard("")
    out.write_text(CharTokenizer(sorted(characters | set(CharTokenizer([]).document_separator))).to_json(),
                   encoding="utf-8")


def check_tokenizer_file(path: Path) -> None:
    """A clear message now, rather than four failed runs, for a file that is not this project's tokenizer format
    (Hugging Face's tokenizer.json is not: save GPT-2's with `prepare.py --tokenizer gpt2`, take its tokenizer.json)."""
    try:
        kind = json.loads(path.read_text(encoding="utf-8")).get("type")
    except (OSError, ValueError, AttributeError) as err:
        raise UserError(f"--tokenizer-json {path}: not a readable JSON tokenizer file ({err})") from None
    if kind not in ("bpe", "gpt2", "char"):
        raise UserError(f"--tokenizer-json {path}: not a tokenizer file of this project (its \"type\" is {kind!r}); "
                         "a prepared folder's tokenizer.json is one")


def run_prepare(corpus: Path, tokenizer: Path, workers: int, work: Path) -> dict:
    """One timed run of `python src/prepare.py`: its wall-clock, "prepared in" and CPU seconds, and what its
    manifest says it wrote."""
    out = work / f"out-{tokenizer.stem}-{workers}"
    started, cpu_before = time.perf_counter(), os.times()
    proc = subprocess.run([sys.executable, "src/prepare.py", str(corpus), "--out", str(out), "--tokenizer",
                           str(tokenizer), "--workers", str(workers), "--shard-tokens", "2000000"],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    seconds, cpu_after = time.perf_counter() - started, os.times()
    if proc.returncode != 0:
        raise UserError(f"prepare.py failed ({tokenizer.name}, {workers} workers):\n{proc.stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    shutil.rmtree(out)
    found = re.search(r"prepared .* in ([0-9.]+) s", proc.stdout)
    # CPU seconds of prepare.py and its workers (waited-for descendants count as children)
    cpu = cpu_after.children_user + cpu_after.children_system - cpu_before.children_user - cpu_before.children_system
    splits = manifest["splits"].values()
    return {"seconds": seconds, "inner": float(found.group(1)) if found else float("nan"), "cpu": cpu,
            "bytes": sum(s["bytes"] for s in splits), "tokens": sum(s["tokens"] for s in splits),
            "sha": manifest["dataset_sha256"]}


def rotated(items: list, shift: int) -> list:
    """`items` starting at position `shift` (mod its length): round r of a comparison runs them in this order."""
    shift %= len(items)
    return items[shift:] + items[:shift]


def time_in_turns(tokenizers: dict[str, Path], workers: list[int], corpus: Path, work: Path,
                  repeats: int) -> list[dict]:
    """The fastest of `repeats` runs of every (tokenizer, workers) configuration, the configurations taking
    turns: each round runs all of them once, starting one further along each time. The speed-up of N workers
    over 1 is the table's headline, so neither may get the machine's quiet minutes to itself."""
    configurations = [(name, n) for name in tokenizers for n in workers]
    best: dict[tuple[str, int], dict] = {}
    for r in range(repeats):
        for name, n in rotated(configurations, r):
            print(f"  round {r + 1}/{repeats}: {name}, {n} worker(s) ...", flush=True)
            run = run_prepare(corpus, tokenizers[name], n, work)
            if (name, n) not in best or run["seconds"] < best[name, n]["seconds"]:
                best[name, n] = run
    return [{"tokenizer": name, "workers": n, **best[name, n]} for name, n in configurations]


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=24, help="corpus size in MB (default 24)")
    parser.add_argument("--workers", type=positive_int, nargs="+", default=[1, 2],
                        help="worker counts to time (1 is always added)")
    parser.add_argument("--vocab-size", type=positive_int, default=2048, help="tokens of the BPE learned once")
    parser.add_argument("--tokenizer-json", type=Path, help="time this tokenizer file (e.g. GPT-2's, saved by "
                                                            "this project) instead of a BPE learned here")
    parser.add_argument("--repeats", type=positive_int, default=1,
                        help="rounds, each running every configuration once (the fastest run of each counts)")
    args = parser.parse_args()
    if not args.mb > 0:
        parser.error(f"argument --mb: must be > 0, got {args.mb}")
    workers = sorted(set(args.workers) | {1})
    if args.tokenizer_json:
        check_tokenizer_file(args.tokenizer_json)

    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        size, count = build_corpus(corpus, args.mb)
        print(f"corpus: {size / 1e6:.1f} MB, {count:,} documents of ~{DOCUMENT_CHARS // 1000} kB in "
              f"{len(list(corpus.glob('*.txt')))} .txt files (copies of {default_corpus_path().name})")
        tokenizers = {}
        if args.tokenizer_json:
            tokenizers[f"{args.tokenizer_json.name}"] = args.tokenizer_json.resolve()
        else:
            path = work / f"bpe{args.vocab_size}.json"
            seconds = learn_bpe(corpus, args.vocab_size, path)
            print(f"learned a {args.vocab_size}-token BPE on {BPE_SAMPLE_CHARS / 1e6:.0f} MB in {seconds:.1f} s "
                  "(not timed below)")
            tokenizers[f"BPE {args.vocab_size}"] = path
        char = work / "char.json"
        char_tokenizer(corpus, char)
        tokenizers["char"] = char

        rows = time_in_turns(tokenizers, workers, corpus, work, args.repeats)

    print(f"\nsrc/prepare.py, {size / 1e6:.1f} MB of text; {machine()}")
    print(f"wall: the whole command (start-up included), best of {args.repeats}, the configurations taking turns "
          "| prepare: its own \"prepared in\" time (encoding, routing, writing)")
    print("| tokenizer | workers | bytes/token | tokens | wall s | prepare s | CPU s | MB/s | tokens/s | speed-up | "
          "same output as 1 worker |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    single = {}
    for r in rows:
        if r["workers"] == 1:
            single[r["tokenizer"]] = r
        one = single[r["tokenizer"]]
        r["speedup"] = one["seconds"] / r["seconds"]
        same = "yes" if r["sha"] == one["sha"] else "NO: dataset_sha256 differs"
        print(f"| {r['tokenizer']} | {r['workers']} | {r['bytes'] / r['tokens']:.2f} | {r['tokens']:,} | "
              f"{r['seconds']:.1f} | {r['inner']:.1f} | {r['cpu']:.1f} | {r['bytes'] / r['seconds'] / 1e6:.2f} | "
              f"{r['tokens'] / r['seconds']:,.0f} | {r['speedup']:.2f}x | {same} |")

    print(f"\nESTIMATE (extrapolated, not measured): tokenizing {TARGET_TOKENS / 1e9:.0f}B tokens on {CORES[0]} or "
          f"{CORES[1]} cores, a worker per core. As measured: the 1-worker wall-clock rate per worker, times the "
          "scaling efficiency (speed-up / workers) of the largest count above, assumed to hold at any count. With "
          "free cores: the same from CPU time (a worker's rate per CPU second, efficiency = 1-worker CPU s / N-worker "
          "CPU s), what is left of the scaling when no other work competes for the cores.")
    print("| tokenizer | text for 10B tokens | as measured: MB/s per worker | efficiency | " +
          " | ".join(f"{c} cores" for c in CORES) + " | free cores: MB/s per worker | efficiency | " +
          " | ".join(f"{c} cores" for c in CORES) + " |")
    print("|---|---|---|---|" + "---|" * len(CORES) + "---|---|" + "---|" * len(CORES))
    for name in tokenizers:
        one = single[name]
        top = max((r for r in rows if r["tokenizer"] == name), key=lambda r: r["workers"])
        text = TARGET_TOKENS * one["bytes"] / one["tokens"]  # bytes of text for 10B tokens of this tokenizer
        cells = []
        for rate, efficiency in ((one["bytes"] / one["seconds"], top["speedup"] / top["workers"]),
                                 (one["bytes"] / one["cpu"], min(one["cpu"] / top["cpu"], 1.0))):
            times = " | ".join(duration(text / (rate * cores * efficiency)) for cores in CORES)
            cells.append(f"{rate / 1e6:.2f} | {efficiency:.0%} | {times}")
        print(f"| {name} | {text / 1e9:.0f} GB | {cells[0]} | {cells[1]} |")
    print("(GPT-2's tokenizer needs ~4.3 bytes of web text per token, ~43 GB for 10B tokens. One main process reads, "
          "routes and writes for all workers: at some count it cannot keep up, and the speed-up stops growing.)")


if __name__ == "__main__":
    run_cli(main)
