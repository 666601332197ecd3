// partsearch web page: query -> /api/search -> grid; click -> /api/images/{id}/explain.
"use strict";

const $ = (id) => document.getElementById(id);
let lastQuery = "";

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function bar(value, max) {
  // Cosines and scores may be negative; the bar shows the magnitude, red when negative.
  const wrap = document.createElement("div");
  wrap.className = value < 0 ? "bar neg" : "bar";
  const fill = document.createElement("span");
  fill.style.width = `${Math.min(100, (100 * Math.abs(value)) / (max || 1)).toFixed(1)}%`;
  wrap.appendChild(fill);
  return wrap;
}

async function fetchJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail || body);
    throw new Error(detail || `HTTP ${response.status}`);
  }
  return body;
}

function renderResults(body) {
  const grid = $("results");
  grid.replaceChildren();
  const maxScore = Math.max(...body.results.map((r) => Math.abs(r.score)), 1e-6);
  for (const r of body.results) {
    const card = document.createElement("div");
    card.className = "card";
    card.dataset.id = r.id;
    const img = document.createElement("img");
    img.src = r.url;
    img.alt = r.name;
    const rank = document.createElement("div");
    rank.className = "rank";
    rank.textContent = `#${r.rank}  ${r.score.toFixed(3)}`;
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = r.name;
    name.title = r.relpath;
    card.append(img, rank, bar(r.score, maxScore), name);
    card.addEventListener("click", () => showDetail(r.id, card));
    grid.appendChild(card);
  }
  const note = body.truncated ? " (query truncated at the tokenizer limit)" : "";
  setStatus(`${body.results.length} results for “${body.query}”${note}`, false);
}

function scoreRow(label, value) {
  const row = document.createElement("div");
  row.className = "score-row";
  const name = document.createElement("span");
  name.className = "label";
  name.textContent = label;
  const number = document.createElement("span");
  number.textContent = value.toFixed(3);
  row.append(name, bar(value, 1), number);
  return row;
}

function mapTile(label, src, score) {
  const tile = document.createElement("figure");
  tile.className = "map";
  tile.style.margin = "0";
  const img = document.createElement("img");
  img.src = src;
  img.alt = label;
  const caption = document.createElement("figcaption");
  caption.className = "label";
  caption.textContent = score === undefined ? label : `${label} ${score.toFixed(3)}`;
  tile.append(img, caption);
  if (score !== undefined) tile.appendChild(bar(score, 1));
  return tile;
}

async function showDetail(id, card) {
  document.querySelectorAll(".card.selected").forEach((c) => c.classList.remove("selected"));
  card.classList.add("selected");
  try {
    const e = await fetchJSON(`/api/images/${id}/explain?query=${encodeURIComponent(lastQuery)}`);
    $("detail-title").textContent = e.name;
    $("detail-score").textContent = `score ${e.score.toFixed(3)} for “${e.query}”`;
    $("levels").replaceChildren(
      scoreRow("global", e.levels.global), scoreRow("coarse (mean)", e.levels.coarse),
      scoreRow("fine (mean)", e.levels.fine));
    $("maps").replaceChildren(
      mapTile("foreground", e.foreground),
      ...e.fine.map((p) => mapTile(`part ${p.part + 1}`, p.overlay, p.score)));
    $("coarse").replaceChildren(...e.coarse.map((v, j) => scoreRow(`token ${j + 1}`, v)));
    $("detail").hidden = false;
  } catch (err) {
    setStatus(`explanation failed: ${err.message}`, true);
  }
}

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  lastQuery = $("query").value;
  const topK = parseInt($("top-k").value, 10);
  setStatus("searching…", false);
  $("detail").hidden = true;
  try {
    renderResults(await fetchJSON("/api/search", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ query: lastQuery, top_k: topK }),
    }));
  } catch (err) {
    $("results").replaceChildren();
    setStatus(err.message, true);
  }
});

$("close-detail").addEventListener("click", () => { $("detail").hidden = true; });
