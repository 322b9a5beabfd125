"""Shared fixtures: a small English-like text, tiny model sizes, a CLI runner and one trained checkpoint.

Everything here is offline and small: the text is generated from a fixed word list with a fixed seed, the
models have one or two layers, and the trained checkpoint is made once per test session (a few steps).
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent

# Caches (converted corpus, token files, peak FLOP/s) go to a temporary folder, never into the repo. Set
# before any `src` module is imported, and inherited by the CLI subprocesses the tests start.
os.environ.setdefault("GPT_SCRATCH_CACHE", tempfile.mkdtemp(prefix="gpt-scratch-cache-"))

WORDS = (
    "the a and of to in is it that was he she for on are with as his her they be at one have this from or had "
    "by word but what some we can out other were all there when up use your how said an each which do their "
    "time if will way about many then them write would like so these long make thing see him two has look more "
    "day could go come did number sound no most people my over know water than call first who may down side "
    "been now find king queen night love heart sword crown"
).split()


def make_text(n_chars: int = 6000, seed: int = 0) -> str:
    """Deterministic English-like text: capitalised sentences of common words, a line break every few words.

    Its characters are lowercase letters, a few capitals, space, newline and ".,!?" -- no digits, no '~',
    no non-ASCII -- so tests can build prompts with characters that are surely not in the vocabulary.
    """
    rng = random.Random(seed)
    out, length = [], 0
    while length < n_chars:
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 11))]
        words[0] = words[0].capitalize()
        sentence = " ".join(words) + rng.choice([".", ".", ",", "!", "?"])
        sentence += "\n" if rng.random() < 0.4 else " "
        out.append(sentence)
        length += len(sentence)
    return "".join(out)


TINY_TEXT = make_text()

# A model small enough that a training step takes milliseconds on one CPU core.
TINY_TRAIN_FLAGS = [
    "--n-layer", "1", "--n-head", "2", "--d-model", "32", "--block-size", "16", "--batch-size", "4",
    "--max-iters", "6", "--eval-interval", "3", "--eval-iters", "2", "--log-interval", "1",
    "--sample-tokens", "20", "--warmup-iters", "2", "--device", "cpu", "--seed", "1234",
]

def spread(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """Re-draw every matrix from N(0, std), for generation (eval mode): well-separated logits, so greedy text does
    not hinge on rounding."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def _cli_env() -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the scripts must find `src` on their own
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread is fastest, and immune to busy CPUs
    return env


def _run_cli(*args: str, timeout: float = 120, cwd: Path | str = REPO_ROOT) -> subprocess.CompletedProcess:
    """Run `python <args...>` from the repo root; returns the CompletedProcess with text stdout/stderr."""
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        env=_cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def load_bench(name: str):
    """bench/NAME.py as a module, for the tests to call its functions (bench/ is a folder of scripts, not a
    package). Registered in sys.modules under bench_NAME: a dataclass looks its module up there."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO_ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def folder_digest(path: Path) -> dict[str, str]:
    """sha256 of every file in a folder (by name): to prove a command left a checkpoint untouched."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(path).iterdir()) if p.is_file()}


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The test models are tiny: one intra-op thread is faster than several, and on a machine busy with other
    work, several OpenMP threads spin-waiting on each other can make a 0.4 s test take 20 s."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def run_cli():
    """`run_cli("src/train.py", "--help")` -> subprocess.CompletedProcess (cwd = repo root, no PYTHONPATH)."""
    return _run_cli


@pytest.fixture(scope="session")
def cli_env() -> dict:
    """The environment `run_cli` uses, for tests that start a process themselves (Popen)."""
    return _cli_env()


@pytest.fixture(scope="session")
def tiny_text() -> str:
    return TINY_TEXT


@pytest.fixture
def text_file(tmp_path) -> Path:
    """The tiny text written to a temporary file (never into the repo)."""
    path = tmp_path / "input.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_train_flags() -> list[str]:
    return list(TINY_TRAIN_FLAGS)


@pytest.fixture(scope="session")
def digest():
    return folder_digest


@pytest.fixture
def tiny_config():
    """Factory for a small GPTConfig: `tiny_config(vocab_size=65, n_head=4)`."""
    from src.model import GPTConfig

    def make(**overrides) -> GPTConfig:
        sizes = dict(vocab_size=48, block_size=16, n_layer=2, n_head=2, d_model=32, dropout=0.0)
        sizes.update(overrides)
        return GPTConfig(**sizes)

    return make


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """Train the tiny model once with `python src/train.py` on the tiny text.

    Returns (out_dir, data_file, CompletedProcess). Tests must not modify out_dir (copy it first).
    """
    root = tmp_path_factory.mktemp("trained")
    data = root / "input.txt"
    data.write_text(TINY_TEXT, encoding="utf-8")
    out_dir = root / "out"
    proc = _run_cli("src/train.py", "--data", data, "--out-dir", out_dir, *TINY_TRAIN_FLAGS)
    assert proc.returncode == 0, proc.stderr
    return out_dir, data, proc


@pytest.fixture
def cpu_run_swaps(monkeypatch, tmp_path):
    """What one of train.py's kernel swaps (`"use_fused_gelu"`, `"use_fused_attention"`) returned in a 2-step
    run of a 2-layer model on the CPU: `cpu_run_swaps("use_fused_gelu") == [2]`."""
    from src import train as train_module

    def run(swap: str) -> list[int]:
        swapped = []
        real = getattr(train_module, swap)
        monkeypatch.setattr(train_module, swap, lambda model: swapped.append(real(model)))
        data = tmp_path / "data.txt"
        data.write_text(TINY_TEXT)
        train_module.main(["--data", str(data), "--out-dir", str(tmp_path / "out"), *TINY_TRAIN_FLAGS,
                           "--n-layer", "2", "--max-iters", "2", "--sample-tokens", "0"])  # the last flags win
        return swapped

    return run


@pytest.fixture
def swap_without_a_compiler(monkeypatch):
    """`swap_without_a_compiler(module, use)`: with a "compiler" that always fails in place of module.KERNEL's,
    calls `use(model)` twice on a 2-layer GPT (both must swap nothing); returns (the model, the warnings)."""
    import warnings

    from src.engine import ckernel
    from src.model import GPT, GPTConfig

    def run(module, use):
        monkeypatch.setenv("CC", "false")
        real = module.KERNEL
        monkeypatch.setattr(module, "KERNEL", ckernel.Kernel(real.source, real.declare, real.fallback, real.flags))
        model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, d_model=16))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert use(model) == 0
            assert use(model) == 0  # the second time, no second attempt and no second warning
        return model, caught

    return run


def assert_prompts_losses_and_full_contexts_go_to_the_model(wrapped: torch.nn.Module, model) -> None:
    """A decoding wrapper (engine/decode.py's, engine/decode_step.py's) hands the model a prompt with targets
    (the same logits and loss) and a one-token step after a full context (the model's own error)."""
    ids = torch.randint(0, model.config.vocab_size, (2, 10))
    logits, loss = wrapped(ids, ids)
    expected_logits, expected_loss = model(ids, ids)
    assert torch.equal(logits, expected_logits) and torch.equal(loss, expected_loss)
    cache = wrapped.new_kv_cache(1)
    cache.pos = model.block_size  # full
    with pytest.raises(ValueError, match="longer than the context"):
        wrapped(ids[:1, :1], cache=cache)


def assert_unavailable_with_one_warning(monkeypatch, module) -> None:
    """With no C compiler, `module.available()` (a module wrapping one of our C files) is False, with one
    warning naming the file and what is used instead, none the second time, and nothing loaded."""
    import warnings

    from src.engine import ckernel

    real = module.KERNEL
    kernel = ckernel.Kernel(real.source, real.declare, real.fallback, real.flags)
    monkeypatch.setattr(module, "KERNEL", kernel)  # nothing compiled yet
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.warns(UserWarning, match=f"{real.source.name} could not be compiled .*; using {real.fallback}"):
        assert not module.available()
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        assert not module.available()
    assert again == [] and kernel.loaded == {}


def assert_trains_alike(plain: torch.nn.Module, swapped: torch.nn.Module, seed: int = 0) -> None:
    """A GPT with one of our kernels swapped in gives the plain model's loss and every gradient, to float32
    rounding, on one batch; and its checkpoints hold the same names (the swap is invisible to them)."""
    x = torch.randint(0, plain.config.vocab_size, (4, plain.config.block_size),
                      generator=torch.Generator().manual_seed(seed))
    losses = []
    for model in (plain, swapped):
        _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], atol=1e-6, rtol=1e-6)
    for (name, p), q in zip(plain.named_parameters(), swapped.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-5, msg=name)
    assert swapped.state_dict().keys() == plain.state_dict().keys()
