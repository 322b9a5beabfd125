"""The sampling command line, `python src/sample.py`, run as a user runs it (a subprocess from the repo root).

stdout must hold only the generated text, so runs are compared through it: streamed == not streamed,
cached == not cached, sample i of a batch == a single run with seed + i, and a run with `--stop` == the
un-stopped run cut before the stop string.

Checkpoints are built in the test, never trained by train.py:
- a char-level GPT with random (spread) weights: fast, varied text, for everything that needs no meaning;
- a byte-level BPE GPT that memorised two short texts full of emoji, CJK and accents, separated by
  "<|endoftext|>": it writes characters split across tokens (for the streaming decoder) and ends its text
  with "<|endoftext|>" (to stop there). Trained for 100 full-batch steps in-process (a few seconds).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from src.bigram import BigramLanguageModel
from src.bpe import ENDOFTEXT, BPETokenizer
from src.engine.checkpoint import load_pretrained, save_checkpoint
from src.engine.perf import describe, param_count
from src.engine.quantize import quantize_int8
from src.generate import generate
from src.model import GPT, GPTConfig
from src.tokenizer import CharTokenizer

REPO_ROOT = Path(__file__).resolve().parent.parent
CHAR_TEXT = "the king and the queen saw a long night.\nLove is a sword, my heart a crown!\nWho? What?\n"
SPEED = re.compile(r"^\d+ tokens in \d+\.\d+ s: \d+\.\d tokens/s$", re.MULTILINE)
TOO_LONG_NOTE = (
    "note: the prompt is {n} tokens long and the model's context is {context}: it sees only the last {context}"
)


def sample(ckpt, *args, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python src/sample.py --out-dir ckpt ARGS...` from the repo root."""
    return subprocess.run(
        [sys.executable, "src/sample.py", "--out-dir", str(ckpt), *map(str, args)],
        cwd=REPO_ROOT, env=env, input=stdin if stdin is not None else "", capture_output=True, text=True,
        encoding="utf-8", timeout=120,
    )


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in lines[0]


@pytest.fixture(scope="module")
def env(cli_env) -> dict:
    return {**cli_env, "PYTHONIOENCODING": "utf-8"}


@pytest.fixture(scope="module")
def char_ckpt(tmp_path_factory) -> Path:
    """A char-level GPT (context 32) with N(0, 0.3) weights: varied text at any temperature."""
    tokenizer = CharTokenizer.from_text(CHAR_TEXT)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=2, d_model=32))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    folder = tmp_path_factory.mktemp("char")
    save_checkpoint(folder, model, tokenizer)
    return folder


DOCS = ["Café 😀 naïve — 日本語 🎉 déjà vu!", "Über straße 👍 résumé ✓ 中文 🍕 ok"]


@pytest.fixture(scope="module")
def bpe_ckpt(tmp_path_factory) -> Path:
    """A BPE GPT that memorised DOCS, each followed by <|endoftext|> (see the module docstring)."""
    tokenizer = BPETokenizer.train("".join(d + ENDOFTEXT for d in DOCS * 3), 256 + 30, special_tokens=[ENDOFTEXT])
    cycle = tokenizer.encode("".join(d + ENDOFTEXT for d in DOCS), allowed_special="all")
    block = 16
    data = torch.tensor(cycle * 3)
    x = torch.stack([data[i : i + block] for i in range(len(cycle))])  # every window of the cycle
    y = torch.stack([data[i + 1 : i + block + 1] for i in range(len(cycle))])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=block, n_layer=1, n_head=2, d_model=32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(100):
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2
    folder = tmp_path_factory.mktemp("bpe")
    save_checkpoint(folder, model.eval(), tokenizer)
    return folder


def expected_text(ckpt: Path, prompt: str, n: int, seed: int, temperature: float, stop_at_eot: bool = True):
    """(prompt + continuation, generated ids) computed in this process, cut at <|endoftext|>."""
    model, tokenizer = load_pretrained(ckpt)
    ids = tokenizer.encode(prompt)
    new = generate(model, ids, n, temperature=temperature, seed=seed)[len(ids) :]
    eot = getattr(tokenizer, "eot_token_id", None)
    if stop_at_eot and eot in new:
        new = new[: new.index(eot)]
    return prompt + tokenizer.decode(new), new


# --- streaming ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [[], ["--num-samples", "2"], ["--top-k", "5", "--repetition-penalty", "1.3"]],
    ids=["one", "two-samples", "top-k-and-penalty"],
)
def test_stream_prints_exactly_the_text_of_a_normal_run(char_ckpt, env, extra):
    args = ["--prompt", "the king", "--max-new-tokens", "60", "--seed", "5", *extra]
    plain_run = sample(char_ckpt, *args, env=env)
    plain = ok(plain_run)
    streamed = sample(char_ckpt, *args, "--stream", env=env)
    assert ok(streamed) == plain
    assert plain.startswith("--- sample 1 ---\nthe king" if "--num-samples" in extra else "the king")
    assert len(plain) > 60  # 60 new characters were printed (the context of 32 was slid past)
    assert SPEED.search(streamed.stderr), streamed.stderr  # "... tokens in ... s: ... tokens/s"
    assert not SPEED.search(plain_run.stderr)  # the speed is reported with --stream only


def test_no_cache_prints_the_same_text(char_ckpt, env):
    args = ["--prompt", "Love", "--max-new-tokens", "50", "--seed", "2", "--num-samples", "2"]
    assert ok(sample(char_ckpt, *args, "--no-cache", env=env)) == ok(sample(char_ckpt, *args, env=env))


def test_int8_prints_the_text_of_the_quantized_model(char_ckpt, env):
    args = ["--prompt", "the king", "--max-new-tokens", "40", "--seed", "3"]
    model, tokenizer = load_pretrained(char_ckpt)
    ids = tokenizer.encode("the king")
    expected = tokenizer.decode(generate(quantize_int8(model), ids, 40, temperature=0.8, seed=3)) + "\n"
    assert ok(sample(char_ckpt, *args, "--int8", env=env)) == expected
    assert ok(sample(char_ckpt, *args, "--int8", "--stream", env=env)) == expected


def test_int8_off_the_cpu_is_a_one_line_error(char_ckpt, env):
    assert_one_line_error(sample(char_ckpt, "--int8", "--device", "cuda", env=env), "cuda")


def test_streaming_characters_split_across_tokens(bpe_ckpt, env):
    args = ["--prompt", "Café", "--max-new-tokens", "60", "--temperature", "0.5", "--seed", "1"]
    plain = ok(sample(bpe_ckpt, *args, env=env))
    streamed = ok(sample(bpe_ckpt, *args, "--stream", env=env))
    assert streamed == plain
    assert "\ufffd" not in streamed
    expected, new_ids = expected_text(bpe_ckpt, "Café", 60, seed=1, temperature=0.5)
    assert plain == expected + "\n"
    assert plain == DOCS[0] + "\n"  # what the model memorised
    # The premise: some generated tokens are pieces of a character (not valid UTF-8 on their own).
    tokenizer = BPETokenizer.load(bpe_ckpt / "scratch_tokenizer.json")
    pieces = [i for i in new_ids if not _is_utf8(tokenizer.decode_bytes([i]))]
    assert len(pieces) >= 2


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# --- stop strings and <|endoftext|> --------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["batch", "stream"])
def test_stop_cuts_exactly_before_the_stop_string(char_ckpt, env, stream):
    args = ["--prompt", "Who", "--max-new-tokens", "80", "--seed", "9"] + (["--stream"] if stream else [])
    full = ok(sample(char_ckpt, *args, env=env))
    continuation = full[len("Who") : -1]  # without the prompt and the final newline
    stop = continuation[30:33]  # a 3-character string that surely occurs in the output
    cut = continuation.index(stop)
    stopped = ok(sample(char_ckpt, *args, "--stop", stop, env=env))
    assert stopped == "Who" + continuation[:cut] + "\n"
    assert stop not in stopped[len("Who") :]
    assert full.startswith(stopped[:-1])  # a prefix of the un-stopped output
    # Two stop strings: the earliest occurrence wins, whichever is listed first.
    earlier = continuation[cut // 2 : cut // 2 + 1] if cut > 1 else stop
    first = min(continuation.index(earlier), cut)
    both = ok(sample(char_ckpt, *args, "--stop", stop, "--stop", earlier, env=env))
    assert both == "Who" + continuation[:first] + "\n"


def test_stop_understands_backslash_n(char_ckpt, env):
    args = ["--prompt", "the", "--max-new-tokens", "80", "--seed", "4"]
    full = ok(sample(char_ckpt, *args, env=env))
    assert "\n" in full[:-1]  # the premise: the model writes a newline
    stopped = ok(sample(char_ckpt, *args, "--stop", "\\n", env=env))
    assert stopped == full[: full.index("\n")] + "\n"


@pytest.mark.parametrize("stream", [False, True], ids=["batch", "stream"])
def test_stop_string_made_of_split_characters(bpe_ckpt, env, stream):
    args = ["--prompt", "Café", "--max-new-tokens", "60", "--temperature", "0", "--stop", "日本語 🎉"]
    out = ok(sample(bpe_ckpt, *args, *(["--stream"] if stream else []), env=env))
    assert out == "Café 😀 naïve — \n"


@pytest.mark.parametrize("stream", [False, True], ids=["batch", "stream"])
def test_generation_stops_at_endoftext(bpe_ckpt, env, stream):
    args = ["--prompt", "Über", "--max-new-tokens", "60", "--temperature", "0.5", "--seed", "3"]
    out = ok(sample(bpe_ckpt, *args, *(["--stream"] if stream else []), env=env))
    expected, new_ids = expected_text(bpe_ckpt, "Über", 60, seed=3, temperature=0.5, stop_at_eot=False)
    tokenizer = BPETokenizer.load(bpe_ckpt / "scratch_tokenizer.json")
    assert tokenizer.eot_token_id in new_ids  # the premise: the model does write <|endoftext|>
    assert ENDOFTEXT in expected
    assert out == expected[: expected.index(ENDOFTEXT)] + "\n"
    assert out == DOCS[1] + "\n"
    assert ENDOFTEXT not in out


# --- several samples -----------------------------------------------------------------------------------------------


def split_samples(stdout: str, n: int) -> list[str]:
    parts = re.split(r"^--- sample (\d+) ---\n", stdout, flags=re.MULTILINE)
    assert parts[0] == "" and parts[1::2] == [str(i + 1) for i in range(n)], stdout
    return parts[2::2]


def test_num_samples_prints_each_sample_that_a_single_run_with_seed_plus_i_prints(char_ckpt, env):
    args = ["--prompt", "the", "--max-new-tokens", "40", "--temperature", "1.0"]
    samples = split_samples(ok(sample(char_ckpt, *args, "--num-samples", "3", "--seed", "20", env=env)), 3)
    assert len(set(samples)) == 3
    for i, text in enumerate(samples):
        assert text == ok(sample(char_ckpt, *args, "--seed", 20 + i, env=env))


def test_each_sample_stops_on_its_own(char_ckpt, env):
    args = ["--prompt", "the", "--max-new-tokens", "60", "--temperature", "1.0", "--seed", "30"]
    full = split_samples(ok(sample(char_ckpt, *args, "--num-samples", "3", env=env)), 3)
    stop = full[1][10:12]  # occurs in sample 2 (and maybe in the others, elsewhere)
    stopped = split_samples(ok(sample(char_ckpt, *args, "--num-samples", "3", "--stop", stop, env=env)), 3)
    for whole, cut in zip(full, stopped, strict=True):
        body = whole[len("the") : -1]
        end = body.find(stop)
        assert cut == "the" + (body if end == -1 else body[:end]) + "\n"
    assert len({len(s) for s in stopped}) > 1  # the rows were cut at different places


def test_num_samples_stop_at_endoftext_row_by_row(bpe_ckpt, env):
    args = ["--prompt", "Café", "--max-new-tokens", "60", "--temperature", "1.0", "--num-samples", "3", "--seed", "7"]
    samples = split_samples(ok(sample(bpe_ckpt, *args, env=env)), 3)
    for i, text in enumerate(samples):
        expected, _ = expected_text(bpe_ckpt, "Café", 60, seed=7 + i, temperature=1.0)
        assert text == expected + "\n"
        assert ENDOFTEXT not in text


# --- interactive ---------------------------------------------------------------------------------------------------


def test_interactive_answers_each_prompt_until_end_of_input(char_ckpt, env):
    args = ["--max-new-tokens", "25", "--seed", "6"]
    proc = sample(char_ckpt, *args, "--interactive", stdin="the king\nLove\n", env=env)
    singles = [ok(sample(char_ckpt, *args, "--prompt", p, env=env)) for p in ("the king", "Love")]
    assert ok(proc) == "".join(singles)
    assert proc.stderr.count("> ") == 3  # asked three times; the third read hit end of input


def test_interactive_reports_a_bad_prompt_and_goes_on_until_an_empty_line(char_ckpt, env):
    proc = sample(char_ckpt, "--interactive", "--max-new-tokens", "10", "--stream",
                  stdin="the~\nWho\n\nqueen\n", env=env)
    out = ok(proc)
    assert out.startswith("Who") and "queen" not in out and out.count("\n") >= 1
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "'~'" in errors[0]
    # A prompt longer than the context is no error: a note says so, it is answered, and the loop goes on.
    too_long = sample(char_ckpt, "--interactive", "--max-new-tokens", "5", stdin="the " * 20 + "\nWho\n", env=env)
    singles = [ok(sample(char_ckpt, "--max-new-tokens", "5", "--prompt", p, env=env)) for p in ("the " * 20, "Who")]
    assert ok(too_long) == "".join(singles)
    assert ok(too_long).startswith("the " * 20)
    # stderr: the "> " prompts (the third read hit end of input) and the note, nothing else
    assert too_long.stderr == "> " + TOO_LONG_NOTE.format(n=80, context=32) + "\n> > \n"


# --- bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, words",
    [
        (["--repetition-penalty", "0"], ["repetition_penalty"]),
        (["--repetition-penalty", "-1.5"], ["repetition_penalty"]),
        (["--temperature", "nan"], ["temperature"]),
        (["--top-k", "-3"], ["top_k"]),
        (["--stop", ""], ["--stop"]),
        (["--num-samples", "0", "--stream"], ["--num-samples"]),
        (["--max-new-tokens", "-5", "--stream"], ["--max-new-tokens"]),
        (["--prompt", "zebra~", "--stream"], ["character(s)", "'~'"]),
    ],
    ids=["penalty-0", "penalty-negative", "temperature-nan", "top-k", "empty-stop", "num-samples",
         "max-new-tokens", "unknown-chars"],
)
def test_bad_values_are_one_line_errors(char_ckpt, env, args, words):
    proc = sample(char_ckpt, "--max-new-tokens", "5", *args, env=env)
    assert_one_line_error(proc, *words)
    assert proc.stdout == ""


@pytest.mark.parametrize("stream", [False, True], ids=["batch", "stream"])
def test_a_prompt_longer_than_the_context_is_a_note_and_the_model_sees_its_end(char_ckpt, env, stream):
    args = ["--max-new-tokens", "5", "--prompt", "a" * 33, *(["--stream"] if stream else [])]
    proc = sample(char_ckpt, *args, env=env)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    expected, new_ids = expected_text(char_ckpt, "a" * 33, 5, seed=1337, temperature=0.8)  # sample.py's defaults
    assert len(new_ids) == 5
    assert proc.stdout == expected + "\n"
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == TOO_LONG_NOTE.format(n=33, context=32)
    assert len(lines) == (2 if stream else 1)  # nothing else; with --stream, the speed line
    if stream:
        assert SPEED.match(lines[1]), proc.stderr


def test_a_large_model_announces_its_size_before_loading(tmp_path, env):
    config = {"model_type": "gpt2", "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12,
              "n_head": 12}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(b"not really weights")
    (tmp_path / "scratch_tokenizer.json").write_text("{}")
    proc = sample(tmp_path, env=env)
    assert proc.returncode == 1 and proc.stdout == "" and "Traceback" not in proc.stderr
    first, second = proc.stderr.strip().splitlines()
    size = describe(param_count(vocab_size=50257, block_size=1024, n_layer=12, d_model=768), train=False)
    assert first.endswith(size) and size.startswith("124,439,808 parameters") and "0.50 GB" in size
    assert second.startswith("error: ") and "corrupt" in second


def test_a_released_gpt2_name_offline_is_a_one_line_error(tmp_path, env):
    offline = {**env, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    proc = sample("gpt2", "--prompt", "Hello", env=offline)
    assert_one_line_error(proc, "openai-community/gpt2", "config.json")
    assert proc.stdout == ""


def test_a_bigram_checkpoint_streams_too(tmp_path, env):
    tokenizer = CharTokenizer.from_text(CHAR_TEXT)
    torch.manual_seed(0)
    model = BigramLanguageModel(vocab_size=tokenizer.vocab_size)
    with torch.no_grad():
        model.token_embedding_table.weight.normal_(0.0, 1.0)
    save_checkpoint(tmp_path, model, tokenizer)
    args = ["--prompt", "the " * 20, "--max-new-tokens", "30", "--seed", "1"]  # no context limit for a bigram
    plain = ok(sample(tmp_path, *args, env=env))
    assert ok(sample(tmp_path, *args, "--stream", env=env)) == plain
    assert len(plain) == len("the " * 20) + 30 + 1


@pytest.mark.parametrize("extra", [[], ["--num-samples", "2"], ["--stream"]], ids=["one text", "two texts", "streamed"])
def test_fast_prints_the_float32_text(char_ckpt, env, extra):
    """--fast (the step in C) changes only the order of additions: a trained char model's sampled text stays
    the same, for one text, for a batch of them, and streamed."""
    args = ["--prompt", "the king", "--max-new-tokens", "40", "--seed", "3", *extra]
    fast = sample(char_ckpt, *args, "--fast", env=env)
    assert ok(fast) == ok(sample(char_ckpt, *args, env=env))
    assert "could not be compiled" not in fast.stderr  # the C step itself ran, not the fallback


def test_fast_with_int8_prints_the_int8_text(char_ckpt, env):
    args = ["--prompt", "the king", "--max-new-tokens", "40", "--seed", "3", "--int8"]
    fast = sample(char_ckpt, *args, "--fast", env=env)
    assert ok(fast) == ok(sample(char_ckpt, *args, env=env))
    assert "could not be compiled" not in fast.stderr


def test_fast_without_a_c_compiler_warns_and_prints_the_same_text(char_ckpt, env):
    args = ["--prompt", "the king", "--max-new-tokens", "20", "--seed", "3", "--fast"]
    fast = sample(char_ckpt, *args, env={**env, "CC": "/nonexistent/cc"})
    assert "decode_step.c could not be compiled" in fast.stderr and "using the model's own steps" in fast.stderr
    assert ok(fast) == ok(sample(char_ckpt, *args[:-1], env=env))


@pytest.mark.parametrize("flags", [["--device", "cuda"], ["--no-cache"]])
def test_fast_off_the_cpu_or_without_a_cache_is_a_one_line_error(char_ckpt, env, flags):
    assert_one_line_error(sample(char_ckpt, "--fast", *flags, env=env), flags[-1].removeprefix("--"))
