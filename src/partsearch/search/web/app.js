// partsearch web page: query -> /api/search -> grid; click -> /api/images/{id}/explain.
"use strict";

const $ = (id) => document.getElementById(id);
let lastQuery = "";
let scoreMax = 3;
let openedFrom = null;  // the card whose explanation is shown, to give focus back on close

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
  // Bars are absolute: the score's share of its largest possible value (the sum of the level
  // weights, 3 by default), never relative to the first result.
  scoreMax = body.score_max || 3;
  const threshold = typeof body.match_threshold === "number" ? body.match_threshold : null;
  for (const r of body.results) {
    const card = document.createElement("div");
    const weak = threshold !== null && r.score < threshold;
    card.className = weak ? "card weak" : "card";
    card.dataset.id = r.id;
    card.tabIndex = 0;
    card.setAttribute("role", "button");
    card.setAttribute("aria-label", `rank ${r.rank}, ${r.name}, score ${r.score.toFixed(3)}${weak ? ", weak match" : ""}; show why`);
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
    card.append(img, rank, bar(r.score, scoreMax), name);
    card.addEventListener("click", () => showDetail(r.id, card));
    card.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        showDetail(r.id, card);
      }
    });
    grid.appendChild(card);
  }
  const note = body.truncated ? " (query truncated at the tokenizer limit)" : "";
  let text = `${body.results.length} results for “${body.query}”${note}`;
  if (threshold !== null && body.results.length && body.results[0].score < threshold) {
    text += `. No result is a good match: the best score, ${body.results[0].score.toFixed(3)}, is below ` +
      `${threshold.toFixed(3)}, where matching and non-matching pairs part on the validation split.`;
  }
  setStatus(text, false);
  $("weak-note").hidden = false;
  $("weak-note").textContent = `Scores run from −${scoreMax} to +${scoreMax} (a sum of three cosines: ` +
    "global, coarse, fine); a bar is the score's share of the top. " + (threshold === null
      ? "No match threshold is known for this model."
      : `Dimmed cards score below ${threshold.toFixed(3)}, the validation split's match threshold.`);
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
  openedFrom = card;
  try {
    const e = await fetchJSON(`/api/images/${id}/explain?query=${encodeURIComponent(lastQuery)}`);
    $("detail-title").textContent = e.name;
    $("detail-score").textContent = `score ${e.score.toFixed(3)} of at most ${scoreMax} for “${e.query}”`;
    $("levels").replaceChildren(
      scoreRow("global", e.levels.global), scoreRow("coarse (mean)", e.levels.coarse),
      scoreRow("fine (mean)", e.levels.fine));
    $("maps").replaceChildren(
      mapTile("foreground", e.foreground),
      ...e.fine.map((p) => mapTile(p.region || `part ${p.part + 1}`, p.overlay, p.score)));
    $("coarse").replaceChildren(...e.coarse.map((v, j) => scoreRow(`token ${j + 1}`, v)));
    $("detail").hidden = false;
    // The panel stays in view (sticky beside the grid, or a full-screen sheet on a phone); focus
    // moves into it so the keyboard and screen readers follow.
    $("close-detail").focus({ preventScroll: true });
  } catch (err) {
    setStatus(`explanation failed: ${err.message}`, true);
  }
}

function closeDetail() {
  if ($("detail").hidden) return;
  $("detail").hidden = true;
  if (openedFrom && openedFrom.isConnected) openedFrom.focus();
}

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  lastQuery = $("query").value;
  const topKText = $("top-k").value.trim();
  const topK = Number(topKText);
  if (!/^[0-9]+$/.test(topKText) || topK < 1 || topK > 1000) {
    setStatus("top: enter a whole number from 1 to 1000", true);
    $("top-k").focus();
    return;
  }
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

$("close-detail").addEventListener("click", closeDetail);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") closeDetail();
});
