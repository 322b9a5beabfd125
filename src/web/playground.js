// The playground page: generate text token by token, and look inside the model at any token.
//
// It talks to three URLs of src/playground.py:
//   GET  /api/stages     the stages (snapshots, best, latest), the model's sizes, the server's limits
//   GET  /api/generate   a stream of server-sent events (read with EventSource): "start" (the prompt's tokens),
//                        one "token" per generated token (with the 10 likeliest tokens at that step), "done"
//   POST /api/inspect    for one position: its next-token probabilities and its attention, every layer and head
//
// No libraries: the bars are <div>s whose width is the probability, the heatmap is drawn on a <canvas>.

"use strict";

const $ = (id) => document.getElementById(id);

// Everything the page knows, in one place.
const state = {
  stages: [],        // [{name, label, step}], from /api/stages
  model: null,       // the model's sizes: n_layer, n_head, block_size, vocab_size, tokenizer, ...
  source: null,      // the EventSource of the generation running now (null when none)
  stage: null,       // the stage the text on screen was generated with
  ids: [],           // every token id on screen: the prompt's, then the generated ones
  promptLength: 0,   // how many of `ids` are the prompt
  tops: {},          // index in `ids` -> the 10 likeliest tokens at the step that generated it (from the stream)
  selected: null,    // index of the token clicked last
  request: 0,        // counts /api/inspect requests, so that a late answer to an old click is ignored
};

// --- start-up: what stages and model are there? ---------------------------------------------------------------

async function init() {
  const response = await fetch("/api/stages");
  const info = await response.json();
  if (!response.ok) {
    showError(info.error);
    return;
  }
  state.stages = info.stages;
  const slider = $("stage");
  slider.max = String(info.stages.length - 1);
  slider.value = String(Math.max(0, info.stages.findIndex((s) => s.name === info.default)));
  slider.disabled = info.stages.length < 2;
  showStageLabel();
  $("max-new-tokens").max = String(info.limits.max_new_tokens);
  $("temperature").max = String(info.limits.max_temperature);
  $("prompt").maxLength = info.limits.max_prompt_chars;
  showModel(info.model);

  $("generate").addEventListener("click", generate);
  $("stop").addEventListener("click", () => stopStream("stopped"));
  slider.addEventListener("input", showStageLabel);
  slider.addEventListener("change", () => {
    if (state.ids.length) generate(); // replay the same prompt and seed at the new stage
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) generate(); // Ctrl+Enter
  });
  $("layer").addEventListener("change", () => select(state.selected));
  $("head").addEventListener("change", () => select(state.selected));
  $("heatmap").addEventListener("mousemove", heatmapTooltip);
}

function currentStage() {
  return state.stages[Number($("stage").value)];
}

function showStageLabel() {
  $("stage-label").textContent = currentStage() ? currentStage().label : "";
}

function showModel(model) {
  state.model = model;
  $("facts").textContent = model.n_layer
    ? `GPT: ${model.n_layer} layers × ${model.n_head} heads, ${model.d_model} wide, ` +
      `${model.params.toLocaleString()} parameters; context ${model.block_size} tokens; ` +
      `vocabulary ${model.vocab_size} (${model.tokenizer} tokenizer)`
    : `Bigram model: the next token depends on the last one only; vocabulary ${model.vocab_size}`;
  fillSelect($("layer"), model.n_layer);
  fillSelect($("head"), model.n_head);
}

function fillSelect(select, n) {
  if (select.options.length === n) return; // keep the choice made
  select.replaceChildren();
  for (let i = 0; i < n; i++) select.add(new Option(String(i), String(i)));
}

// --- generating: one EventSource, one span per token ------------------------------------------------------------

function generate() {
  stopStream();
  const stage = currentStage();
  const settings = {
    prompt: $("prompt").value,
    stage: stage ? stage.name : ".",
    temperature: $("temperature").value,
    top_k: $("top-k").value, // empty: off
    top_p: $("top-p").value,
    max_new_tokens: $("max-new-tokens").value,
    seed: $("seed").value,
  };
  const url = "/api/generate?" + new URLSearchParams(settings);
  Object.assign(state, { stage: settings.stage, ids: [], tops: {}, promptLength: 0, selected: null });
  $("output").replaceChildren();
  clearInspector();
  setStatus("generating…");
  $("stop").disabled = false;

  const source = new EventSource(url);
  state.source = source;
  let generated = 0;

  source.addEventListener("start", (event) => {
    const start = JSON.parse(event.data);
    showModel(start.model);
    state.promptLength = start.ids.length;
    start.ids.forEach((id, i) => addToken(id, start.tokens[i], "prompt"));
  });

  source.addEventListener("token", (event) => {
    const token = JSON.parse(event.data);
    state.tops[token.index] = { top: token.top, p: token.p };
    addToken(token.id, token.text, "generated");
    generated += 1;
    setStatus(`generating… ${generated} / ${settings.max_new_tokens} tokens`);
  });

  source.addEventListener("done", (event) => {
    const done = JSON.parse(event.data);
    stopStream(`${done.tokens} tokens in ${done.seconds} s, with the model at ${stage ? stage.label : "?"}`);
  });

  // "error" is both an event the server sends (with a message) and what EventSource reports when the
  // connection fails. A request the server refused (HTTP 400) is the second kind, without the reason:
  // ask again with fetch, which can read the reason.
  source.addEventListener("error", async (event) => {
    if (state.source !== source) return;
    if (event.data) {
      stopStream();
      showError(JSON.parse(event.data).error);
    } else if (source.readyState === EventSource.CLOSED) {
      stopStream();
      showError(await reasonOfFailure(url));
    }
  });
}

// Close the stream (the server then stops generating) and say why.
function stopStream(message) {
  if (state.source) state.source.close();
  state.source = null;
  $("stop").disabled = true;
  if (message) setStatus(message);
}

async function reasonOfFailure(url) {
  const abort = new AbortController();
  try {
    const response = await fetch(url, { signal: abort.signal });
    if (!response.ok) return (await response.json()).error;
    return "the connection to the server was lost";
  } catch (err) {
    return "the server does not answer: is `python src/playground.py` still running?";
  } finally {
    abort.abort(); // if it did start generating after all, stop it
  }
}

// A token as a box in the text. `text` is what it adds to the text; a new line shows as ↵.
function addToken(id, text, kind) {
  const index = state.ids.length;
  state.ids.push(id);
  const span = document.createElement("span");
  span.className = `token ${kind}`;
  span.dataset.index = String(index);
  span.textContent = text === "" ? "▯" : text.replaceAll("\n", "↵\n");
  span.title = text === "" ? `token ${index} (id ${id}): the first bytes of a character` : `token ${index} (id ${id})`;
  span.addEventListener("click", () => select(index));
  $("output").append(span);
}

function setStatus(text) {
  $("status").textContent = text;
  $("status").classList.remove("error");
}

function showError(text) {
  $("status").textContent = `error: ${text}`;
  $("status").classList.add("error");
}

// --- looking inside: the clicked token's probabilities and attention --------------------------------------------

function clearInspector() {
  $("caption").textContent = "Click a token in the text.";
  $("probs").replaceChildren();
  $("row").replaceChildren();
  const canvas = $("heatmap");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
}

// Token `index` was predicted at position index - 1 (the token before it), from the tokens up to there.
async function select(index) {
  if (index === null || index === undefined) return;
  state.selected = index;
  document.querySelectorAll(".token.selected").forEach((el) => el.classList.remove("selected"));
  document.querySelector(`.token[data-index="${index}"]`).classList.add("selected");
  if (index === 0) {
    clearInspector();
    $("caption").textContent = "The first token has nothing before it: the model did not predict it.";
    return;
  }
  const position = index - 1;
  const chosen = state.ids[index];
  const request = ++state.request;
  const response = await fetch("/api/inspect", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      stage: state.stage, ids: state.ids.slice(0, index), position,
      // the whole attention matrix of this layer and head, for the heatmap (a bigram model has none)
      ...(state.model.n_layer ? { layer: Number($("layer").value), head: Number($("head").value) } : {}),
    }),
  });
  const result = await response.json();
  if (request !== state.request) return; // another token was clicked meanwhile
  if (!response.ok) {
    showError(result.error);
    return;
  }
  const kind = index < state.promptLength ? "your prompt's" : "the generated";
  const seen = result.tokens.length;
  $("caption").textContent =
    `Token ${index} (${kind} “${visible(tokenTextOf(index))}”) was predicted ` +
    `at position ${position}, the token before it, looking at the ${seen} token${seen > 1 ? "s" : ""} up to there` +
    (result.start > 0 ? ` (the model's context holds ${seen}: it cannot see further back)` : "") + ".";
  // A generated token: the probabilities the stream sent, those that produced it. A prompt token: what the
  // model would have predicted there (the same forward pass, recomputed).
  const fromStream = state.tops[index];
  drawBars(fromStream ? fromStream.top : result.top, chosen, fromStream ? fromStream.p : null);
  drawHeatmap(result.matrix || [], seen - 1, result.tokens, result.start);
  drawRow(result);
}

function tokenTextOf(index) {
  const span = document.querySelector(`.token[data-index="${index}"]`);
  return span ? span.textContent : "";
}

// Spaces and new lines made visible, for labels.
function visible(text) {
  return text.replaceAll("↵\n", "↵").replaceAll("\n", "↵").replaceAll(" ", "␣");
}

// Ten horizontal bars: the width of each is its probability (a full row = 100%).
function drawBars(top, chosen, chosenP) {
  const probs = $("probs");
  probs.replaceChildren();
  for (const entry of top) {
    const bar = document.createElement("div");
    bar.className = entry.id === chosen ? "bar chosen" : "bar";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = visible(entry.text) || "▯";
    label.title = `id ${entry.id}`;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${(entry.p * 100).toFixed(2)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = `${(entry.p * 100).toFixed(1)}%`;
    bar.append(label, track, value);
    probs.append(bar);
  }
  if (!top.some((entry) => entry.id === chosen)) {
    const note = document.createElement("p");
    note.className = "note";
    note.textContent = chosenP === null
      ? "The actual next token is not among the 10 likeliest."
      : `The chosen token is not among the 10 likeliest: it had ${(chosenP * 100).toFixed(2)}%.`;
    probs.append(note);
  }
}

// The attention matrix of one head as a heatmap: row i = where position i looks, column j = the position
// looked at. `matrix[i]` holds i + 1 weights (positions 0..i); the rest of the row is the future.
// With few enough tokens, each row and column is labelled with its token (left and top margins).
function drawHeatmap(matrix, queryRow, tokens, start) {
  const canvas = $("heatmap");
  const ctx = canvas.getContext("2d");
  const size = canvas.width;
  const n = matrix.length;
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, size, size);
  if (n === 0) {
    state.heatmap = null;
    ctx.fillStyle = "#555";
    ctx.font = "14px sans-serif";
    ctx.fillText("This model has no attention (a bigram model).", 10, 24);
    return;
  }
  const margin = n <= 48 ? 22 : 0; // room for labels, when the cells are big enough to read them
  const cell = (size - margin) / n;
  state.heatmap = { matrix, n, margin, cell, start }; // for the tooltip
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      if (j > i) {
        ctx.fillStyle = "#e6e6e6"; // the future: masked, always 0
      } else {
        const shade = Math.sqrt(matrix[i][j]); // 0 -> white, 1 -> dark blue
        ctx.fillStyle = `rgb(${255 - 225 * shade}, ${255 - 185 * shade}, ${255 - 95 * shade})`;
      }
      ctx.fillRect(margin + j * cell, margin + i * cell, Math.ceil(cell), Math.ceil(cell));
    }
  }
  if (margin) {
    ctx.fillStyle = "#333";
    ctx.font = `${Math.min(12, Math.floor(cell) - 1)}px monospace`;
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    tokens.forEach((text, k) => {
      const label = visible(text) || "▯";
      ctx.fillText(label, margin / 2, margin + (k + 0.5) * cell, margin - 2); // row k: the position looking
      ctx.fillText(label, margin + (k + 0.5) * cell, margin / 2, cell - 1); // column k: the position looked at
    });
  }
  ctx.strokeStyle = "#e8590c"; // the row of the position that predicted the clicked token
  ctx.lineWidth = 2;
  ctx.strokeRect(margin + 1, margin + queryRow * cell + 1, size - margin - 2, Math.max(cell - 2, 2));
}

function heatmapTooltip(event) {
  const map = state.heatmap;
  const canvas = $("heatmap");
  if (!map) return;
  const box = canvas.getBoundingClientRect();
  const scale = canvas.width / box.width; // CSS pixels -> canvas pixels
  const i = Math.floor(((event.clientY - box.top) * scale - map.margin) / map.cell);
  const j = Math.floor(((event.clientX - box.left) * scale - map.margin) / map.cell);
  const [from, to] = [map.start + i, map.start + j]; // positions in the whole text
  if (i < 0 || j < 0 || i >= map.n || j >= map.n) canvas.title = "";
  else if (j > i) canvas.title = `position ${from} cannot see position ${to} (the future)`;
  else canvas.title = `position ${from} looks at position ${to}: ${(map.matrix[i][j] * 100).toFixed(1)}%`;
}

// The outlined row again, over the text: each token of the context shaded by how much the position looks at it.
function drawRow(result) {
  const row = $("row");
  row.replaceChildren();
  const layer = Number($("layer").value || 0);
  const head = Number($("head").value || 0);
  const weights = result.attention.length ? result.attention[layer][head] : [];
  result.tokens.forEach((text, j) => {
    const span = document.createElement("span");
    const w = weights.length ? weights[j] : 0;
    span.textContent = text === "" ? "▯" : text.replaceAll("\n", "↵");
    span.style.backgroundColor = `rgba(30, 70, 160, ${Math.sqrt(w).toFixed(3)})`;
    span.style.color = w > 0.3 ? "#fff" : "#222";
    span.title = `position ${result.start + j}: ${(w * 100).toFixed(1)}%`;
    if (j === result.tokens.length - 1) span.className = "query";
    row.append(span);
  });
}

init();
