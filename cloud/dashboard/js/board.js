// The alert board: one page of alerts from GET /api/alerts (server-side filters and cursor
// paging, so 1,000 open alerts cost one page of DOM), kept live by WebSocket messages.
import { api } from "./api.js";
import { t, label, fmtTime, fmtAgo } from "./i18n.js";
import { fetchPeople, personText } from "./people.js";

export const PAGE_SIZE = 50;

// "一键求助 ×3": the case and how many times it happened (the first and each repeat).
export const typeText = (a) => label("type", a.type)
  + (a.repeats ? ` ${t("board.times", { n: a.repeats + 1 })}` : "");

// A thrown object's row says where it came from: "约 12 层 第 3 列", the flat found once
// recorded, "楼层未知" from a camera without calibration (js/throw.js has the detail).
export function throwFloorText(a) {
  if (a.type !== "thrown_object") return null;
  const found = a.confirmed_flat;
  if (found) return t("throw.row_confirmed", { floor: found.floor, column: found.column });
  const data = ((a.detail || {}).why || {}).data || {};
  return Number.isInteger(data.floor) && Number.isInteger(data.column)
    ? t("throw.row", { floor: data.floor, column: data.column }) : t("throw.row_unknown");
}

// Who has it: "已确认 · worker-li"; still open but seen by family: "待处理 · 家属已查看".
// The board has a column of its own for who handles it (`withWho` false).
// A watchlist match nobody has confirmed or rejected yet: nobody acts on it until then.
export const awaitsConfirmation = (a) => Boolean(a.match) && !a.confirmed && a.state === "open";

// People by the names people know them by (display names, cloud/store.py `with_people`), the
// user name where a message carries none (a new alert, an older server).
export const ackName = (a) => a.ack_name || a.ack_by || "";
export const seenName = (a) => a.seen_name || a.seen_by || "";
export const dispatchedName = (a) => a.dispatched_name || a.dispatched_to || "";

export function stateText(a, withWho = true) {
  if (awaitsConfirmation(a)) return t("state.awaiting_confirmation");
  const state = label("state", a.state);
  if (withWho && a.state !== "open" && handlerName(a)) return `${state} · ${handlerName(a)}`;
  if (a.seen_by && a.state === "open") return `${state} · ${t("board.seen", { who: seenName(a) })}`;
  return state;
}
const ACTIVE = ["open", "acknowledged", "dispatched"];

// Who has it now: the worker it was dispatched to, else the responder who acknowledged.
export const handlerName = (a) => (a.state === "dispatched" && dispatchedName(a)) || ackName(a);

// Urgency first, as the server orders `order=urgency` (cloud/alerts.py): open, acknowledged,
// dispatched, then closed; critical first within each; then newest first.
const STATE_RANK = { open: 0, acknowledged: 1, dispatched: 2, resolved: 3, false_alarm: 3 };
export const SEVERITY_RANK = { critical: 0, high: 1, medium: 2, low: 3, info: 4 };
const rank = (a) => [STATE_RANK[a.state] ?? 9, SEVERITY_RANK[a.severity] ?? 9];
export const cursorOf = (a) => `u${rank(a).join("")}.${a.ts}.${a.id}`;

// Negative when `a` belongs above `b` on the board.
export function urgencyCompare(a, b) {
  const [ra, rb] = [rank(a), rank(b)];
  return ra[0] - rb[0] || ra[1] - rb[1] || b.ts - a.ts || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
}

// Who is on it: the responder who acknowledged (the family's "seen" is not someone on the way).
export const handlerText = (a) => (ACTIVE.includes(a.state) && a.state !== "open" && handlerName(a))
  || (a.state === "open" ? t("board.nobody") : ackName(a));

// Whole path segments, as the server's scope and filter do.
const under = (location, prefix) => !prefix || location === prefix
  || (location || "").startsWith(`${prefix}/`);

// The end of a path says most on a board (building, unit, floor, household); the detail has it all.
const shortPlace = (path) => (path || "").split("/").slice(-4).join("/");

export class Board {
  constructor({ table, empty, pager, notice, onOpen, onAck }) {
    this.tbody = table.querySelector("tbody");
    this.empty = empty;
    this.pager = pager;
    this.notice = notice;
    this.onOpen = onOpen;
    this.onAck = onAck;
    // Filters live in the address (#state=…&type=…), so a reload or a shared link keeps them.
    this.filters = { state: "active", type: "", severity: "", location: "", q: "", from: "", to: "" };
    const saved = new URLSearchParams(location.hash.slice(1));
    for (const key of Object.keys(this.filters)) {
      if (saved.has(key)) this.filters[key] = saved.get(key);
    }
    this.cursors = [null]; // cursors[i] fetches page i
    this.page = 0;
    this.next = null;
    this.rows = new Map(); // alert id -> <tr>
    this.alerts = new Map(); // alert id -> alert
    this.newer = 0;
    this.timings = [];
    this.seq = 0;
  }

  // The list's filters as the API takes them (also the CSV export's).
  filterParams() {
    const q = new URLSearchParams();
    const f = this.filters;
    if (f.state) q.set("state", f.state === "active" ? ACTIVE.join(",") : f.state);
    if (f.type) q.set("type", f.type);
    if (f.severity) q.set("severity", f.severity);
    if (f.location) q.set("location", f.location);
    if (f.q.trim()) q.set("q", f.q.trim());
    const [from, to] = this.range();
    if (from !== null) q.set("from", String(from));
    if (to !== null) q.set("to", String(to));
    return q;
  }

  // The date range in ms, from the start of `from` to the end of `to`, in local time.
  range() {
    const day = (text) => (text ? new Date(`${text}T00:00:00`).getTime() : null);
    const to = day(this.filters.to);
    return [day(this.filters.from), to === null ? null : to + 86400000];
  }

  query() {
    // One more than a page: whether a next page exists, without ever showing an empty one.
    const q = this.filterParams();
    q.set("limit", String(PAGE_SIZE + 1));
    q.set("order", "urgency");
    const cursor = this.cursors[this.page];
    if (cursor) q.set("cursor", cursor);
    return q.toString();
  }

  exportUrl(lang) {
    const q = this.filterParams();
    q.set("lang", lang === "en" ? "en" : "zh");
    q.set("tz", Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC");
    return `/api/alerts.csv?${q}`;
  }

  // Whether a live alert belongs on this board. A search is the server's (names live
  // there): a searched board keeps its rows up to date but takes no new ones.
  matches(alert, isNew = false) {
    const f = this.filters;
    const states = f.state === "active" ? ACTIVE : f.state ? [f.state] : null;
    const [from, to] = this.range();
    return (!states || states.includes(alert.state)) && (!f.type || alert.type === f.type)
      && (!f.severity || alert.severity === f.severity) && under(alert.location, f.location)
      && (from === null || alert.ts >= from) && (to === null || alert.ts < to)
      && !(isNew && f.q.trim());
  }

  setFilters(changes, reason = "filter") {
    Object.assign(this.filters, changes);
    history.replaceState(null, "", `#${new URLSearchParams(this.filters)}`);
    this.cursors = [null];
    this.page = 0;
    return this.load(reason);
  }

  async goto(page, reason = "page") {
    if (page < 0 || page >= this.cursors.length) return;
    this.page = page;
    await this.load(reason);
  }

  // Measured in the browser around the request and the render (shown in docs/dashboard.md).
  async load(reason = "reload") {
    const seq = ++this.seq;
    const started = performance.now();
    document.body.dataset.board = "loading";
    const data = await api(`/api/alerts?${this.query()}`);
    if (seq !== this.seq) return; // a newer load superseded this one
    this.tbody.replaceChildren();
    this.rows.clear();
    this.alerts.clear();
    const fragment = document.createDocumentFragment();
    const shown = data.alerts.slice(0, PAGE_SIZE);
    for (const alert of shown) fragment.append(this.row(alert));
    this.tbody.append(fragment);
    const last = shown.at(-1);
    this.next = data.alerts.length > PAGE_SIZE ? cursorOf(last) : null;
    this.cursors.length = this.page + 1;
    if (this.next) this.cursors.push(this.next);
    if (this.page === 0) this.newer = 0;
    this.showPager();
    this.names(shown);
    const ms = performance.now() - started;
    this.timings.push({ reason, ms, rows: shown.length, page: this.page });
    document.body.dataset.board = "ready";
    document.dispatchEvent(new CustomEvent("board:rendered", { detail: { reason, ms } }));
  }

  row(alert) {
    const tr = document.createElement("tr");
    tr.dataset.id = alert.id;
    this.rows.set(alert.id, tr);
    this.fill(tr, alert);
    return tr;
  }

  fill(tr, alert, isNew = false) {
    this.alerts.set(alert.id, alert);
    tr.dataset.ts = alert.ts;
    tr.dataset.state = alert.state;
    tr.dataset.version = alert.version || 0;
    tr.dataset.repeats = alert.repeats || 0;
    tr.className = `sev-${alert.severity} state-${alert.state}` + (isNew ? " new" : "");
    // Each cell knows its column's name, so the phone's card layout can label it.
    const cells = [
      ["col.severity", label("severity", alert.severity), "sev"],
      ["col.type", typeText(alert), "type"],
      ["col.age", fmtAgo(alert.ts), "age", fmtTime(alert.ts)],
      ["col.subject", alert.resident ? personText(alert.resident, label) : alert.subject, "who"],
      ["col.location", shortPlace(alert.location), "loc", alert.location || ""],
      ["col.state", stateText(alert, false), "state"],
      ["col.handler", handlerText(alert), "handler"],
      ["col.device", alert.device, "device"],
    ];
    tr.replaceChildren(...cells.map(([key, text, name, title]) => {
      const td = document.createElement("td");
      td.textContent = text;
      td.className = name;
      td.dataset.label = t(key);
      if (title) td.title = title;
      if (name === "age") td.dataset.ts = alert.ts;
      const floor = name === "type" ? throwFloorText(alert) : null;
      if (floor) td.append(" ", Object.assign(document.createElement("span"),
        { className: "floor", textContent: floor }));
      return td;
    }));
    const actions = document.createElement("td");
    actions.className = "actions";
    const open = document.createElement("button");
    open.type = "button";
    open.className = "detail";
    open.textContent = t("action.detail");
    open.addEventListener("click", (e) => { e.stopPropagation(); this.onOpen(alert.id); });
    actions.append(open);
    if (alert.state === "open" && !awaitsConfirmation(alert)) {
      const ack = document.createElement("button");
      ack.type = "button";
      ack.className = "ack";
      ack.textContent = t("action.ack");
      ack.addEventListener("click", (e) => { e.stopPropagation(); this.onAck(alert.id, ack); });
      actions.append(ack);
    }
    tr.append(actions);
    tr.onclick = () => this.onOpen(alert.id);
  }

  // A live message: a new alert or a changed one, already limited to the user's scope.
  // A changed alert moves to where its urgency puts it (acknowledged rows sink below open ones).
  apply(alert, isNew) {
    const tr = this.rows.get(alert.id);
    if (tr) {
      if (this.matches(alert)) {
        this.fill(tr, alert, false);
        this.place(tr, alert);
      } else { tr.remove(); this.rows.delete(alert.id); this.alerts.delete(alert.id); }
    } else if (this.matches(alert, true)) {
      if (this.page !== 0) {
        this.newer += 1;
      } else {
        // An alert below the whole page belongs to a later page.
        const after = this.firstBelow(alert);
        if (after || this.rows.size < PAGE_SIZE) {
          const row = this.row(alert);
          this.fill(row, alert, isNew);
          this.tbody.insertBefore(row, after || null);
          while (this.rows.size > PAGE_SIZE) this.dropLast();
          this.names([alert]);
        }
      }
    }
    this.showPager();
  }

  firstBelow(alert, except = null) {
    return [...this.tbody.children].find((r) => r !== except
      && urgencyCompare(alert, this.alerts.get(r.dataset.id)) < 0) || null;
  }

  place(tr, alert) {
    const below = this.firstBelow(alert, tr);
    if (below ? tr.nextElementSibling !== below : tr !== this.tbody.lastElementChild) {
      this.tbody.insertBefore(tr, below);
    }
  }

  // Names replace resident ids as soon as they arrive (one request for the page).
  names(list) {
    fetchPeople(list.map((a) => a.resident).filter(Boolean)).then(() => {
      for (const [id, tr] of this.rows) {
        const a = this.alerts.get(id);
        const cell = tr.querySelector("td.who");
        if (a && a.resident && cell) cell.textContent = personText(a.resident, label);
      }
    }).catch(() => {}); // ids stay: the board works without names
  }

  // "3 分钟前" stays true while the board is open.
  tick() {
    for (const td of this.tbody.querySelectorAll("td.age")) td.textContent = fmtAgo(Number(td.dataset.ts));
  }

  dropLast() {
    const last = this.tbody.lastElementChild;
    this.rows.delete(last.dataset.id);
    this.alerts.delete(last.dataset.id);
    last.remove();
    // The page now ends earlier: the next page starts after its new last row.
    const tail = this.alerts.get(this.tbody.lastElementChild.dataset.id);
    this.next = cursorOf(tail);
    this.cursors.length = this.page + 1;
    this.cursors.push(this.next);
  }

  showPager() {
    const n = this.rows.size;
    this.empty.hidden = n > 0;
    const from = n ? this.page * PAGE_SIZE + 1 : 0;
    this.pager.querySelector(".where").textContent = t("board.page",
      { page: this.page + 1, from, to: this.page * PAGE_SIZE + n });
    this.pager.querySelector(".prev").disabled = this.page === 0;
    this.pager.querySelector(".next").disabled = !this.next;
    this.notice.hidden = this.newer === 0;
    this.notice.textContent = t("board.newer", { n: this.newer });
  }

  relabel() {
    for (const [id, tr] of this.rows) this.fill(tr, this.alerts.get(id));
    this.showPager();
  }
}
