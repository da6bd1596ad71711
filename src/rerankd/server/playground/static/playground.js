// The rerankd playground: sends the form as a Cohere-shaped POST /rerank and draws the answer.
// Plain browser JavaScript, no dependencies, so it runs offline; user text only ever goes through
// textContent, never innerHTML.
"use strict";

const KEY_STORAGE = "rerankd.apiKey";
// Fields the cohere SDK's ClientV2.rerank takes as arguments; the others travel as extra body fields.
const COHERE_ARGUMENTS = ["model", "query", "documents", "top_n", "max_tokens_per_doc"];
// Characters of a long document shown on each side of its highlighted chunk.
const CONTEXT_CHARS = 200;

const $ = (id) => document.getElementById(id);
let servedModels = [];
let modelKinds = {}; // name -> cross-encoder, qwen3-reranker or flag-llm-reranker
let lastBody = null;
let keyPrompt = null;

// API paths relative to the page, so a proxy's prefix (<prefix>/playground -> <prefix>/rerank) carries over.
const apiUrl = (path) => new URL(path, document.baseURI).href;
const apiKey = () => sessionStorage.getItem(KEY_STORAGE);

function requestHeaders(withBody) {
  const headers = withBody ? { "Content-Type": "application/json" } : {};
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

// One prompt at a time, however many requests were refused; null when the user cancels.
function askForKey() {
  if (keyPrompt) return keyPrompt;
  const dialog = $("key-dialog");
  $("api-key").value = "";
  dialog.returnValue = "";
  keyPrompt = new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const key = $("api-key").value.trim();
      keyPrompt = null;
      if (dialog.returnValue === "save" && key) {
        sessionStorage.setItem(KEY_STORAGE, key);
        resolve(key);
      } else {
        resolve(null);
      }
    }, { once: true });
  });
  dialog.showModal();
  return keyPrompt;
}

// fetch, asking for the API key while the server answers 401; a cancelled prompt returns the 401.
async function call(path, init = {}) {
  for (;;) {
    const response = await fetch(apiUrl(path), { ...init, headers: requestHeaders(init.body !== undefined) });
    if (response.status !== 401 || (await askForKey()) === null) return response;
  }
}

// The server's own message from any dialect's error body, else the status line.
async function errorMessage(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    const text = body.message ?? body.detail ?? (typeof body.error === "string" ? body.error : body.error?.message);
    if (typeof text === "string" && text) message = text;
  } catch {
    // Not JSON (a proxy's page, say): the status line says enough.
  }
  const retryAfter = response.headers.get("retry-after");
  return `HTTP ${response.status}: ${message}${retryAfter ? ` (retry after ${retryAfter} s)` : ""}`;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

async function loadInfo() {
  const response = await call("info");
  if (!response.ok) {
    showError(await errorMessage(response));
    return;
  }
  const info = await response.json();
  servedModels = info.models.length ? info.models.map((m) => m.name) : [info.model_id];
  modelKinds = Object.fromEntries(info.models.map((m) => [m.name, m.kind]));
  const first = info.models[0];
  const where = first ? ` · ${first.backend} on ${first.device}, ${first.dtype}` : "";
  $("served").textContent = `${servedModels.join(", ")}${where} · up to ${info.max_input_length} tokens per pair`;
  $("fixture-warning").hidden = !info.models.some((m) => m.is_fixture);
  $("truncation").options[0].textContent = `server default (${info.truncation})`;
  const select = $("model");
  select.replaceChildren(...servedModels.map((name) => new Option(name, name)));
  $("model-field").hidden = servedModels.length < 2;
  showInstruction();
}

// Only LLM rerankers take an instruction; a cross-encoder refuses one.
function showInstruction() {
  const kind = modelKinds[$("model").value || servedModels[0]];
  $("instruction-field").hidden = !kind || kind === "cross-encoder";
}

function parseDocuments(text) {
  const trimmed = text.trim();
  if (trimmed.startsWith("[") && trimmed.endsWith("]")) {
    try {
      return JSON.parse(trimmed);
    } catch (error) {
      throw new Error(`Documents: not a valid JSON array (${error.message}); or give one document per line.`);
    }
  }
  return text.split(/\r?\n/).filter((line) => line.trim() !== "");
}

function requestBody() {
  const body = { query: $("query").value, documents: parseDocuments($("documents").value) };
  const model = $("model").value || servedModels[0];
  if (model) body.model = model;
  const topN = $("top-n").value.trim();
  if (topN !== "") body.top_n = Number(topN);
  if ($("truncation").value) body.truncation = $("truncation").value;
  if (!$("instruction-field").hidden && $("instruction").value.trim()) body.instruction = $("instruction").value;
  body.raw_scores = true; // the logit, shown on hover
  return body;
}

function clearOutput() {
  $("error").hidden = true;
  $("warnings").hidden = true;
  $("timing").hidden = true;
  $("results").replaceChildren();
  $("snippet").hidden = true;
  $("copy-status").textContent = "";
}

async function submit(event) {
  event.preventDefault();
  clearOutput();
  let body;
  try {
    body = requestBody();
  } catch (error) {
    showError(error.message);
    return;
  }
  lastBody = body;
  $("copy").hidden = false;
  $("submit").disabled = true;
  $("output").setAttribute("aria-busy", "true");
  try {
    const response = await call("rerank", { method: "POST", body: JSON.stringify(body) }).catch((error) => {
      throw new Error(`The request did not reach the server: ${error.message}`);
    });
    if (!response.ok) {
      showError(await errorMessage(response));
      return;
    }
    const answer = await response.json();
    showTiming(response.headers);
    showResults(answer, body.documents);
    if (!servedModels.length) await loadInfo(); // its key prompt was cancelled at first
  } catch (error) {
    showError(error.message);
  } finally {
    $("submit").disabled = false;
    $("output").removeAttribute("aria-busy");
  }
}

function showTiming(headers) {
  for (const cell of $("timing").querySelectorAll("dd")) {
    const value = headers.get(cell.dataset.header);
    cell.textContent = value === null ? "-" : `${value}${cell.dataset.unit ?? " ms"}`;
  }
  $("timing").hidden = false;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// The highlight's offsets count code points, as Python's do; Array.from splits a string the same way.
// A document that fit in one window is highlighted whole: there is nothing to point at then.
function documentText(text, highlight) {
  const node = element("p", "text");
  const chars = Array.from(text);
  if (!highlight || (highlight.start === 0 && highlight.end >= chars.length)) {
    node.textContent = text;
    return node;
  }
  const { start, end } = highlight;
  const from = Math.max(0, start - CONTEXT_CHARS);
  const to = Math.min(chars.length, end + CONTEXT_CHARS);
  node.append((from > 0 ? "…" : "") + chars.slice(from, start).join(""));
  node.append(element("mark", "", chars.slice(start, end).join("")));
  node.append(chars.slice(end, to).join("") + (to < chars.length ? "…" : ""));
  return node;
}

function showResults(answer, sentDocuments) {
  const warnings = answer.meta?.warnings ?? [];
  $("warnings").textContent = warnings.join(" ");
  $("warnings").hidden = warnings.length === 0;
  const items = answer.results.map((result) => {
    const item = element("li", "result");
    item.dataset.index = result.index;
    const head = element("div", "head");
    head.append(element("span", "index", `document ${result.index}`));
    const score = result.relevance_score;
    const bar = element("span", "bar");
    bar.title = `relevance_score ${score}` + (result.raw_score === undefined ? "" : ` · raw score (logit) ${result.raw_score}`);
    const fill = element("span", "fill");
    fill.style.width = `${(score * 100).toFixed(1)}%`;
    bar.append(fill);
    head.append(bar, element("span", "score", score.toFixed(4)));
    if (result.truncated) {
      const mark = element("span", "badge truncated", "truncated");
      mark.title = "cut to fit the model's max length";
      head.append(mark);
    }
    if (result.chunks > 1) head.append(element("span", "badge", `best of ${result.chunks} chunks`));
    item.append(head);
    const sent = sentDocuments[result.index];
    const returned = result.document ?? (typeof sent === "string" ? { text: sent } : sent);
    const text = typeof returned?.text === "string" ? returned.text : JSON.stringify(returned);
    item.append(documentText(text, result.highlight));
    return item;
  });
  $("results").replaceChildren(...items);
  // A long document's box opens on its highlight, a line below the top (`.text` is the marks' offset parent).
  for (const mark of $("results").querySelectorAll(".text mark")) {
    const firstLine = mark.getClientRects()[0];
    mark.parentElement.scrollTop = Math.max(0, mark.offsetTop - (firstLine ? firstLine.height : 0));
  }
}

// --- copy the request ---------------------------------------------------------------------------

const shellQuote = (text) => `'${text.replaceAll("'", `'\\''`)}'`;

// A JSON value as a Python literal (JSON's string escapes are Python's too).
function python(value) {
  if (value === null || value === undefined) return "None";
  if (typeof value === "boolean") return value ? "True" : "False";
  if (Array.isArray(value)) return `[${value.map(python).join(", ")}]`;
  if (typeof value === "object") {
    return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${python(v)}`).join(", ")}}`;
  }
  return JSON.stringify(value);
}

function curlSnippet(body) {
  const key = apiKey();
  return [
    `curl -sS ${shellQuote(apiUrl("rerank"))}`,
    "-H 'Content-Type: application/json'",
    ...(key ? [`-H ${shellQuote(`Authorization: Bearer ${key}`)}`] : []),
    `-d ${shellQuote(JSON.stringify(body))}`,
  ].join(" \\\n  ");
}

function cohereSnippet(body) {
  const baseUrl = apiUrl("rerank").replace(/\/rerank$/, "");
  const argumentLines = COHERE_ARGUMENTS.filter((name) => name in body).map((name) =>
    name === "documents"
      ? `    documents=[\n${body.documents.map((d) => `        ${python(d)},`).join("\n")}\n    ],`
      : `    ${name}=${python(body[name])},`);
  const extra = Object.fromEntries(Object.entries(body).filter(([name]) => !COHERE_ARGUMENTS.includes(name)));
  if (Object.keys(extra).length) {
    argumentLines.push(`    request_options={"additional_body_parameters": ${python(extra)}},  # rerankd's own fields`);
  }
  return [
    "import cohere",
    "",
    `co = cohere.ClientV2(api_key=${python(apiKey() ?? "unused")}, base_url=${python(baseUrl)})`,
    "response = co.rerank(",
    ...(body.model ? [] : [`    model=${python("any")},  # any name: this server serves one model`]),
    ...argumentLines,
    ")",
    "for result in response.results:",
    "    print(result.index, result.relevance_score)",
  ].join("\n");
}

const SNIPPETS = {
  curl: curlSnippet,
  python: cohereSnippet,
  json: (body) => JSON.stringify(body, null, 2),
};

async function copy(format) {
  const text = SNIPPETS[format](lastBody);
  const shown = $("snippet");
  shown.textContent = text;
  shown.dataset.format = format;
  shown.hidden = false;
  try {
    await navigator.clipboard.writeText(text);
    $("copy-status").textContent = "copied";
  } catch {
    $("copy-status").textContent = "select the text below to copy it";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("request").addEventListener("submit", submit);
  $("model").addEventListener("change", showInstruction);
  $("documents").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("request").requestSubmit();
  });
  for (const button of $("copy").querySelectorAll("button[data-format]")) {
    button.addEventListener("click", () => copy(button.dataset.format));
  }
  $("key-cancel").addEventListener("click", () => $("key-dialog").close("cancel"));
  loadInfo().catch((error) => showError(`Could not read /info: ${error.message}`));
});
