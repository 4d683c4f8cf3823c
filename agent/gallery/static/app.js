// thumbdrop gallery: the grid (paged, lazy), the folder tree, search, the large view and the live status bar.
// No build step and no dependencies: plain DOM, fetch, EventSource and IntersectionObserver.
"use strict";

const PAGE = 120;
const csrf = document.querySelector('meta[name="csrf"]').content;
const $ = (id) => document.getElementById(id);
const view = { dir: "", q: "", next: 0, loading: false, items: [], paths: new Set(), generation: 0 };
let status = { state: "offline", agent: false };

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}

async function post(path, body = {}) {
  const resp = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body),
  });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(data.error || resp.statusText);
  return data.result;
}

// --- the grid ------------------------------------------------------------------------------------------

function tile(item) {
  const img = el("img", { src: item.thumb, alt: item.name, loading: "lazy", decoding: "async" });
  const fig = el("figure", { class: "tile" + (item.video ? " video" : ""), dataset: { path: item.path }, title: item.path,
    tabindex: "0", role: "button" }, img, el("figcaption", {}, item.name));
  fig.addEventListener("click", () => openViewer(item));
  fig.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openViewer(item); } });
  return fig;
}

function appendItems(items) {
  const grid = $("grid");
  let last = grid.dataset.lastDate || "";
  const frag = document.createDocumentFragment();
  for (const item of items) {
    if (view.paths.has(item.path)) continue;
    view.paths.add(item.path);
    view.items.push(item);
    if (item.date !== last) {
      frag.append(el("h2", { class: "group", dataset: { date: item.date } }, item.date));
      last = item.date;
    }
    frag.append(tile(item));
  }
  grid.dataset.lastDate = last;
  grid.append(frag);
  $("empty").hidden = view.items.length > 0 || $("folders").childElementCount > 0;
}

function rebuildGrid() {
  const items = view.items;
  view.items = [];
  view.paths = new Set();
  $("grid").replaceChildren();
  $("grid").dataset.lastDate = "";
  appendItems(items);
}

function renderCrumbs(crumbs) {
  $("crumbs").replaceChildren(...crumbs.map((c) =>
    el("li", {}, el("a", { dataset: { path: c.path }, onclick: () => go(c.path) }, c.name))));
}

function renderFolders(folders) {
  $("folders").replaceChildren(...folders.map((f) =>
    el("div", { class: "folder", dataset: { path: f.path }, onclick: () => go(f.path) },
      el("img", { src: f.cover, alt: "", loading: "lazy" }),
      el("span", {}, `${f.name} (${f.count})`))));
}

async function loadMore() {
  if (view.loading || view.next === null) return;
  view.loading = true;
  const generation = view.generation;
  try {
    const params = new URLSearchParams({ dir: view.dir, q: view.q, offset: view.next, limit: PAGE });
    const resp = await fetch("/api/list?" + params, { credentials: "same-origin" });
    if (!resp.ok) throw new Error((await resp.json().catch(() => ({}))).error || resp.statusText);
    const page = await resp.json();
    if (generation !== view.generation) return; // the folder or search changed meanwhile
    if (page.offset === 0) {
      renderCrumbs(page.crumbs);
      renderFolders(page.folders);
    }
    appendItems(page.items);
    view.next = page.next;
    document.body.dataset.total = page.total;
  } catch (err) {
    toast("Could not load the thumbnails: " + err.message);
  } finally {
    view.loading = false;
  }
  // Still room on screen: the observer will not fire again by itself.
  if (generation === view.generation && view.next !== null && $("more").getBoundingClientRect().top < innerHeight * 2) loadMore();
}

function reset() {
  view.generation += 1;
  view.next = 0;
  view.items = [];
  view.paths = new Set();
  view.loading = false;
  $("grid").replaceChildren();
  $("grid").dataset.lastDate = "";
  loadMore();
}

function go(dir) {
  view.dir = dir;
  view.q = "";
  $("search").value = "";
  history.replaceState(null, "", dir ? "#" + encodeURIComponent(dir) : location.pathname);
  reset();
}

function shows(item) {
  if (view.q) return item.name.toLowerCase().includes(view.q.toLowerCase()) && (view.dir === "" || item.path.startsWith(view.dir + "/"));
  return item.folder === view.dir;
}

function addNew(item) {
  if (view.paths.has(item.path)) return;
  if (!shows(item)) {
    // A new subfolder (or one more in it): the folder list changes.
    if (!view.q && (view.dir === "" || item.path.startsWith(view.dir + "/"))) refreshFolders();
    return;
  }
  const at = view.items.findIndex((i) => i.taken < item.taken);
  if (at === -1 && view.next !== null) return; // older than everything loaded: it comes with a later page
  view.items.splice(at === -1 ? view.items.length : at, 0, item);
  rebuildGrid();
  const t = document.querySelector(`.tile[data-path="${CSS.escape(item.path)}"]`);
  if (t) t.classList.add("new");
}

async function refreshFolders() {
  const params = new URLSearchParams({ dir: view.dir, q: "", offset: 0, limit: 1 });
  const resp = await fetch("/api/list?" + params, { credentials: "same-origin" });
  if (resp.ok) renderFolders((await resp.json()).folders);
}

// --- the large view ---------------------------------------------------------------------------------

function openViewer(item) {
  const img = $("viewer-img");
  const video = $("viewer-video");
  if (item.video) {
    img.hidden = true;
    img.removeAttribute("src");
    video.hidden = false;
    video.poster = item.large;
    video.src = item.video;
  } else {
    video.hidden = true;
    video.removeAttribute("src");
    img.hidden = false;
    // The original may have been moved or deleted since the listing: fall back to the thumbnail.
    img.onerror = () => { img.onerror = null; img.src = item.thumb; };
    img.src = item.large;
    img.alt = item.name;
  }
  $("viewer-caption").textContent = item.path + (item.original ? " (original)" : "");
  $("viewer").hidden = false;
}

function closeViewer() {
  $("viewer").hidden = true;
  $("viewer-video").pause();
}

// --- the status bar ---------------------------------------------------------------------------------

function queuesText(queues) {
  if (!queues || queues.error) return queues && queues.error ? "queues: unknown" : "";
  return Object.entries(queues).filter(([, q]) => q && typeof q === "object")
    .map(([name, q]) => `${name}: ${q.visible} waiting, ${q.in_flight} in flight` + (q.dead_letter ? `, ${q.dead_letter} dead` : ""))
    .join(" · ");
}

function renderStatus(s) {
  status = s;
  const bar = $("statusbar");
  bar.dataset.state = s.state;
  $("state").textContent = s.state;
  $("line").textContent = s.line || "";
  $("counts").textContent = s.agent ? (s.summary || "") : "";
  $("queues").textContent = s.agent ? queuesText(s.queues) : "";
  const pause = $("pause");
  pause.disabled = !s.agent;
  pause.textContent = s.state === "paused" ? "Resume" : "Pause";
  $("sync").disabled = !s.agent || s.state === "paused";
  const failures = s.failures || [];
  $("failed-count").textContent = failures.length;
  $("retry-all").disabled = !s.agent;
  // Rebuilt only when the list changes: a status update must not swap a button under the pointer.
  const key = JSON.stringify(failures);
  if (key === renderStatus.failures) return;
  renderStatus.failures = key;
  $("failed-list").replaceChildren(...failures.slice().reverse().map((f) =>
    el("li", { dataset: { name: f.name, role: f.role } },
      el("span", { class: "fname" }, f.name),
      el("span", { class: "reason" }, f.reason),
      el("button", { class: "retry", type: "button", onclick: (ev) => retry(ev.target, f) }, "Retry"))));
  if (!failures.length) $("failed-list").append(el("li", { class: "none" }, "Nothing failed."));
}

async function retry(button, f) {
  button.disabled = true;
  try {
    const r = await post("/api/retry", { name: f.name, role: f.role });
    toast(`${f.name}: ${r.how}`);
  } catch (err) {
    toast("Retry failed: " + err.message);
    button.disabled = false;
  }
}

function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("status", (e) => renderStatus(JSON.parse(e.data)));
  source.addEventListener("thumbnail", (e) => addNew(JSON.parse(e.data)));
  source.addEventListener("refresh", () => reset());
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) setTimeout(connect, 3000); };
}

// --- wiring ------------------------------------------------------------------------------------------

function start() {
  new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) loadMore(); }, { rootMargin: "800px" })
    .observe($("more"));
  let timer = null;
  $("search").addEventListener("input", (e) => {
    clearTimeout(timer);
    timer = setTimeout(() => { view.q = e.target.value.trim(); reset(); }, 250);
  });
  $("pause").addEventListener("click", async () => {
    try { await post(status.state === "paused" ? "/api/resume" : "/api/pause"); } catch (err) { toast(err.message); }
  });
  $("sync").addEventListener("click", async () => {
    try { await post("/api/sync"); toast("Syncing now"); } catch (err) { toast(err.message); }
  });
  $("retry-all").addEventListener("click", async () => {
    try { const r = await post("/api/retry-all"); toast(`Retrying: ${r.redrive.sent_back} sent back from dead-letter queues`); }
    catch (err) { toast(err.message); }
  });
  $("failed-toggle").addEventListener("click", () => { $("failed").hidden = !$("failed").hidden; });
  $("viewer-close").addEventListener("click", closeViewer);
  $("viewer").addEventListener("click", (e) => { if (e.target.id === "viewer") closeViewer(); });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeViewer(); });
  view.dir = location.hash ? decodeURIComponent(location.hash.slice(1)) : "";
  connect();
  reset();
}

start();
