// partsearch web page: query -> /api/search (or /api/search/tracks) -> grid; click ->
// /api/images/{id}/explain (and, for a track, the video frame of its best crop).
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

function clock(seconds) {
  // 83.4 -> "1:23.4"
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${(seconds - 60 * minutes).toFixed(1).padStart(4, "0")}`;
}

function card(label, imageUrl, alt, weak, lines, onOpen) {
  const node = document.createElement("div");
  node.className = weak ? "card weak" : "card";
  node.tabIndex = 0;
  node.setAttribute("role", "button");
  node.setAttribute("aria-label", label);
  const img = document.createElement("img");
  img.src = imageUrl;
  img.alt = alt;
  node.appendChild(img);
  for (const [cls, text, title] of lines) {
    if (cls === "bar") {
      node.appendChild(bar(text, scoreMax));
      continue;
    }
    const line = document.createElement("div");
    line.className = cls;
    line.textContent = text;
    if (title) line.title = title;
    node.appendChild(line);
  }
  node.addEventListener("click", () => onOpen(node));
  node.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      onOpen(node);
    }
  });
  return node;
}

function clearResults(body) {
  // Bars are absolute: the score's share of its largest possible value (the sum of the level
  // weights, 3 by default), never relative to the first result. Returns the match threshold.
  $("results").replaceChildren();
  scoreMax = body.score_max || 3;
  return typeof body.match_threshold === "number" ? body.match_threshold : null;
}

function thresholdMeaning(body) {
  // What the answer's match threshold is (`match_rule`): in footage, standing out from this gallery
  // for this sentence; otherwise the model's, from its validation split.
  return body.match_rule === "gallery"
    ? "where a score stands out from this gallery for this sentence (its median + 1 robust sd)"
    : "where matching and non-matching pairs part on the model's validation split";
}

// When a track was seen: "0:03–0:14", or each visit of a person who left and came back
// ("0:00–0:14, 0:36–1:19").
function seen(t, dash = "–") {
  const spans = t.visits && t.visits.length > 1 ? t.visits : [[t.start, t.end]];
  return spans.map(([a, b]) => `${clock(a)}${dash}${clock(b)}`).join(", ");
}

function renderTracks(body) {
  const grid = $("results");
  const threshold = clearResults(body);
  for (const t of body.results) {
    const b = t.best;
    const weak = threshold !== null && b.score < threshold;
    const video = t.video.split("/").pop();
    grid.appendChild(card(
      `rank ${t.rank}, ${video} track ${t.track}, seen ${seen(t, " to ")}, score ` +
        `${t.score.toFixed(3)}${weak ? ", weak match" : ""}; show why`,
      b.url, `${video} track ${t.track}, best crop`, weak,
      [["rank", `#${t.rank}  ${t.score.toFixed(3)}`], ["bar", t.score],
       ["name", `${t.camera} · ${video}`, t.video], ["when", `${seen(t)} · ${t.crops} crops`],
       // the wall-clock span when the camera's start is known: "08:00:42–08:01:19"
       ...(t.start_wall_time && t.end_wall_time
         ? [["when", `${t.start_wall_time.slice(11, 19)}–${t.end_wall_time.slice(11, 19)}`,
             `${t.start_wall_time} to ${t.end_wall_time}`]] : []),
       ["name", `track ${t.track} · best ${clock(b.time)}`]],
      (node) => showDetail(b.id, node, t)));
  }
  const note = body.truncated ? " (query truncated at the tokenizer limit)" : "";
  let text = `${body.results.length} tracks for ${describeQuery(body)}${note}`;
  if (threshold !== null && body.results.length && body.results[0].best.score < threshold) {
    text += `. No track is a good match: its best crop scores below ${threshold.toFixed(3)}, ${thresholdMeaning(body)}.`;
  }
  setStatus(text, false);
  $("weak-note").hidden = false;
  const how = {"max": "highest", "mean-top3": "mean of the three best"}[body.aggregate] || body.aggregate;
  $("weak-note").textContent = `A track is one person followed through a video; its score is the ${how} ` +
    `of its crops' scores (each from −${scoreMax} to +${scoreMax}), and the picture its best crop. ` +
    "Open a track for the frame it was seen in." + (threshold === null ? ""
      : ` Dimmed cards: the best crop scores below ${threshold.toFixed(3)}, ${thresholdMeaning(body)}.`);
}

function renderResults(body) {
  const grid = $("results");
  const threshold = clearResults(body);
  for (const r of body.results) {
    const weak = threshold !== null && r.score < threshold;
    const lines = [["rank", `#${r.rank}  ${r.score.toFixed(3)}`], ["bar", r.score], ["name", r.name, r.relpath]];
    if (r.video) lines.push(["when", whereLine(r.video)]);
    const node = card(`rank ${r.rank}, ${r.name}, score ${r.score.toFixed(3)}${weak ? ", weak match" : ""}; show why`,
      r.url, r.name, weak, lines, (n) => showDetail(r.id, n, null, r));
    node.dataset.id = r.id;
    grid.appendChild(node);
  }
  const note = body.truncated ? " (query truncated at the tokenizer limit)" : "";
  let text = `${body.results.length} results for ${describeQuery(body)}${note}`;
  if (threshold !== null && body.results.length && body.results[0].score < threshold) {
    text += `. No result is a good match: the best score, ${body.results[0].score.toFixed(3)}, is below ` +
      `${threshold.toFixed(3)}, ${thresholdMeaning(body)}.`;
  }
  setStatus(text, false);
  $("weak-note").hidden = false;
  $("weak-note").textContent = `Scores run from −${scoreMax} to +${scoreMax} (the global, coarse and fine cosines, ` +
    "each weighted by the level weights the model chose); a bar is the score's share of the top. " + (threshold === null
      ? "No match threshold is known for this model."
      : `Dimmed cards score below ${threshold.toFixed(3)}, ${thresholdMeaning(body)}.`);
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

function mapTile(label, src, score, relative) {
  // A part's bar is its score relative to the gallery for this query, in the parts' typical standard
  // deviation there (+3 fills it; search/explain.py): a part that matches better than most people's reads positive, one that does not, negative.
  const tile = document.createElement("figure");
  tile.className = "map";
  tile.style.margin = "0";
  const img = document.createElement("img");
  img.src = src;
  img.alt = label;
  const caption = document.createElement("figcaption");
  caption.className = "label";
  const sd = relative === undefined ? "" : ` (${relative >= 0 ? "+" : ""}${relative.toFixed(1)} sd)`;
  caption.textContent = score === undefined ? label : `${label} ${score.toFixed(3)}${sd}`;
  caption.title = "the part's cosine with the sentence; in brackets, how far above or below the gallery's mean " +
    "for this sentence it is, in the parts' typical standard deviation over the gallery";
  tile.append(img, caption);
  if (score !== undefined) tile.appendChild(relative === undefined ? bar(score, 1) : bar(relative / 3, 1));
  return tile;
}

function showFrame(track) {
  // The frame the best crop was cut from, re-read from the video by the server, with its box.
  const view = $("frame-view");
  view.hidden = !track;
  if (!track) {
    $("frame-video").pause();
    return;
  }
  const b = track.best;
  $("frame-caption").textContent = `camera ${track.camera}, ${track.video}, frame ${b.frame} at ${clock(b.time)}` +
    (b.wall_time ? ` (${b.wall_time})` : "") + "; " +
    `track ${track.track} seen ${seen(track)}`;
  $("frame-image").hidden = false;
  $("frame-image").onerror = () => {
    $("frame-image").hidden = true;
    $("frame-caption").textContent += " (the frame cannot be read from the video: it moved or is unreadable)";
  };
  $("frame-image").src = b.frame_url;
  showVideo(track);
}

function showVideo(track) {
  // When this browser can play the video's format (most play MP4 and WebM, few AVI or MKV), a
  // button swaps the frame for the video, playing from the best crop's time; the server answers
  // range requests, so seeking does not download the whole file first.
  const b = track.best;
  const video = $("frame-video");
  const button = $("play-video");
  const note = $("video-note");
  const name = track.video.split("/").pop();
  video.pause();
  video.removeAttribute("src");
  video.hidden = true;
  button.hidden = true;
  note.hidden = true;
  const cannot = (why) => {
    video.hidden = true;
    button.hidden = true;
    $("frame-image").hidden = false;
    note.hidden = false;
    note.replaceChildren(`${why}; the frame above shows where the person was at ${clock(b.time)}. `);
    const link = document.createElement("a");
    link.href = b.video_url;
    link.download = name;
    link.textContent = `download ${name}`;
    note.append(link, ` and play it from ${clock(b.time)} in a video player.`);
  };
  if (!b.video_url) return;
  if (!video.canPlayType(b.video_type || "")) {
    cannot(`This browser cannot play ${name} (${b.video_type})`);
    return;
  }
  button.textContent = `▶ play ${name} from ${clock(b.time)}`;
  button.hidden = false;
  button.onclick = () => {
    button.hidden = true;
    $("frame-image").hidden = true;
    video.hidden = false;
    video.setAttribute("aria-label", `${name} from ${clock(b.time)}`);
    video.onloadedmetadata = () => {
      video.currentTime = b.time;
      video.play().catch(() => {});
    };
    video.onerror = () => cannot(`This browser could not play ${name}`);
    video.preload = "metadata";  // nothing is fetched before the click
    video.src = b.video_url;
    video.focus();
  };
}

async function showDetail(id, card, track, result) {
  document.querySelectorAll(".card.selected").forEach((c) => c.classList.remove("selected"));
  card.classList.add("selected");
  openedFrom = card;
  opened(id, track, result);
  if (!lastQuery.trim() && result) {
    showImageQueryDetail(result, track);  // no text to explain: the result's own part scores
    return;
  }
  try {
    const e = await fetchJSON(`/api/images/${id}/explain?query=${encodeURIComponent(lastQuery)}`);
    $("detail-title").textContent = track ? `${track.video.split("/").pop()}, track ${track.track}` : e.name;
    $("detail-score").textContent = (track ? `best crop ${e.name}: ` : "") +
      `score ${e.score.toFixed(3)} of at most ${scoreMax} for “${e.query}”`;
    showFrame(track || trackOf(result));
    $("levels").replaceChildren(
      scoreRow("global", e.levels.global), scoreRow("coarse (mean)", e.levels.coarse),
      scoreRow("fine (mean)", e.levels.fine));
    $("maps").replaceChildren(
      mapTile("foreground", e.foreground),
      ...e.fine.map((p) => mapTile(p.region || `part ${p.part + 1}`, p.overlay, p.score, p.relative)));
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
  $("frame-video").pause();
  if (openedFrom && openedFrom.isConnected) openedFrom.focus();
}

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  lastQuery = $("query").value;
  showGrid();
  const topKText = $("top-k").value.trim();
  const topK = Number(topKText);
  if (!/^[0-9]+$/.test(topKText) || topK < 1 || topK > 1000) {
    setStatus("top: enter a whole number from 1 to 1000", true);
    $("top-k").focus();
    return;
  }
  setStatus("searching…", false);
  $("detail").hidden = true;
  $("frame-video").pause();
  const tracks = $("tracks").checked && !imageQuery();
  try {
    const body = tracks ? await fetchJSON("/api/search/tracks", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ query: lastQuery, top_k: topK, filters: searchFilters() }),
    }) : await cropSearch(lastQuery, topK);
    lastQuery = body.query;  // the text searched, without the filter words taken from it
    (tracks ? renderTracks : renderResults)(body);
  } catch (err) {
    $("results").replaceChildren();
    setStatus(err.message, true);
  }
});

// The tracks switch appears only for an index of video crops, and is on by default there.
fetchJSON("/healthz").then((health) => {
  if (health.tracks > 0) {
    $("tracks-toggle").hidden = false;
    $("tracks").checked = true;
  }
}).catch(() => {});

$("close-detail").addEventListener("click", closeDetail);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") closeDetail();
});
