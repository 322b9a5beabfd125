"""A web page for watching a model write: `python src/playground.py --out-dir out`, then open the address it prints.

Type a prompt and press Generate: the tokens appear one by one, as the model picks them. Click a token to see
why it was picked: the ten likeliest next tokens at that step (the model's own probabilities, before
temperature, top-k and top-p reshape them) and, for every layer and head, where the model was looking (the
attention of the position that predicted the token). The stage slider replays the same prompt and seed
through the snapshots a run kept (engine/snapshots.py), so you can watch a model learn: random letters at
step 0, words by step 250, ...

It is a small web server (Starlette, run by uvicorn) in front of the same functions `sample.py` uses:

    GET  /                the page (src/web/index.html; its script and style sheet are under /static/)
    GET  /api/stages      the stages under --out-dir, the default stage's sizes, and the server's limits
    GET  /api/generate    server-sent events: "start" (the prompt's tokens), one "token" per generated token,
                          then "done" (or "error" if something breaks mid-way)
    POST /api/inspect     one forward pass over a list of ids: the next-token probabilities at one position,
                          and where that position looks (attention) in every layer and head

Every setting a page sends is checked before anything runs; a bad one is answered with HTTP 400 and
`{"error": "<one line>"}`. Stage names are paths under --out-dir, and nothing outside it can be loaded
(engine/stages.py). The server listens on 127.0.0.1 (this machine only) unless --host says otherwise.

Each model step runs in a worker thread, so the server keeps answering while a model computes; when the page
closes a stream (a new Generate, or the tab), the generation stops at once. Models are loaded once per
stage and kept (the last few), but every stream has its own generator, KV cache and random seed, so two
streams never affect each other.

Who uses it: people, in a browser. The page is plain HTML, CSS and JavaScript in src/web/, no libraries.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import math
import socket
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

if __package__ in (None, ""):  # run as `python src/playground.py`: make the `src` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio
import torch
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from src.engine.errors import ArgumentParser, UserError, run_cli
from src.engine.gpt2_files import CONFIG, LEGACY_WEIGHTS, WEIGHTS
from src.engine.stages import list_stages, load_stage, stage_path
from src.engine.textstream import StreamDecoder
from src.generate import encode_prompt, generate_steps
from src.sampling import check_sampling_args

WEB = Path(__file__).resolve().parent / "web"  # index.html, playground.js, playground.css
TOP = 10  # how many of the likeliest tokens the page shows
MAX_TEMPERATURE = 5.0  # above this every token is about as likely as any other: nothing left to see
MAX_SEED = 2**32 - 1
MAX_IDS = 100_000  # the longest id list /api/inspect accepts (only the last block_size are used anyway)
LOCAL_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]  # the names of this machine, for allowed_hosts
DEFAULTS = dict(temperature=0.8, max_new_tokens=100, seed=1337)  # what a request that leaves them out gets


# --- models ------------------------------------------------------------------------------------------------


class ModelCache:
    """The models of the last few stages used, loaded once each (a small LRU cache).

    One lock around it: two requests for a stage that is not loaded yet load it once, not twice. A stage whose
    files changed since it was loaded (a run still training into --out-dir) is loaded again.
    """

    def __init__(self, out_dir: str | Path, size: int = 4):
        self.out_dir = Path(out_dir)
        self.size = size
        self.lock = threading.Lock()
        self.models: OrderedDict[str, tuple] = OrderedDict()  # stage -> (files' stamp, model, tokenizer)
        self.loads = 0  # how many times a model was read from disk (a test counts them)

    def get(self, name: str):
        """(model, tokenizer) of stage `name`; UserError for a name outside --out-dir or no such stage."""
        target = stage_path(self.out_dir, name)  # refuses "..", "/etc", a link out of --out-dir
        key = target.relative_to(self.out_dir.resolve()).as_posix()  # "best" and "./best" are one stage
        stamp = files_stamp(target)
        with self.lock:
            if key in self.models and self.models[key][0] == stamp:
                self.models.move_to_end(key)
                return self.models[key][1:]
            model, tokenizer = load_stage(self.out_dir, key)
            model.eval()  # dropout off, for good: the page only ever generates and looks
            self.models[key] = (stamp, model, tokenizer)
            self.models.move_to_end(key)
            while len(self.models) > self.size:
                self.models.popitem(last=False)  # forget the stage used least recently
            self.loads += 1
            return model, tokenizer


def files_stamp(target: Path) -> tuple:
    """When the files of a stage (a checkpoint folder, or a snapshot) were last written."""
    files = [target / CONFIG, target / WEIGHTS, target / LEGACY_WEIGHTS, target.with_name(target.name + ".safetensors")]
    return tuple(f.stat().st_mtime_ns if f.is_file() else None for f in files)


def model_facts(model, tokenizer) -> dict:
    """The sizes the page shows (and needs: the layer and head menus)."""
    config = model.config
    return {
        "vocab_size": tokenizer.vocab_size,
        "block_size": model.block_size,
        "n_layer": getattr(config, "n_layer", 0),  # the bigram has no layers and no heads
        "n_head": getattr(config, "n_head", 0),
        "d_model": getattr(config, "d_model", None),
        "params": model.num_params(),
        "tokenizer": tokenizer.kind,
    }


def token_text(tokenizer, token_id: int) -> str:
    """One token on its own, as text. Part of a character (a byte-level token can end mid-character) shows
    as its bytes, e.g. "\\xe2", instead of as "\ufffd"."""
    return tokenizer.decode_bytes([token_id]).decode("utf-8", errors="backslashreplace")


def top_tokens(tokenizer, probs: torch.Tensor, k: int = TOP) -> list[dict]:
    """The k likeliest tokens of a (V,) probability vector, likeliest first."""
    p, ids = probs.topk(min(k, probs.numel()))
    return [{"id": i, "text": token_text(tokenizer, i), "p": q} for i, q in zip(ids.tolist(), p.tolist(), strict=True)]


def default_stage(out_dir: Path) -> str:
    """The stage a request without one gets: the latest checkpoint (or the last snapshot, if there is none)."""
    stages = list_stages(out_dir)
    if not stages:
        raise UserError(f"no model in {out_dir}: train one first (python src/train.py --out-dir {out_dir})")
    return "." if any(s.name == "." for s in stages) else stages[-1].name


# --- checking what a page sends ------------------------------------------------------------------------------


def one_line(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def parse_float(value: str, name: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise UserError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise UserError(f"{name} must be a finite number, got {value!r}")
    return number


def parse_int(value, name: str) -> int:
    """A whole number, from a query string ("12") or from JSON (12; not 12.5, not true)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise UserError(f"{name} must be a whole number, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{name} must be a whole number, got {value!r}") from None


def in_range(number, name: str, low, high):
    if not low <= number <= high:
        raise UserError(f"{name} must be from {low} to {high}, got {number}")
    return number


def generation_settings(params, limits: dict) -> dict:
    """The sampling settings of a /api/generate request, checked (UserError names the first bad one)."""
    temperature = parse_float(params.get("temperature", str(DEFAULTS["temperature"])), "temperature")
    in_range(temperature, "temperature", 0, MAX_TEMPERATURE)
    top_k = params.get("top_k", "")  # empty: off
    top_k = parse_int(top_k, "top_k") if top_k != "" else None
    top_p = params.get("top_p", "")
    top_p = parse_float(top_p, "top_p") if top_p != "" else None
    check_sampling_args(temperature, top_k, top_p)  # the same rules as sample.py's flags
    n = parse_int(params.get("max_new_tokens", str(min(DEFAULTS["max_new_tokens"], limits["max_new_tokens"]))),
                  "max_new_tokens")
    seed = parse_int(params.get("seed", str(DEFAULTS["seed"])), "seed")
    return dict(temperature=temperature, top_k=top_k, top_p=top_p,
                max_new_tokens=in_range(n, "max_new_tokens", 1, limits["max_new_tokens"]),
                seed=in_range(seed, "seed", 0, MAX_SEED))


def bad_request(err: Exception) -> JSONResponse:
    return JSONResponse({"error": one_line(err)}, status_code=400)


def sse(event: str, data: dict) -> str:
    """One server-sent event. JSON escapes newlines, so the data is one line, as the format requires."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


class EventStream(StreamingResponse):
    """A StreamingResponse that closes its generator however the stream ends (finished, or the client gone),
    so the generation's `finally` (stop the model, count it as ended) runs at once, not when Python gets to it."""

    media_type = "text/event-stream"

    async def stream_response(self, send) -> None:
        async with contextlib.aclosing(self.body_iterator):
            await super().stream_response(send)


# --- the web app -----------------------------------------------------------------------------------------------


def make_app(out_dir: str | Path, max_prompt_chars: int = 2000, max_new_tokens: int = 500,
             cache_size: int = 4, allowed_hosts: list[str] | None = None) -> Starlette:
    """The playground for the stages under `out_dir`, as an ASGI app (uvicorn serves it; tests call it).

    `allowed_hosts`: the host names a request may be addressed to (None: any). Served on 127.0.0.1, it is
    `LOCAL_HOSTS`, so that a web page elsewhere cannot reach the playground through a DNS name of its own
    that points at 127.0.0.1 ("DNS rebinding").
    """
    out_dir = Path(out_dir)
    limits = {"max_prompt_chars": max_prompt_chars, "max_new_tokens": max_new_tokens,
              "max_temperature": MAX_TEMPERATURE}
    models = ModelCache(out_dir, cache_size)

    async def load(name: str | None):
        """(stage name, model, tokenizer), loaded in a worker thread (reading weights takes a while)."""
        name = default_stage(out_dir) if name is None else name
        if not isinstance(name, str):
            raise UserError(f"stage must be a stage name (text), got {name!r}")
        model, tokenizer = await anyio.to_thread.run_sync(models.get, name)
        return name, model, tokenizer

    async def page(request: Request):
        # The page may load scripts, styles and data from this server only: no CDN, works offline.
        return FileResponse(WEB / "index.html", headers={"Content-Security-Policy": "default-src 'self'"})

    async def stages(request: Request):
        try:
            name, model, tokenizer = await load(None)
        except (UserError, ValueError) as err:
            return bad_request(err)
        return JSONResponse({
            "stages": [{"name": s.name, "label": s.label, "step": s.step} for s in list_stages(out_dir)],
            "default": name,
            "model": model_facts(model, tokenizer),
            "limits": limits,
        })

    async def generate(request: Request):
        params = request.query_params
        try:  # everything is checked here, before the stream starts: a bad setting is an HTTP 400
            settings = generation_settings(params, limits)
            prompt = params.get("prompt", "")
            if len(prompt) > max_prompt_chars:
                raise UserError(f"the prompt is {len(prompt)} characters long; the most is {max_prompt_chars}")
            name, model, tokenizer = await load(params.get("stage"))
            prompt_ids = encode_prompt(tokenizer, prompt)  # UserError: a character the vocabulary lacks
        except (UserError, ValueError) as err:
            return bad_request(err)
        return EventStream(events(request, name, model, tokenizer, prompt_ids, settings),
                           headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def events(request, name, model, tokenizer, prompt_ids, settings):
        """The events of one generation. Token event i: {index (its place in prompt + generated ids), id,
        text (the characters it completes), top (the 10 likeliest tokens at that step), p (its probability)}."""
        state = request.app.state
        n = settings.pop("max_new_tokens")
        idx = torch.tensor([prompt_ids], dtype=torch.long)  # (1, T)
        steps = generate_steps(model, idx, n, **settings)  # this stream's own generator, KV cache and seed
        decoder = StreamDecoder(tokenizer)
        ids, started = [], time.perf_counter()
        state.generations_active += 1
        try:
            yield sse("start", {"stage": name, "ids": prompt_ids,
                                "tokens": [token_text(tokenizer, i) for i in prompt_ids],
                                "model": model_facts(model, tokenizer)})
            while len(ids) < n:
                # One step of the model, in a worker thread: the server stays free for other requests meanwhile.
                step = await anyio.to_thread.run_sync(next, steps, None)
                if step is None:
                    break
                state.steps_computed += 1
                next_id, logits = step  # (1, 1), (1, V): the model's scores, before temperature/top-k/top-p
                token = next_id.item()
                probs = torch.softmax(logits[0].float(), dim=-1)  # (V,): what the model believes comes next
                ids.append(token)
                yield sse("token", {"index": len(prompt_ids) + len(ids) - 1, "id": token, "text": decoder.push(token),
                                    "top": top_tokens(tokenizer, probs), "p": probs[token].item()})
                if token == tokenizer.eot_token_id:
                    break  # "<|endoftext|>": the model's way of saying the text is over
            seconds = time.perf_counter() - started
            yield sse("done", {"text": tokenizer.decode(ids), "rest": decoder.flush(), "tokens": len(ids),
                               "seconds": round(seconds, 3)})
        except Exception as err:  # a failure half-way: the page has to hear about it, in one line
            yield sse("error", {"error": one_line(err)})
        finally:  # finished, failed, or the client went away: stop the model, no more steps
            steps.close()
            state.generations_active -= 1

    async def inspect(request: Request):
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise UserError("the request body must be a JSON object {stage, ids, position}")
            name, model, tokenizer = await load(body.get("stage"))
            ids = body.get("ids")
            if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_IDS:
                raise UserError(f"ids must be a list of 1 to {MAX_IDS} token ids")
            ids = [in_range(parse_int(i, "every id"), "every id", 0, tokenizer.vocab_size - 1) for i in ids]
            position = in_range(parse_int(body.get("position", len(ids) - 1), "position"), "position", 0, len(ids) - 1)
            k = in_range(parse_int(body.get("k", min(TOP, tokenizer.vocab_size)), "k"), "k", 1, tokenizer.vocab_size)
            facts = model_facts(model, tokenizer)
            layer, head = body.get("layer"), body.get("head")
            if (layer is not None or head is not None) and not facts["n_layer"]:
                raise UserError("this model has no attention to show (a bigram model): leave out layer and head")
            if layer is not None or head is not None:  # the whole attention matrix of one head, for the heatmap
                layer = in_range(parse_int(layer, "layer"), "layer", 0, facts["n_layer"] - 1)
                head = in_range(parse_int(head, "head"), "head", 0, facts["n_head"] - 1)
        except (UserError, ValueError) as err:  # json.JSONDecodeError is a ValueError
            return bad_request(err)
        result = await anyio.to_thread.run_sync(look_inside, model, tokenizer, ids, position, k, layer, head)
        return JSONResponse(result)

    async def http_error(request: Request, err: HTTPException):
        return JSONResponse({"error": err.detail}, status_code=err.status_code)

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/api/stages", stages),
            Route("/api/generate", generate),
            Route("/api/inspect", inspect, methods=["POST"]),
            Mount("/static", StaticFiles(directory=WEB), name="static"),
        ],
        exception_handlers={HTTPException: http_error},
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)] if allowed_hosts else [],
    )
    app.state.models = models
    app.state.generations_active = 0  # streams running now
    app.state.steps_computed = 0  # model steps computed by all streams so far
    return app


@torch.inference_mode()
def look_inside(model, tokenizer, ids: list[int], position: int, k: int, layer: int | None, head: int | None) -> dict:
    """One forward pass over the context of `position` (the ids up to it, at most the last block_size).

    Returns the k likeliest next tokens after `position`, and the attention row of `position` (where it looks,
    over the context) in every layer and head: exactly what the model computed when it predicted token
    position + 1. With a layer and head, also that head's whole attention matrix, one row per position
    (row i has i + 1 weights: a position never looks ahead).
    """
    start = max(0, position + 1 - model.block_size)  # the model cannot see further back than block_size
    context = ids[start : position + 1]
    logits, _, attention = model(torch.tensor([context], dtype=torch.long), return_attention=True)
    probs = torch.softmax(logits[0, -1].float(), dim=-1)  # (V,)
    attention = attention[:, 0].float()  # (n_layer, n_head, T, T)
    result = {
        "start": start,  # the index (in `ids`) of the first token the model saw
        "tokens": [token_text(tokenizer, i) for i in context],
        "top": top_tokens(tokenizer, probs, k),
        "attention": attention[:, :, -1, :].tolist(),  # (n_layer, n_head, T): the row of `position`
    }
    if layer is not None:
        matrix = attention[layer, head]  # (T, T)
        result["matrix"] = [[round(w, 5) for w in matrix[i, : i + 1].tolist()] for i in range(len(context))]
    return result


# --- the server ----------------------------------------------------------------------------------------------


def local_names(host: str) -> list[str]:
    """The names a request to this machine may carry: `LOCAL_HOSTS`, and the loopback address served on (any of
    127.0.0.0/8, as the browser writes it in the Host header: an IPv6 one in brackets)."""
    return [*LOCAL_HOSTS, host, f"[{host}]"] if ":" in host else [*LOCAL_HOSTS, host]


def host_warning(host: str) -> str | None:
    """A warning for a host other machines can reach (None for this machine only: 127.0.0.1, ::1, localhost)."""
    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        local = False
    if local:
        return None
    return (f"warning: --host {host} makes the playground reachable from other machines on the network: anyone "
            "who can reach it can run the model (use the default 127.0.0.1 to keep it on this machine)")


def url_of(host: str, port: int) -> str:
    """The address to open in a browser ("0.0.0.0" means every address of this machine: use 127.0.0.1)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (port 0: a free one), or a one-line UserError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror or err} (try another --port, or 0 for "
                        "any free one)") from None
    return sock


class Server(uvicorn.Server):
    """uvicorn's server, serving on a socket we bound (so its port is known, even for --port 0), and saying
    where it is once it listens."""

    def __init__(self, app, sock: socket.socket, announce: bool = True):
        super().__init__(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
        self.sock = sock
        self.announce = announce
        host, self.port = sock.getsockname()[:2]
        self.url = url_of(host, self.port)

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=[self.sock])
        if self.started and self.announce:
            print(f"playground: open {self.url} in a browser (Ctrl-C stops it)", flush=True)


@contextlib.contextmanager
def serve_in_background(app, host: str = "127.0.0.1", port: int = 0):
    """Serve `app` in a thread while the `with` block runs; yields the address. For tests and notebooks:

        with serve_in_background(make_app("out")) as url:
            ...  # open url
    """
    server = Server(app, listen(host, port), announce=False)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the playground server did not start")
            time.sleep(0.01)
        yield server.url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python src/playground.py",
        description="A web page to generate text token by token and look inside the model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out-dir", default="out", help="the folder train.py wrote (or a Hugging Face GPT-2 folder)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    p.add_argument("--max-prompt-chars", type=positive, default=2000, help="the longest prompt the page may send")
    p.add_argument("--max-new-tokens", type=positive, default=500, help="the most tokens one generation may ask for")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be from 0 to 65535, got {args.port}")
    out_dir = Path(args.out_dir)
    warning = host_warning(args.host)
    app = make_app(out_dir, args.max_prompt_chars, args.max_new_tokens,
                   allowed_hosts=None if warning else local_names(args.host))
    app.state.models.get(default_stage(out_dir))  # a broken checkpoint is an error now, not on the first page
    if warning:
        print(warning, file=sys.stderr)
    Server(app, listen(args.host, args.port)).run()


if __name__ == "__main__":
    run_cli(main)
