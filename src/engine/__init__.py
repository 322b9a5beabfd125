"""Machinery: skip it on a first read.

The files at the top of `src/` are the reading path: they teach how GPT-2 works, from characters to a
trained model. Everything a real training run needs besides that lives here, one idea per file, each
called from the reading path in one named call:

    config.py       every training setting in one dataclass; the command line; named presets
    precision.py    device, autocast dtype and float16's gradient scaler, behind one object
    distributed.py  several processes with PyTorch DDP (a no-op for one process)
    resume.py       the loop state, the exact-resume state file, Ctrl-C, a time budget
    checkpoint.py   checkpoint folders: save, load (model, tokenizer), a run's lock on its folder
    snapshots.py    the weights at every evaluation, to watch a model learn
    stages.py       the models a run left behind (snapshots, best, latest), by name under --out-dir
    gpt2_files.py   GPT-2's tokenizer files: the byte alphabet, the two file layouts
    hub.py          downloading released GPT-2 files from the Hugging Face Hub
    muon.py         the Muon optimizer (orthogonalised momentum) beside AdamW, for --optimizer muon
    fused_gelu.py   GPT-2's GELU for CPU training in one pass each way: a small C kernel of our own (gelu.c)
    fused_attention.py  causal attention for CPU training from qkv and back: a C kernel of our own (attention.c)
    quantize.py     int8 weights for faster generation on a CPU
    int8_matvec.py  int8 weights times a vector: a small C kernel of our own (int8_matvec.c), as a PyTorch op
    ckernel.py      compiling our C kernels on first use, and loading them
    matvec.py       decoding at memory speed: a compiled matrix-vector kernel for float32 and bf16 weights
    decode.py       a decoding step compiled whole, with fixed shapes: one call per token
    decode_step.py  the one-token step of a GPT in C (decode_step.c), one call per token: what --fast runs
    textstream.py   printing generated text as it comes: whole characters, stop strings
    perf.py         parameters, memory, the hardware's peak FLOP/s, bits per byte
    metrics.py      the run's header, progress bar, metrics.jsonl and loss.png
    drawing.py      the figures of pictures.py, from its numbers
    corpus.py       where the text comes from (your file, or Shakespeare), read safely
    sources.py      a corpus for prepare.py: .txt, .jsonl(.gz), .parquet, Hugging Face datasets, as pieces
    pool.py         tokenizing on every core: spawned workers, a bounded queue, results in order
    shards.py       a prepared folder: token files, the manifest, llm.c's .bin shards
    tokenizers.py   GPT-2's tokenizer from its released files, without PyTorch
    files.py        atomic writes, JSON, tensor files
    errors.py       one-line errors for mistakes a user can fix

The reading path's library files import from here only its small I/O helpers, which import nothing from
`src/` but one another: `files`, `errors`, `corpus` (the default text, for the module-level `encode`),
`gpt2_files` (how a BPE file spells bytes; GPT-2's file names), `hub` (so that `GPT.from_pretrained("gpt2")`
can download OpenAI's weights) and `shards` (token files and a prepared folder's manifest, for the data
loader). The command-line programs, `train.py`, `sample.py`, `pictures.py`, `playground.py`, `prepare.py`
and `evaluate.py`, are where the machinery is wired in. A test holds the imports to that, and finds no
cycles.
"""
