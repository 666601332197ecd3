// partsearch web page, the investigation: search by photo or "more like this", filters, a
// person's sightings per camera, decisions kept in a case, and the case's export. Uses the
// helpers of app.js ($, fetchJSON, card, clock, showDetail, scoreRow, mapTile, setStatus).
"use strict";

let likeId = null;       // an indexed image searched by ("more like this")
let openedResult = null; // the result (or sighting) shown in the detail panel
let sightingsOf = null;  // the image id whose sightings are shown

function imageQuery() {
  return likeId !== null || $("photo").files.length > 0;
}

function searchFilters() {
  const f = {};
  const camera = $("f-camera").value.trim();
  if (camera) f.cameras = camera.split(/\s*,\s*/);
  if ($("f-after").value.trim()) f.after = $("f-after").value.trim();
  if ($("f-before").value.trim()) f.before = $("f-before").value.trim();
  if ($("f-min").value.trim()) f.min_score = Number($("f-min").value);
  return Object.keys(f).length ? f : null;
}

async function cropSearch(query, topK) {
  // A text, a photo, an indexed image, or a text with either; the filters apply to all.
  const filters = searchFilters();
  if ($("photo").files.length > 0) {
    const form = new FormData();
    form.append("file", $("photo").files[0]);
    form.append("query", query);
    form.append("top_k", String(topK));
    if (filters) form.append("filters", JSON.stringify(filters));
    return fetchJSON("/api/search/image", { method: "POST", body: form });
  }
  return fetchJSON("/api/search", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ query, top_k: topK, like: likeId, filters }),
  });
}

function describeQuery(body) {
  // “red coat” · like #12 · understood “on camera 2” as camera 2 · filters: ...
  const parts = [];
  if (body.query) parts.push(`“${body.query}”`);
  if (body.image) parts.push(body.image.id !== undefined ? `images like ${body.image.name}` : `the photo ${body.image.upload}`);
  let text = parts.join(" and ") || "the query";
  if (body.text_weight) text += ` (text weight ${body.text_weight})`;
  for (const p of body.parsed || []) text += `; understood “${p.words}” as ${p.means}`;
  if (body.filters) {
    const f = body.filters;
    const shown = [];
    if (f.cameras.length) shown.push(`camera ${f.cameras.join(" or ")}`);
    if (f.videos.length) shown.push(`video ${f.videos.join(" or ")}`);
    if (f.tracks.length) shown.push(`track ${f.tracks.join(" or ")}`);
    if (f.after) shown.push(`after ${f.after}`);
    if (f.before) shown.push(`before ${f.before}`);
    if (f.min_score !== null) shown.push(`score ≥ ${f.min_score}`);
    text += `; filters: ${shown.join(", ")}`;
  }
  return text;
}

function whereLine(v) {
  // "door · 0:00.1 · 08:00:00" (the wall-clock time when the camera's start is known)
  const wall = v.wall_time ? ` · ${v.wall_time.slice(11, 19)}` : "";
  return `${v.camera} · ${clock(v.time)}${wall}`;
}

function trackOf(result) {
  // A crop of a video shown like a track: its frame, and its clip from its time.
  if (!result || !result.video) return null;
  const v = result.video;
  return { video: v.video, track: v.track, start: result.start ?? v.time, end: result.end ?? v.time,
           best: { frame: v.frame, time: v.time, frame_url: v.frame_url, video_url: v.video_url,
                   video_type: v.video_type || "" } };
}

function opened(id, track, result) {
  openedResult = result ? { ...result, id } : { id };
  const video = (result && result.video) || track;
  $("everywhere").hidden = !video;
  $("detail-where").textContent = result && result.video
    ? `camera ${result.video.camera}, ${result.video.video}, frame ${result.video.frame} at ${clock(result.video.time)}` +
      (result.video.wall_time ? ` (${result.video.wall_time})` : "") + `, track ${result.video.track}`
    : "";
}

function showImageQueryDetail(r, track) {
  // An image query has no text to explain: its part scores come with the result.
  $("detail-title").textContent = r.name || `image ${r.id}`;
  $("detail-score").textContent = `score ${r.score.toFixed(3)} of at most ${scoreMax}, image against image`;
  showFrame(track || trackOf(r));
  $("detail").hidden = false;
  if (!r.levels) {  // a sighting: scored as a track, no part scores of its own
    $("levels").replaceChildren();
    $("maps").replaceChildren();
    $("coarse").replaceChildren();
    return;
  }
  $("levels").replaceChildren(scoreRow("global", r.levels.global), scoreRow("coarse (mean)", r.levels.coarse),
    scoreRow("fine (mean)", r.levels.fine));
  $("maps").replaceChildren(...r.parts.fine.map((s, i) => mapTile(r.regions[i] || `part ${i + 1}`, r.url, s)));
  $("coarse").replaceChildren(...r.parts.coarse.map((v, j) => scoreRow(`token ${j + 1}`, v)));
  $("detail").hidden = false;
  $("close-detail").focus({ preventScroll: true });
}

function showGrid() {
  $("sightings").hidden = true;
  $("results").hidden = false;
}

$("more-like").addEventListener("click", () => {
  if (!openedResult) return;
  likeId = openedResult.id;
  $("like-name").textContent = openedResult.name || `#${likeId}`;
  $("like-chip").hidden = false;
  $("photo").value = "";
  $("query").value = "";
  $("tracks").checked = false;
  $("search-form").requestSubmit();
});

$("clear-like").addEventListener("click", () => {
  likeId = null;
  $("like-chip").hidden = true;
});

function caseName() {
  return $("case-name").value.trim() || "case-1";
}

function caseHeaders() {
  return { "Content-Type": "application/json", "X-API-Key": $("api-key").value };
}

async function showSightings(id) {
  sightingsOf = id;
  setStatus("finding this person everywhere…", false);
  try {
    const body = await fetchJSON("/api/sightings", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ id, top_k: 12, case: caseName(), query: lastQuery }),
    });
    renderSightings(body);
  } catch (err) {
    setStatus(`sightings failed: ${err.message}`, true);
  }
}

function renderSightings(body) {
  const byRank = new Map(body.results.map((r) => [r.rank, r]));
  const rows = [];
  for (const [camera, ranks] of Object.entries(body.timeline)) {
    const row = document.createElement("div");
    row.className = "camera-row";
    const title = document.createElement("h3");
    title.textContent = `camera ${camera}`;
    const strip = document.createElement("div");
    strip.className = "strip";
    for (const rank of ranks) strip.appendChild(sightingCard(byRank.get(rank)));
    row.append(title, strip);
    rows.push(row);
  }
  $("sightings").replaceChildren(...rows);
  $("results").hidden = true;
  $("sightings").hidden = false;
  $("detail").hidden = true;
  $("weak-note").hidden = true;
  const found = body.results.filter((r) => r.role === "found").length;
  setStatus(`${found} possible sightings of this person on ${Object.keys(body.timeline).length} cameras, ` +
    `in time order per camera (case ${body.case || "none"}). Mark each as the same person or not; ` +
    "confirmed ones are added to the case and sharpen the search.", false);
}

function sightingCard(s) {
  const when = s.start !== null ? `${clock(s.start)}–${clock(s.end)}` : "";
  const wall = s.wall_time ? ` · ${s.wall_time.slice(11, 19)}` : "";
  const label = s.role === "source" ? "the person you chose" : (s.decision || "found");
  const node = card(`${label}: camera ${s.camera}, track ${s.track}, ${when}`, s.url, `track ${s.track}`, false,
    [["rank", `${label} ${s.score.toFixed(3)}`], ["when", `${when}${wall}`], ["name", `track ${s.track} · ${s.crops} crops`]],
    (n) => showDetail(s.id, n, null, { ...s, name: s.relpath.split("/").pop(), video: s.video ? {
      video: s.video, camera: s.camera, frame: s.frame, time: s.time, wall_time: s.wall_time, box: s.box,
      track: s.track, frame_url: s.frame_url, video_url: s.video_url } : null }));
  node.classList.add(s.role === "source" ? "source" : s.decision || "found");
  node.dataset.id = s.id;
  if (s.role !== "source") {
    const buttons = document.createElement("div");
    buttons.className = "decide";
    for (const [text, decision, cls] of [["same person", "confirmed", "yes"], ["not this person", "rejected", "no"]]) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = cls;
      b.textContent = text;
      b.addEventListener("click", (event) => {
        event.stopPropagation();
        decide(s, decision);
      });
      buttons.appendChild(b);
    }
    node.appendChild(buttons);
  }
  return node;
}

async function decide(s, decision) {
  try {
    const body = await fetchJSON(`/api/cases/${encodeURIComponent(caseName())}/sightings`, {
      method: "POST",
      headers: caseHeaders(),
      body: JSON.stringify({ id: s.id, decision, query: s.query || lastQuery, score: s.score }),
    });
    $("case-status").textContent = `case ${body.name}: ${body.sightings.length} sightings, ` +
      `${body.sightings.filter((x) => x.decision === "confirmed").length} confirmed`;
    await showSightings(sightingsOf);
  } catch (err) {
    setStatus(`could not record the decision: ${err.message}`, true);
  }
}

$("everywhere").addEventListener("click", () => {
  if (openedResult) showSightings(openedResult.id);
});

$("export-case").addEventListener("click", async () => {
  const name = caseName();
  $("case-status").textContent = `exporting case ${name}…`;
  const response = await fetch(`/api/cases/${encodeURIComponent(name)}/export`, { method: "POST", headers: caseHeaders() });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    $("case-status").textContent = `export failed: ${body.detail || response.status}`;
    return;
  }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = `${name}.zip`;
  document.body.appendChild(link);
  link.click();
  link.remove();
  $("case-status").textContent = `case ${name} exported as ${name}.zip`;
});
