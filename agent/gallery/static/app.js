// thumbdrop gallery: the grid (windowed: only the cells on screen are in the page), the folder tree, search, the large view and the live status bar.
// No build step and no dependencies: plain DOM, fetch, EventSource and ResizeObserver.
"use strict";

const FIRST = 120; // items in the first /api/list page: a quick first screen
const PAGE = 500; // items per later page: names and dates only, the images load as their cells show
const csrf = document.querySelector('meta[name="csrf"]').content;
const $ = (id) => document.getElementById(id);
const view = { dir: "", q: "", next: 0, total: 0, loading: false, items: [], paths: new Set(), fresh: new Set(), generation: 0 };
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
// A windowed grid: the row layout (date headers, then rows of fixed-size cells) is computed here from the paged
// list, and only the rows on screen plus a margin are in the DOM. Cells leaving the window are recycled: their
// image load is cancelled (src removed) and the element is reused for the next cell that comes into view.

const GAP = 8; // px between cells: as in app.css
const MIN_CELL = 180; // px: the narrowest cell (--tile in app.css)
const HEAD = 44; // px: a date header row (.group in app.css)
const MARGIN = 1; // viewports rendered above and below the visible one
const layout = { cols: 1, cell: MIN_CELL, rowH: MIN_CELL + GAP, rows: [], rowOf: [], index: new Map(), loaded: 0, width: -1 };
const shown = new Map(); // key (path, or NUL + date: no path holds a NUL) -> element in the grid
const pool = { tile: [], head: [] }; // recycled elements, out of the DOM
let frame = 0;

function makeTile() {
  const img = el("img", { alt: "", loading: "lazy", decoding: "async" });
  return el("figure", { class: "tile", tabindex: "0", role: "button" }, img, el("figcaption"));
}

function fillTile(fig, item) {
  if (fig.dataset.path !== item.path) {
    const img = fig.firstChild;
    img.removeAttribute("src"); // no old picture while the new one loads
    img.alt = item.name;
    img.src = item.thumb;
    fig.lastChild.textContent = item.name;
    fig.dataset.path = item.path;
    fig.title = item.path;
    fig.classList.toggle("video", Boolean(item.video));
  }
  fig.classList.toggle("new", view.fresh.has(item.path));
}

function recycle(key, node) {
  shown.delete(key);
  node.remove();
  if (node.tagName === "FIGURE") {
    node.firstChild.removeAttribute("src"); // cancels a load that has not finished
    delete node.dataset.path;
    pool.tile.push(node);
  } else {
    pool.head.push(node);
  }
}

function relayout() {
  const grid = $("grid");
  const width = grid.clientWidth;
  const cols = Math.max(1, Math.floor((width + GAP) / (MIN_CELL + GAP)));
  const cell = Math.max(1, (width - GAP * (cols - 1)) / cols);
  const rows = [];
  const rowOf = new Array(view.items.length);
  const index = new Map();
  let y = 0;
  let date = null;
  let row = null;
  view.items.forEach((item, i) => {
    index.set(item.path, i);
    if (item.date !== date) {
      date = item.date;
      rows.push({ y, h: HEAD, date });
      y += HEAD;
      row = null;
    }
    if (!row || row.end - row.start === cols) {
      row = { y, h: cell + GAP, start: i, end: i };
      rows.push(row);
      y += cell + GAP;
    }
    row.end = i + 1;
    rowOf[i] = rows.length - 1;
  });
  Object.assign(layout, { cols, cell, rowH: cell + GAP, rows, rowOf, index, loaded: y, width });
  // The rows not loaded yet get their room now, so the scroll bar spans the whole folder from the first page.
  const rest = view.next === null ? 0 : Math.max(0, view.total - view.items.length);
  grid.style.height = `${y + Math.ceil(rest / cols) * (cell + GAP)}px`;
}

function firstRow(top) {
  // The first row whose bottom is below `top` (binary search: rows are in y order).
  let lo = 0;
  let hi = layout.rows.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (layout.rows[mid].y + layout.rows[mid].h <= top) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function render() {
  frame = 0;
  const grid = $("grid");
  if (grid.clientWidth !== layout.width) relayout();
  const offset = -grid.getBoundingClientRect().top; // the viewport's top in grid coordinates
  const top = offset - innerHeight * MARGIN;
  const bottom = offset + innerHeight * (1 + MARGIN);
  const wanted = new Map();
  for (let r = firstRow(top); r < layout.rows.length && layout.rows[r].y < bottom; r += 1) {
    const row = layout.rows[r];
    if (row.date !== undefined) {
      wanted.set("\0" + row.date, row);
      continue;
    }
    for (let i = row.start; i < row.end; i += 1) wanted.set(view.items[i].path, { row, i });
  }
  // Keep the focused cell even off screen, so keyboard focus is never lost to recycling.
  const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest("#grid .tile");
  for (const [key, node] of shown) if (!wanted.has(key) && node !== focused) recycle(key, node);
  const add = document.createDocumentFragment();
  const { cell, cols } = layout;
  for (const [key, at] of wanted) {
    let node = shown.get(key);
    if (at.date !== undefined) {
      if (!node) {
        node = pool.head.pop() || el("h2", { class: "group" });
        node.textContent = at.date;
        node.dataset.date = at.date;
        shown.set(key, node);
        add.append(node);
      }
      node.style.transform = `translateY(${at.y}px)`;
      continue;
    }
    const item = view.items[at.i];
    if (!node) {
      node = pool.tile.pop() || makeTile();
      shown.set(key, node);
      add.append(node);
    }
    fillTile(node, item);
    const col = (at.i - at.row.start) % cols;
    node.style.width = node.style.height = `${cell}px`;
    node.style.transform = `translate(${col * (cell + GAP)}px, ${at.row.y}px)`;
  }
  grid.append(add);
  // Near the end of what is loaded: the next page.
  if (view.next !== null && bottom + innerHeight > layout.loaded) loadMore();
}

function schedule() {
  if (!frame) frame = requestAnimationFrame(render);
}

function clearGrid() {
  for (const [key, node] of shown) recycle(key, node);
  layout.width = -1;
}

// The first cell on screen and where it is, so a change above it (a new thumbnail, the folder list) moves nothing.
function anchor() {
  const top = -$("grid").getBoundingClientRect().top;
  if (top <= 0 || !view.items.length) return null;
  const r = Math.min(firstRow(top), layout.rows.length - 1);
  const row = layout.rows[r].date !== undefined ? layout.rows[r + 1] : layout.rows[r];
  if (!row) return null;
  return { path: view.items[row.start].path, screen: row.y - top };
}

function restore(mark) {
  if (!mark || !layout.index.has(mark.path)) return;
  const row = layout.rows[layout.rowOf[layout.index.get(mark.path)]];
  const now = row.y + $("grid").getBoundingClientRect().top;
  if (Math.abs(now - mark.screen) > 0.5) window.scrollBy(0, now - mark.screen);
}

function keepingScroll(change) {
  const mark = anchor();
  change();
  relayout();
  restore(mark);
  render();
}

function appendItems(items) {
  for (const item of items) {
    if (view.paths.has(item.path)) continue;
    view.paths.add(item.path);
    view.items.push(item);
  }
}

function focusItem(i) {
  i = Math.max(0, Math.min(view.items.length - 1, i));
  const row = layout.rows[layout.rowOf[i]];
  if (!row) return;
  const gridTop = $("grid").getBoundingClientRect().top;
  const header = $("statusbar").offsetHeight;
  if (gridTop + row.y < header) window.scrollBy(0, gridTop + row.y - header);
  else if (gridTop + row.y + row.h > innerHeight) window.scrollBy(0, gridTop + row.y + row.h - innerHeight);
  render();
  const node = shown.get(view.items[i].path);
  if (node) node.focus({ preventScroll: true });
}

function gridKey(e) {
  const fig = e.target.closest(".tile");
  if (!fig || !layout.index.has(fig.dataset.path)) return;
  const i = layout.index.get(fig.dataset.path);
  const row = layout.rows[layout.rowOf[i]];
  if (e.key === "Enter" || e.key === " ") {
    e.preventDefault();
    openViewer(view.items[i]);
    return;
  }
  const col = i - row.start;
  const tileRow = (r, step) => { // the next row of cells from r, skipping date headers
    for (r += step; r >= 0 && r < layout.rows.length; r += step) if (layout.rows[r].date === undefined) return layout.rows[r];
    return null;
  };
  let to = null;
  if (e.key === "ArrowRight") to = i + 1;
  else if (e.key === "ArrowLeft") to = i - 1;
  else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
    const next = tileRow(layout.rowOf[i], e.key === "ArrowDown" ? 1 : -1);
    if (next) to = Math.min(next.start + col, next.end - 1);
  } else if (e.key === "Home") to = 0;
  else if (e.key === "End") to = view.items.length - 1;
  if (to === null || to < 0 || to >= view.items.length) return;
  e.preventDefault();
  if (e.key === "End" && view.next !== null) { // the end of the folder, not of what is loaded
    window.scrollTo(0, document.documentElement.scrollHeight);
    return;
  }
  focusItem(to);
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

// One page of the current folder or search, from the server.
async function fetchPage(offset, limit) {
  const params = new URLSearchParams({ dir: view.dir, q: view.q, offset, limit });
  const resp = await fetch("/api/list?" + params, { credentials: "same-origin" });
  if (!resp.ok) throw new Error((await resp.json().catch(() => ({}))).error || resp.statusText);
  return resp.json();
}

function showTotal(total) {
  document.body.dataset.total = total;
  $("empty").hidden = view.items.length > 0 || $("folders").childElementCount > 0;
}

async function loadMore() {
  if (view.loading || view.next === null) return;
  view.loading = true;
  const generation = view.generation;
  try {
    const page = await fetchPage(view.next, view.next ? PAGE : FIRST);
    if (generation !== view.generation) return; // the folder or search changed meanwhile
    keepingScroll(() => {
      if (page.offset === 0) {
        renderCrumbs(page.crumbs);
        renderFolders(page.folders);
      }
      appendItems(page.items);
      view.next = page.next;
      view.total = page.total;
    });
    showTotal(page.total);
  } catch (err) {
    toast("Could not load the thumbnails: " + err.message);
  } finally {
    if (generation === view.generation) view.loading = false;
  }
  if (generation === view.generation) schedule(); // still room on screen: the next page
}

function reset() {
  view.generation += 1;
  view.next = 0;
  view.total = 0;
  view.items = [];
  view.paths = new Set();
  view.fresh = new Set();
  view.loading = false;
  clearGrid();
  relayout();
  loadMore();
}

// Many thumbnails at once (the server's "refresh"): the list is read again up to as far as it was loaded and
// swapped in whole, the cell on screen staying where it is; the ones not seen before are marked new.
async function refresh() {
  const generation = ++view.generation;
  view.loading = true;
  const want = Math.max(view.items.length, FIRST);
  const items = [];
  let first = null;
  let page = null;
  try {
    do {
      page = await fetchPage(page ? page.next : 0, PAGE);
      if (generation !== view.generation) return;
      first = first || page;
      items.push(...page.items);
    } while (page.next !== null && items.length < want);
    keepingScroll(() => {
      renderCrumbs(first.crumbs);
      renderFolders(first.folders);
      const seen = view.paths;
      view.items = [];
      view.paths = new Set();
      appendItems(items);
      for (const item of items) if (!seen.has(item.path)) view.fresh.add(item.path);
      view.next = page.next;
      view.total = page.total;
    });
    showTotal(page.total);
  } catch (err) {
    toast("Could not load the thumbnails: " + err.message);
  } finally {
    if (generation === view.generation) view.loading = false;
  }
  if (generation === view.generation) schedule();
}

function go(dir) {
  view.dir = dir;
  view.q = "";
  $("search").value = "";
  history.replaceState(null, "", dir ? "#" + encodeURIComponent(dir) : location.pathname);
  window.scrollTo(0, 0);
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
  if (at === -1 && view.next !== null) { // older than everything loaded: it comes with a later page
    view.total += 1;
    return;
  }
  keepingScroll(() => {
    view.items.splice(at === -1 ? view.items.length : at, 0, item);
    view.paths.add(item.path);
    view.fresh.add(item.path);
    view.total += 1;
  });
  $("empty").hidden = true;
}

async function refreshFolders() {
  const params = new URLSearchParams({ dir: view.dir, q: "", offset: 0, limit: 1 });
  const resp = await fetch("/api/list?" + params, { credentials: "same-origin" });
  if (resp.ok) {
    const folders = (await resp.json()).folders;
    keepingScroll(() => renderFolders(folders));
  }
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
  source.addEventListener("refresh", () => refresh());
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) setTimeout(connect, 3000); };
}

// --- wiring ------------------------------------------------------------------------------------------

function start() {
  addEventListener("scroll", schedule, { passive: true });
  new ResizeObserver(() => { if ($("grid").clientWidth !== layout.width) keepingScroll(() => {}); }).observe($("grid"));
  $("grid").addEventListener("click", (e) => {
    const fig = e.target.closest(".tile");
    if (fig && layout.index.has(fig.dataset.path)) openViewer(view.items[layout.index.get(fig.dataset.path)]);
  });
  $("grid").addEventListener("keydown", gridKey);
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
