"""The playground's web server (src/playground.py), through Starlette's TestClient and one real uvicorn server.

What is proven here:
- the streamed tokens are exactly `generate`'s for the same settings (char and BPE, sampled and greedy), and
  their text is exactly `tokenizer.decode` of them;
- the probabilities sent with each token are the model's own (softmax of a direct forward pass), the top 10;
- /api/inspect's attention is the model's, row for row, with nothing on future positions;
- every bad setting, and every stage name that leads outside --out-dir, is an HTTP 400 with a one-line error;
- two streams at once do not disturb each other; a stream whose client leaves stops computing;
- the command line: the address it prints, the warning for a public --host, the error for an empty folder.

The models are tiny random GPTs (block_size 32, so a 40-token generation slides past the context), with a
token embedding drawn at std 0.1 instead of 0.02, so that a few tokens stand out (a near-uniform distribution
shows nothing). Near-equal probabilities may still swap places between two ways of computing them (with and
without the KV cache), so lists of tokens are compared by probability, not by order.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import types

import httpx
import pytest
import torch
from starlette.testclient import TestClient

import src.playground as playground
from src.bigram import BigramConfig, BigramLanguageModel
from src.bpe import BPETokenizer
from src.engine.checkpoint import save_checkpoint
from src.engine.errors import UserError
from src.engine.snapshots import Snapshots
from src.engine.stages import load_stage
from src.generate import encode_prompt, generate
from src.model import GPT
from src.tokenizer import CharTokenizer

MAX_PROMPT_CHARS = 50
MAX_NEW_TOKENS = 60


def tiny_gpt(vocab_size: int, seed: int) -> GPT:
    torch.manual_seed(seed)
    model = GPT(vocab_size=vocab_size, block_size=32, n_layer=2, n_head=2, d_model=32)
    with torch.no_grad():
        model.transformer.wte.weight.normal_(0.0, 0.1)  # a few likely tokens, not a near-uniform guess
    return model.eval()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_text):
    """{"char": out dir with snapshots 0 and 10, best/ and the latest; "bpe": a BPE checkpoint; "root": above}."""
    root = tmp_path_factory.mktemp("playground")
    char = CharTokenizer.from_text(tiny_text)
    early, late = tiny_gpt(char.vocab_size, 1), tiny_gpt(char.vocab_size, 2)
    out = root / "out"
    snapshots = Snapshots(out, early, char, max_params=10**9, fresh=True)
    snapshots.save(early, 0)
    snapshots.save(late, 10)
    save_checkpoint(out / "best", early, char, {"step": 0})
    save_checkpoint(out, late, char, {"step": 10})
    save_checkpoint(root / "outside", late, char, {"step": 10})  # a real checkpoint beside out/: unreachable
    (out / "link").symlink_to(root / "outside")  # ... also through a symbolic link inside out/

    bpe = BPETokenizer.train(tiny_text, vocab_size=300, special_tokens=["<|endoftext|>"])
    save_checkpoint(root / "bpe", tiny_gpt(bpe.vocab_size, 3), bpe, {"step": 5})
    return {"char": out, "bpe": root / "bpe", "root": root}


@pytest.fixture(scope="module")
def client(runs):
    app = playground.make_app(runs["char"], max_prompt_chars=MAX_PROMPT_CHARS, max_new_tokens=MAX_NEW_TOKENS)
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def bpe_client(runs):
    with TestClient(playground.make_app(runs["bpe"], max_new_tokens=MAX_NEW_TOKENS)) as client:
        yield client


def read_events(lines) -> list[tuple[str, dict]]:
    """Server-sent events -> [(event name, data)]."""
    events, name, data = [], None, None
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            data = json.loads(line[len("data: "):])
        elif line == "" and name is not None:
            events.append((name, data))
            name = None
    return events


def query(prompt="", stage=".", temperature=0.8, top_k=None, top_p=None, max_new_tokens=20, seed=1337) -> dict:
    return dict(prompt=prompt, stage=stage, temperature=temperature, top_k="" if top_k is None else top_k,
                top_p="" if top_p is None else top_p, max_new_tokens=max_new_tokens, seed=seed)


def stream(client, **settings) -> list[tuple[str, dict]]:
    with client.stream("GET", "/api/generate", params=query(**settings)) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return read_events(response.iter_lines())


def tokens_of(events) -> list[dict]:
    return [data for name, data in events if name == "token"]


# --- the page and the stages --------------------------------------------------------------------------------


def test_the_page_and_its_assets_come_from_this_server(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == "default-src 'self'"  # nothing from elsewhere may load
    html = page.text
    for element_id in ("prompt", "generate", "output", "probs", "heatmap", "stage", "layer", "head"):
        assert f'id="{element_id}"' in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(assets) == ["/static/favicon.svg", "/static/playground.css", "/static/playground.js"]
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200
        if not asset.endswith(".svg"):  # (an SVG names its XML namespace by an http:// address; it loads nothing)
            assert "http://" not in response.text and "https://" not in response.text  # no CDN, works offline
    assert client.get("/static/../playground.py").status_code == 404
    assert client.get("/static/nothing.js").json() == {"error": "Not Found"}


def test_stages_lists_snapshots_checkpoints_and_the_latest_model(client, runs):
    info = client.get("/api/stages").json()
    assert [(s["name"], s["label"], s["step"]) for s in info["stages"]] == [
        ("snapshots/step-000000", "step 0", 0),
        ("snapshots/step-000010", "step 10", 10),
        ("best", "best (step 0)", 0),
        (".", "latest (step 10)", 10),
    ]
    assert info["default"] == "."
    model, tokenizer = load_stage(runs["char"], ".")
    assert info["model"] == {"vocab_size": tokenizer.vocab_size, "block_size": 32, "n_layer": 2, "n_head": 2,
                             "d_model": 32, "params": model.num_params(), "tokenizer": "char"}
    assert info["limits"] == {"max_prompt_chars": MAX_PROMPT_CHARS, "max_new_tokens": MAX_NEW_TOKENS,
                              "max_temperature": playground.MAX_TEMPERATURE}


# --- generation: exactly generate()'s tokens, with the model's own probabilities -------------------------------


CASES = [
    ("char", ".", "The king", dict(temperature=0.8, seed=7)),
    ("char", "snapshots/step-000000", "", dict(temperature=1.0, top_k=5, seed=3)),  # empty prompt: a newline
    ("char", "best", "Love", dict(temperature=0.0, seed=1)),  # greedy
    ("char", "snapshots/step-000010", "a", dict(temperature=1.3, top_p=0.9, seed=11)),
    ("bpe", ".", "The queen was", dict(temperature=0.9, top_k=50, seed=5)),
    ("bpe", ".", "The night", dict(temperature=0.0, seed=0)),
]


@pytest.mark.parametrize("kind, stage, prompt, settings", CASES,
                         ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_streamed_tokens_are_generates_tokens(client, bpe_client, runs, kind, stage, prompt, settings):
    n = 40  # past the context of 32: the stream slides its window as generate does
    events = stream(client if kind == "char" else bpe_client, prompt=prompt, stage=stage, max_new_tokens=n,
                    **settings)
    model, tokenizer = load_stage(runs[kind], stage)
    prompt_ids = encode_prompt(tokenizer, prompt)
    expected = generate(model, prompt_ids, n, **settings)[len(prompt_ids):]

    assert [name for name, _ in events] == ["start"] + ["token"] * len(tokens_of(events)) + ["done"]
    start, done = events[0][1], events[-1][1]
    assert start["ids"] == prompt_ids and start["stage"] == stage
    ids = [token["id"] for token in tokens_of(events)]
    if tokenizer.eot_token_id in ids:  # "<|endoftext|>" ends the text: the stream stops there
        assert ids == expected[: ids.index(tokenizer.eot_token_id) + 1]
    else:
        assert ids == expected
    assert [t["index"] for t in tokens_of(events)] == list(range(len(prompt_ids), len(prompt_ids) + len(ids)))
    text = "".join(token["text"] for token in tokens_of(events)) + done["rest"]
    assert text == done["text"] == tokenizer.decode(ids)
    assert done["tokens"] == len(ids)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_each_tokens_top_10_are_the_models_probabilities(client, bpe_client, runs, kind):
    prompt, n = ("Night and day", 30) if kind == "char" else ("The king and the queen", 30)
    events = stream(client if kind == "char" else bpe_client, prompt=prompt, max_new_tokens=n, temperature=1.0,
                    top_k=3, seed=2)
    model, tokenizer = load_stage(runs[kind], ".")
    ids = encode_prompt(tokenizer, prompt)
    for token in tokens_of(events):
        with torch.no_grad():  # the oracle: a plain forward pass over the context, no KV cache
            logits, _ = model(torch.tensor([ids[-model.block_size:]]))
        probs = torch.softmax(logits[0, -1], dim=-1)
        top = token["top"]
        assert len(top) == 10
        ps = [entry["p"] for entry in top]
        assert ps == sorted(ps, reverse=True) and sum(ps) <= 1 + 1e-6
        tenth = probs.topk(10).values[-1].item()
        for entry in top:
            assert entry["p"] == pytest.approx(probs[entry["id"]].item(), abs=1e-5)
            assert entry["p"] >= tenth - 1e-5  # these are the 10 likeliest, not any 10
            assert entry["text"] == tokenizer.decode_bytes([entry["id"]]).decode("utf-8", "backslashreplace")
        assert token["p"] == pytest.approx(probs[token["id"]].item(), abs=1e-5)
        ids.append(token["id"])


def test_two_streams_at_once_each_give_their_solo_result(client):
    settings = [dict(prompt="The king", temperature=1.0, seed=seed, max_new_tokens=30) for seed in (1, 2)]
    solo = [[t["id"] for t in tokens_of(stream(client, **s))] for s in settings]
    assert solo[0] != solo[1]
    both_open = threading.Barrier(2, timeout=20)
    results, errors = [None, None], []

    def run(i):
        try:
            with client.stream("GET", "/api/generate", params=query(**settings[i])) as response:
                lines = response.iter_lines()
                events = []
                for line in lines:
                    events.append(line)
                    if line.startswith("event: token"):
                        both_open.wait()  # both streams are running at this point
                        break
                events += list(lines)
            results[i] = [t["id"] for t in tokens_of(read_events(events))]
        except Exception as err:  # reported below, in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert results == solo


def test_each_stage_is_loaded_once(runs):
    app = playground.make_app(runs["char"])
    with TestClient(app) as client:
        for stage in ["best", "./best", "best/", "best", "snapshots/step-000000"]:
            assert client.get("/api/generate", params=query(stage=stage, max_new_tokens=2)).status_code == 200
    assert app.state.models.loads == 2
    assert app.state.generations_active == 0 and app.state.steps_computed == 10


# --- looking inside: /api/inspect ---------------------------------------------------------------------------


def inspect(client, **body):
    response = client.post("/api/inspect", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_inspect_gives_the_whole_distribution_when_asked(client, runs):
    model, tokenizer = load_stage(runs["char"], ".")
    ids = tokenizer.encode("The king was")
    result = inspect(client, stage=".", ids=ids, position=len(ids) - 1, k=tokenizer.vocab_size)
    ps = [entry["p"] for entry in result["top"]]
    assert len(ps) == tokenizer.vocab_size and sorted(entry["id"] for entry in result["top"]) == list(range(len(ps)))
    assert sum(ps) == pytest.approx(1.0, abs=1e-5)
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([ids]))[0][0, -1], dim=-1)
    assert ps == pytest.approx(probs.sort(descending=True).values.tolist(), abs=1e-6)
    assert result["top"][:10] == inspect(client, stage=".", ids=ids, position=len(ids) - 1)["top"]  # k=10


@pytest.mark.parametrize("text, position", [
    ("The queen and the king were there, and a sword.", 40),  # 47 tokens: position 40 sees the 32 up to it
    ("The queen and the king", 9),  # a position in the middle: the tokens after it are the future
])
def test_inspect_attention_is_the_models_with_nothing_on_the_future(client, runs, text, position):
    model, tokenizer = load_stage(runs["char"], "snapshots/step-000010")
    ids = tokenizer.encode(text)
    result = inspect(client, stage="snapshots/step-000010", ids=ids, position=position, layer=1, head=1)
    start = max(0, position + 1 - model.block_size)  # the model saw at most the last 32 tokens up to `position`
    context = ids[start : position + 1]
    assert result["start"] == start and result["tokens"] == [tokenizer.decode([i]) for i in context]
    with torch.no_grad():
        _, _, attention = model(torch.tensor([context]), return_attention=True)  # (n_layer, 1, n_head, T, T)
    rows = torch.tensor(result["attention"])  # (n_layer, n_head, T): the row of `position`
    assert rows.shape == (2, 2, len(context)) == (2, 2, min(position + 1, 32))
    torch.testing.assert_close(rows, attention[:, 0, :, -1, :], atol=1e-6, rtol=0)
    torch.testing.assert_close(rows.sum(-1), torch.ones(2, 2), atol=1e-5, rtol=0)
    matrix = result["matrix"]  # layer 1, head 1: row i has the weights of positions 0..i
    assert [len(row) for row in matrix] == list(range(1, len(context) + 1))
    full = attention[1, 0, 1]  # (T, T)
    for i, row in enumerate(matrix):
        assert row == pytest.approx(full[i, : i + 1].tolist(), abs=1e-5)
        assert sum(row) == pytest.approx(1.0, abs=1e-4)
        assert full[i, i + 1 :].abs().max().item() == 0 if i + 1 < len(context) else True
    # What comes after `position` changes nothing: a position cannot see the future.
    other = ids[: position + 1] + [0] * (len(ids) - position - 1)
    assert inspect(client, stage="snapshots/step-000010", ids=other, position=position) == {
        key: value for key, value in result.items() if key != "matrix"}


def test_inspect_matches_the_step_that_generated_a_token(client, runs):
    """Clicking generated token i shows the probabilities of position i - 1: the same as the stream's."""
    events = stream(client, prompt="Love", max_new_tokens=10, temperature=1.0, seed=4)
    ids = events[0][1]["ids"] + [t["id"] for t in tokens_of(events)]
    vocab_size = client.get("/api/stages").json()["model"]["vocab_size"]
    for token in tokens_of(events)[:3]:
        index = token["index"]
        result = inspect(client, stage=".", ids=ids[:index], position=index - 1, k=vocab_size)
        p = {entry["id"]: entry["p"] for entry in result["top"]}
        assert [p[e["id"]] for e in token["top"]] == pytest.approx([e["p"] for e in token["top"]], abs=1e-5)
        assert p[token["id"]] == pytest.approx(token["p"], abs=1e-5)


def test_a_bigram_model_streams_and_has_no_attention(tmp_path):
    tokenizer = CharTokenizer.from_text("hello world\n")  # 9 tokens: fewer than 10
    torch.manual_seed(0)
    model = BigramLanguageModel(BigramConfig(vocab_size=tokenizer.vocab_size))
    save_checkpoint(tmp_path / "out", model, tokenizer)
    model, tokenizer = load_stage(tmp_path / "out", ".")
    with TestClient(playground.make_app(tmp_path / "out")) as client:
        assert client.get("/api/stages").json()["model"]["n_layer"] == 0
        events = stream(client, prompt="he", max_new_tokens=8, seed=3)
        ids = tokenizer.encode("he")
        assert [t["id"] for t in tokens_of(events)] == generate(model, ids, 8, temperature=0.8, seed=3)[2:]
        assert all(len(t["top"]) == tokenizer.vocab_size for t in tokens_of(events))
        result = inspect(client, ids=[1, 2, 3], position=2)
        assert result["attention"] == [] and len(result["top"]) == tokenizer.vocab_size
        assert_one_line_400(client.post("/api/inspect", json={"ids": [1], "layer": 0, "head": 0}), "bigram")


# --- bad input: always a 400 with one line, never a crash ------------------------------------------------------


BAD_SETTINGS = [
    ("temperature", "abc"), ("temperature", "nan"), ("temperature", "inf"), ("temperature", "-0.1"),
    ("temperature", "5.5"), ("temperature", ""), ("temperature", "1e400"),
    ("top_k", "0"), ("top_k", "-3"), ("top_k", "2.5"), ("top_k", "many"),
    ("top_p", "0"), ("top_p", "1.01"), ("top_p", "nan"), ("top_p", "-1"), ("top_p", "x"),
    ("max_new_tokens", "0"), ("max_new_tokens", "-5"), ("max_new_tokens", str(MAX_NEW_TOKENS + 1)),
    ("max_new_tokens", "1e2"), ("max_new_tokens", ""),
    ("seed", "1.5"), ("seed", "x"), ("seed", "-1"), ("seed", "9" * 30),
    ("prompt", "a" * (MAX_PROMPT_CHARS + 1)), ("prompt", "~"), ("prompt", "café"),
    ("stage", "nope"), ("stage", ".."), ("stage", "../x"), ("stage", "../outside"), ("stage", "/etc"),
    ("stage", "snapshots/../../outside"), ("stage", "snapshots/step-999999"), ("stage", "snapshots"),
    ("stage", "link"), ("stage", ""),
]


def assert_one_line_400(response, *words):
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error and "\n" not in error
    for word in words:
        assert word in error
    return error


@pytest.mark.parametrize("name, value", BAD_SETTINGS, ids=[f"{n}={v[:12]!r}" for n, v in BAD_SETTINGS])
def test_a_bad_setting_is_a_400_with_one_line(client, name, value):
    response = client.get("/api/generate", params={**query(), name: value})
    assert_one_line_400(response, name if name not in ("prompt", "stage") else "")
    assert client.get("/api/stages").status_code == 200  # and the server goes on


@pytest.mark.parametrize("raw", ["stage=%2e%2e", "stage=%2e%2e%2foutside", "stage=%2Fetc%2Fpasswd",
                                 "stage=..%2F..%2F..%2Fetc", "stage=%2E%2E/outside"])
def test_a_stage_outside_the_output_folder_is_refused_however_it_is_written(client, raw):
    assert_one_line_400(client.get(f"/api/generate?{raw}"), "stage")
    assert_one_line_400(client.post("/api/inspect", json={"stage": httpx.QueryParams(raw)["stage"], "ids": [1]}))


def test_a_bpe_prompt_with_a_special_token_is_refused(bpe_client):
    assert_one_line_400(bpe_client.get("/api/generate", params=query(prompt="a<|endoftext|>b")), "<|endoftext|>")


BAD_INSPECT = [
    {"ids": []}, {"ids": "123"}, {"ids": [1, 2.5]}, {"ids": [1, True]}, {"ids": [1, "a"]}, {"ids": [-1]},
    {"ids": [100000]}, {"ids": [1, 2], "position": 2}, {"ids": [1, 2], "position": -1},
    {"ids": [1, 2], "position": "x"}, {"ids": [1], "k": 0}, {"ids": [1], "k": 10**6},
    {"ids": [1], "layer": 2, "head": 0},
    {"ids": [1], "layer": 0, "head": 5}, {"ids": [1], "layer": 0}, {"ids": [1], "stage": ".."},
    {"ids": [1], "stage": "/etc"}, {"ids": [1], "stage": "nope"}, {"ids": [1], "stage": 5}, [1, 2],
    "not json",
]


@pytest.mark.parametrize("body", BAD_INSPECT, ids=[str(i) for i in range(len(BAD_INSPECT))])
def test_a_bad_inspect_request_is_a_400_with_one_line(client, body):
    if body == "not json":
        response = client.post("/api/inspect", content=b"{not json", headers={"content-type": "application/json"})
    else:
        response = client.post("/api/inspect", json=body)
    assert_one_line_400(response)
    assert client.get("/api/stages").status_code == 200


# --- a client that leaves: the generation stops -------------------------------------------------------------------


def test_generation_stops_when_the_client_disconnects_and_the_server_stays_responsive(runs, monkeypatch):
    real_steps = playground.generate_steps

    def slow_steps(*args, **kwargs):  # 20 ms a step: 5,000 steps would take 100 s
        for step in real_steps(*args, **kwargs):
            time.sleep(0.02)
            yield step

    monkeypatch.setattr(playground, "generate_steps", slow_steps)
    app = playground.make_app(runs["char"], max_new_tokens=5000)
    with playground.serve_in_background(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        with http.stream("GET", "/api/generate", params=query(max_new_tokens=5000)) as response:
            tokens = 0
            for line in response.iter_lines():
                tokens += line.startswith("event: token")
                if tokens == 2:
                    break
            assert app.state.generations_active == 1
            started = time.monotonic()  # the model is busy, and the server still answers at once
            assert http.get("/api/stages").status_code == 200 and time.monotonic() - started < 2
        # closed: the server notices, and stops computing
        deadline = time.monotonic() + 5
        while app.state.generations_active and time.monotonic() < deadline:
            time.sleep(0.02)
        assert app.state.generations_active == 0
        steps = app.state.steps_computed
        time.sleep(0.3)
        assert app.state.steps_computed == steps < 200


# --- the command line ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("host, public", [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                          ("127.0.0.2", False), ("0.0.0.0", True), ("::", True),
                                          ("192.168.1.5", True), ("myhost.example", True)])
def test_a_host_other_machines_can_reach_gets_a_warning(host, public):
    warning = playground.host_warning(host)
    assert (warning is not None) == public
    if public:
        assert "other machines" in warning and "\n" not in warning


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2"])
def test_served_on_a_loopback_address_the_page_answers_at_it_and_refuses_other_names(runs, host, monkeypatch):
    """Every 127.x.y.z is this machine (no warning): the browser then sends that address as the Host. The app
    is the one `main` builds for `--host` (its server replaced by one that keeps the app)."""
    served = {}
    monkeypatch.setattr(playground, "listen", lambda host, port: None)
    keep = lambda app, sock: types.SimpleNamespace(run=lambda: served.update(app=app))  # noqa: E731
    monkeypatch.setattr(playground, "Server", keep)
    playground.main(["--out-dir", str(runs["char"]), "--host", host])
    with TestClient(served["app"], base_url=f"http://{host}:8000") as client:
        assert client.get("/api/stages").status_code == 200
        assert client.get("/api/stages", headers={"Host": "attacker.example"}).status_code == 400


def test_an_output_folder_without_a_model_is_a_one_line_error(run_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(UserError, match="no model in"):
            playground.main(["--out-dir", str(folder)])
    proc = run_cli("src/playground.py", "--out-dir", tmp_path / "empty", "--port", "0")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: no model in")


def test_the_command_prints_its_address_and_serves(runs, repo_root, cli_env):
    proc = subprocess.Popen([sys.executable, "src/playground.py", "--out-dir", str(runs["char"]), "--port", "0"],
                            cwd=repo_root, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = {}  # the first line of stdout, printed once the server listens (read in a thread: a timeout)
        reader = threading.Thread(target=lambda: first.setdefault("line", proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=60)
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", first.get("line", ""))
        assert match, first
        info = httpx.get(match.group(0) + "api/stages", timeout=10).json()
        assert info["default"] == "." and len(info["stages"]) == 4
        # A page elsewhere whose own DNS name points at 127.0.0.1 ("DNS rebinding") is refused by its Host header
        rebound = httpx.get(match.group(0) + "api/stages", headers={"Host": "attacker.example"}, timeout=10)
        assert rebound.status_code == 400
        assert httpx.get(match.group(0).replace("127.0.0.1", "localhost"), timeout=10).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.stderr.read() == ""  # no warning for 127.0.0.1, and no log noise


def test_a_hugging_face_gpt2_folder_plays_with_gpt2s_tokenizer(tmp_path, monkeypatch):
    """A folder saved by `transformers` (no tokenizer of ours in it) as --out-dir: GPT-2's tokenizer decodes it
    (here a stand-in trained offline in GPT-2's file format, found through GPT2_TOKENIZER_DIR)."""
    transformers = pytest.importorskip("transformers")
    from test_pretrained import train_gpt2_standin_tokenizer

    vocab_size, _ = train_gpt2_standin_tokenizer(tmp_path / "gpt2-tokenizer")
    monkeypatch.setenv("GPT2_TOKENIZER_DIR", str(tmp_path / "gpt2-tokenizer"))
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=vocab_size, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "hf")
    with TestClient(playground.make_app(tmp_path / "hf", max_new_tokens=MAX_NEW_TOKENS)) as client:
        info = client.get("/api/stages").json()
        assert [s["name"] for s in info["stages"]] == ["."] and info["model"]["tokenizer"] == "bpe"
        events = stream(client, prompt="The queen", max_new_tokens=12, seed=3)
    model, tokenizer = load_stage(tmp_path / "hf", ".")
    prompt = encode_prompt(tokenizer, "The queen")
    expected = generate(model, prompt, 12, temperature=0.8, seed=3)[len(prompt):]
    ids = [t["id"] for t in tokens_of(events)]
    assert ids[: len(expected)] == expected[: len(ids)] and len(ids) >= 1  # (it may stop early at <|endoftext|>)
