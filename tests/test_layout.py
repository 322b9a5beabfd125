"""The layout teaches: the reading path imports no machinery, nothing imports in a circle, and the pieces a
reader meets (tokenizers, models) share one interface instead of being told apart by type.

Each rule here was checked by breaking it on purpose (an engine import added to model.py, a cycle between two
engine files, a lazy import, an isinstance on GPT in train.py) and watching the test fail.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
SRC = REPO_ROOT / "src"

# The reading path, in reading order (the README's "What each file teaches" table is exactly this list).
READING_PATH = ["tokenizer", "bpe", "dataloader", "bigram", "model", "sampling", "generate", "train", "sample",
                "pictures", "playground", "prepare", "evaluate"]
# the programs: they wire the machinery in
COMMANDS = {"train", "sample", "pictures", "playground", "prepare", "evaluate"}
# The engine helpers the reading path's library files may use: small I/O modules that import nothing from src
# but one another. Beyond files and errors: corpus (the default text of the module-level encode/decode),
# gpt2_files (how a BPE file spells bytes; GPT-2's file names) and hub (GPT.from_pretrained("gpt2")).
# shards: the token-file format and a prepared folder's manifest, which the data loader reads.
LEAF_HELPERS = {"engine.files", "engine.errors", "engine.corpus", "engine.gpt2_files", "engine.hub", "engine.shards"}


def module_name(path: Path) -> str:
    """src/engine/files.py -> 'engine.files'; src/model.py -> 'model'."""
    return ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")


def src_imports(path: Path) -> tuple[set[str], list[str]]:
    """(the src modules a file imports at its top level, the src imports hidden inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top, nested = set(), []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "src":
            base = node.module.removeprefix("src").removeprefix(".")
            # `from src.engine import errors` imports the module src.engine.errors
            names = [f"{base}.{alias.name}".strip(".") if (SRC / base.replace(".", "/") / f"{alias.name}.py").exists()
                     else base for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name.removeprefix("src.") for alias in node.names if alias.name.startswith("src.")]
        if not names:
            continue
        if node.col_offset == 0:
            top.update(names)
        else:
            nested.extend(names)
    return top, nested


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    return {name: {m for m in src_imports(path)[0] if m in modules} for name, path in modules.items()}


def test_the_reading_path_is_the_top_of_src_and_the_rest_is_the_engine():
    top = sorted(p.stem for p in SRC.glob("*.py") if p.stem != "__init__")
    assert top == sorted(READING_PATH)
    assert (SRC / "engine" / "__init__.py").exists()
    engine_doc = (SRC / "engine" / "__init__.py").read_text()
    for path in (SRC / "engine").glob("*.py"):
        if path.stem != "__init__":
            assert f"{path.stem}.py" in engine_doc, f"engine/__init__.py does not list {path.name}"


def test_every_engine_module_says_what_it_is_for_and_who_calls_it():
    for path in (SRC / "engine").glob("*.py"):
        if path.stem == "__init__":
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert doc and len(doc.splitlines()) >= 3, path.name
        assert "Who uses it" in doc or "Who calls it" in doc, path.name


def test_no_import_cycles(graph):
    """Depth-first search for a back edge; the cycle is named in the failure."""
    state: dict[str, str] = {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                cycle = stack[stack.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, [*stack, dep])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_lazy_imports_of_our_own_modules():
    """An import inside a function is how a cycle gets hidden; there are none (optional third-party packages,
    such as huggingface_hub and matplotlib, may still be imported where they are needed)."""
    hidden = {module_name(p): src_imports(p)[1] for p in SRC.rglob("*.py")}
    assert {m: names for m, names in hidden.items() if names} == {}


def test_the_commands_start_without_loading_torchs_compiler():
    """torch._dynamo takes ~2 s to import: importing a command's module must not load it, so that `--help`,
    a mistyped flag and a run without compiling do not pay for it. Checked by importing it at the top of
    engine/decode.py again: `sample.py --help` went from 3.5 s to 6.4 s, and this test failed."""
    commands = ", ".join(f"src.{name}" for name in sorted(COMMANDS))
    code = f"import sys, {commands}; print(sorted(m for m in sys.modules if m.startswith('torch._dynamo'))[:3])"
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


def test_reading_path_library_files_use_only_the_leaf_helpers_of_the_engine(graph):
    for module in READING_PATH:
        if module in COMMANDS:
            continue
        engine = {dep for dep in graph[module] if dep.startswith("engine")}
        assert engine <= LEAF_HELPERS, f"{module}.py imports machinery: {sorted(engine - LEAF_HELPERS)}"
    for helper in LEAF_HELPERS:  # and the helpers pull nothing else in behind them
        assert graph[helper] <= LEAF_HELPERS, f"{helper} imports {sorted(graph[helper] - LEAF_HELPERS)}"


def test_no_dispatch_on_model_or_tokenizer_type_outside_loading_a_folder():
    """isinstance/getattr on our model and tokenizer classes only where a folder is turned into objects."""
    names = {"GPT", "BigramLanguageModel", "CharTokenizer", "BPETokenizer", "Tokenizer"}
    offenders = []
    for path in SRC.rglob("*.py"):
        if module_name(path) == "engine.checkpoint":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
                classes = node.args[1]
                used = {n.id for n in ast.walk(classes) if isinstance(n, ast.Name)}
                if used & names:
                    offenders.append(f"{module_name(path)}:{node.lineno}")
            is_getattr = isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                "getattr", "hasattr")
            if is_getattr and isinstance(node.args[0], ast.Name) and node.args[0].id in ("model", "tokenizer"):
                offenders.append(f"{module_name(path)}:{node.lineno}")
    assert offenders == []


# --- one interface each for tokenizers and models -----------------------------------------------------------


def test_both_tokenizers_implement_the_tokenizer_interface():
    from src.bpe import BPETokenizer
    from src.tokenizer import CharTokenizer, Tokenizer

    char = CharTokenizer.from_text("hello world\n")
    bpe = BPETokenizer.train("hello world " * 20, vocab_size=264, special_tokens=["<|endoftext|>"])
    for tok, eot, separator in ((char, None, "\n\n"), (bpe, 263, "<|endoftext|>")):
        assert isinstance(tok, Tokenizer)
        ids = tok.encode("hello")
        assert tok.decode(ids) == "hello" and tok.decode_bytes(ids) == b"hello"
        assert tok.eot_token_id == eot and tok.document_separator == separator
        again = type(tok).from_dict(tok.to_dict())
        assert again.to_json() == tok.to_json() and again.encode("world") == tok.encode("world")
    plain = BPETokenizer.train("hello world " * 20, vocab_size=264)  # no end-of-text token: a blank line
    assert plain.eot_token_id is None and plain.document_separator == "\n\n"


def test_the_interface_itself_loads_nothing_and_prepare_data_names_what_it_cannot_learn(tmp_path):
    from src.dataloader import prepare_data
    from src.engine.errors import UserError
    from src.tokenizer import CharTokenizer, Tokenizer

    CharTokenizer.from_text("ab").save(tmp_path / "t.json")
    assert CharTokenizer.load(tmp_path / "t.json").chars == ["a", "b"]
    with pytest.raises(NotImplementedError, match="load_tokenizer"):  # not a silent None
        Tokenizer.load(tmp_path / "t.json")
    (tmp_path / "text.txt").write_text("hello world " * 50)
    with pytest.raises(UserError, match="no tokenizer of kind 'gpt2' can be learned here"):
        prepare_data(tmp_path / "text.txt", 8, tmp_path / "cache", kind="gpt2", verbose=False)


def test_gpt_from_pretrained_reads_gpt2_folders_only_and_says_what_loads_the_rest(tmp_path):
    from src.bigram import BigramLanguageModel
    from src.engine.checkpoint import load_pretrained, save_checkpoint
    from src.engine.errors import UserError
    from src.model import GPT
    from src.tokenizer import CharTokenizer

    tokenizer = CharTokenizer.from_text("abcdefghij")
    save_checkpoint(tmp_path / "gpt", GPT(vocab_size=10, block_size=8, n_layer=1, d_model=32), tokenizer)
    save_checkpoint(tmp_path / "bigram", BigramLanguageModel(vocab_size=10), tokenizer)
    assert GPT.from_pretrained(tmp_path / "gpt").config.d_model == 32
    with pytest.raises(UserError, match="model_type 'bigram' is not gpt2.*load_pretrained"):
        GPT.from_pretrained(tmp_path / "bigram")
    model, loaded = load_pretrained(tmp_path / "bigram")  # the one call that loads any folder train.py writes
    assert isinstance(model, BigramLanguageModel) and loaded.chars == tokenizer.chars


def test_both_models_implement_the_model_interface():
    from src.bigram import BigramLanguageModel
    from src.model import GPT

    gpt = GPT(vocab_size=20, block_size=8, n_layer=1, d_model=32)
    bigram = BigramLanguageModel(vocab_size=20)
    assert gpt.block_size == 8 and bigram.block_size == 1
    assert gpt.num_params() == sum(p.numel() for p in gpt.parameters())
    assert bigram.num_params() == 400
    assert gpt.new_kv_cache(3).k[0].shape == (3, 1, 8, 32) and bigram.new_kv_cache(3) is None
    # 6 per weight that multiplies (all but the position table) + 12 L C T for attention
    assert gpt.flops_per_token() == 6 * (gpt.num_params() - 8 * 32) + 12 * 1 * 32 * 8
    assert bigram.flops_per_token() == 0.0
    for model in (gpt, bigram):
        config, tensors = model.export()
        assert isinstance(config, dict) and all(isinstance(t, torch.Tensor) for t in tensors.values())


# --- GPT(vocab_size=V, d_model=D) for any D a learner picks ---------------------------------------------------


@pytest.mark.parametrize("d_model, n_head", [(32, 1), (64, 1), (100, 2), (128, 2), (256, 4), (384, 6), (768, 12)])
def test_gpt_with_only_vocab_size_and_d_model_works(d_model, n_head):
    from src.model import GPT

    model = GPT(vocab_size=65, d_model=d_model)
    assert model.config.n_head == n_head
    assert model.config.d_model // model.config.n_head == {100: 50, 32: 32}.get(d_model, 64)
    torch.manual_seed(0)
    out = model.generate([1, 2, 3], max_new_tokens=5)
    assert len(out) == 8 and all(0 <= t < 65 for t in out)
    logits, _ = model(torch.tensor([[1, 2, 3]]))
    assert logits.shape == (1, 3, 65)


def test_default_n_head_is_gpt2s_choice_for_every_gpt2_size():
    from src.model import default_n_head

    assert [default_n_head(d) for d in (768, 1024, 1280, 1600)] == [12, 16, 20, 25]  # small, medium, large, XL
    assert default_n_head(96) == 2 and default_n_head(7) == 1  # nearest to 64 wide: 2 x 48; a prime: 1 head
    for d in range(1, 300):
        assert d % default_n_head(d) == 0


def test_an_explicit_n_head_still_wins_and_must_divide_d_model():
    from src.model import GPT, GPTConfig

    assert GPT(vocab_size=10, d_model=64, n_head=4).config.n_head == 4
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(d_model=64, n_head=3)
