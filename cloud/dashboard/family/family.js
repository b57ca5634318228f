// The family page: the elder's status and alerts, live; the service worker and Web Push.
import { api, whenLoggedOut } from "/static/js/api.js";
import {
  currentLang, fmtAgo, fmtTime, label, loadVocabulary, onLangChange, setLang, t, translate,
} from "/static/js/i18n.js";
import { SEVERITY_RANK, ackName, dispatchedName, urgencyCompare } from "/static/js/board.js";
import { telLink } from "/static/js/people.js";

// For a family the gravest case leads, even while someone handles it (a fall being handled
// says more than a tamper nobody has looked at yet); then the board's urgency.
const closed = (a) => (ACTIVE.includes(a.state) ? 0 : 1);
const gravest = (a, b) => closed(a) - closed(b)
  || (SEVERITY_RANK[a.severity] ?? 9) - (SEVERITY_RANK[b.severity] ?? 9) || urgencyCompare(a, b);

const $ = (sel) => document.querySelector(sel);
const ACTIVE = ["open", "acknowledged", "dispatched"];
const alerts = new Map(); // id -> alert, for the residents this user may see
let me = null;
let socket = null;
let pushState = ["push.starting", "starting"];

function say(key, state, vars) {
  pushState = [key, state, vars];
  $("#status").textContent = t(key, vars);
  document.body.dataset.push = state;
}

// --- the elder's status and alerts ---------------------------------------------------------

// Names of the elders this user watches and the number to call for each (the community's
// office: GET /api/residents/{id}, audited); the id if the record cannot be read.
const names = new Map();
const offices = new Map();
async function loadNames() {
  await Promise.all(me.residents.map(async (id) => {
    const record = await api(`/api/residents/${encodeURIComponent(id)}`).catch(() => null);
    names.set(id, record && record.name ? record.name : `${t("family.elder")} ${id}`);
    if (record && record.office) offices.set(id, record.office);
  }));
}

// Who is on the most urgent case, by name: "网格员 李华 已出发 · 3 分钟前", or nobody yet.
function handling(a) {
  if (a.state === "open") return `${t("family.nobody_yet")} · ${fmtAgo(a.ts)}`;
  const ago = fmtAgo(a.state_changed_ms || a.ts);
  if (a.state === "dispatched" && dispatchedName(a)) {
    return `${label("role", "worker")} ${dispatchedName(a)} ${t("family.on_the_way")} · ${ago}`;
  }
  const who = [a.ack_role ? label("role", a.ack_role) : "", ackName(a)].filter(Boolean).join(" ");
  return `${who} ${label("state", a.state)} · ${ago}`.trim();
}

// What the responders chose to tell the family ("李华：已到家中，老人无大碍 · 2 分钟前");
// the server sends a family no other note (docs/access.md).
function sharedNotes(a) {
  const notes = a.shared_notes || [];
  if (!notes.length) return null;
  const list = el("ul", "notes");
  list.setAttribute("aria-label", t("family.notes"));
  list.append(...notes.map((n) => {
    const item = el("li", "", `${n.name || n.by || ""}：${n.note}`);
    item.append(el("time", "", ` · ${fmtAgo(n.ts)}`));
    return item;
  }));
  return list;
}

// The one number to call for the elder's community, one tap on a phone.
function callOffice(resident) {
  const office = offices.get(resident);
  if (!office) return null;
  const link = telLink(office.phone, `${t("family.call")} ${office.place}`);
  link.classList.add("call");
  const box = el("p", "office");
  box.append(link, el("small", "", ` ${office.phone}`));
  return box;
}

const el = (tag, className, text) => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
};

function render() {
  const all = [...alerts.values()];
  // The newest 20, and every case still open however old: "平安" must never hide one.
  const recent = new Set(all.sort((a, b) => b.ts - a.ts).slice(0, 20).map((a) => a.id));
  const list = all.filter((a) => recent.has(a.id) || ACTIVE.includes(a.state)).sort(gravest);
  $("#elders").replaceChildren(...me.residents.map((resident) => {
    const active = list.filter((a) => a.resident === resident && ACTIVE.includes(a.state));
    const card = el("article", active.length ? "elder attention" : "elder");
    card.dataset.resident = resident;
    card.append(el("h2", "", names.get(resident) || `${t("family.elder")} ${resident}`));
    card.append(el("div", "status", active.length ? t("family.attention") : t("family.well")));
    if (!active.length) {
      card.append(el("div", "", t("family.well_text")));
      const call = callOffice(resident);
      if (call) card.append(call);
      return card;
    }
    const top = active[0];
    const sentence = (top.explain || {})[currentLang() === "en" ? "en" : "zh"];
    card.append(el("div", "headline", [label("type", top.type), sentence].filter(Boolean).join(" · ")));
    card.append(el("div", "handling", handling(top)));
    const notes = sharedNotes(top);
    if (notes) card.append(notes);
    if (active.length > 1) card.append(el("div", "more", t("family.more", { n: active.length - 1 })));
    const call = callOffice(resident);
    if (call) card.append(call);
    return card;
  }));
  $("#alerts").replaceChildren(...list.map((a) => {
    const li = document.createElement("li");
    li.dataset.id = a.id;
    li.dataset.state = a.state;
    if (a.seen_by) li.dataset.seen = a.seen_by;
    li.className = ACTIVE.includes(a.state) ? "active" : "";
    const what = document.createElement("strong");
    what.textContent = `${label("type", a.type)} · ${label("severity", a.severity)}`;
    const when = document.createElement("time");
    when.textContent = `${fmtTime(a.ts)} · ${label("state", a.state)}`;
    li.append(what, when);
    const notes = sharedNotes(a);
    if (notes) li.append(notes);
    if (a.state === "open" && a.seen_by === me.username) {
      // Seen is not handled: say so, so nobody thinks help is on the way because of it.
      const seen = document.createElement("p");
      seen.className = "seen";
      seen.textContent = t("family.seen");
      li.append(seen);
    } else if (a.state === "open") {
      const ack = document.createElement("button");
      ack.type = "button";
      ack.className = "ack";
      ack.textContent = t("family.ack");
      ack.addEventListener("click", async () => {
        ack.disabled = true;
        try {
          const updated = await api(`/api/alerts/${encodeURIComponent(a.id)}/ack`, { method: "POST", body: {} });
          alerts.set(updated.id, updated);
          render();
        } catch (err) { ack.disabled = false; }
      });
      li.append(ack);
    }
    return li;
  }));
  $("#none").hidden = list.length > 0;
}

async function load() {
  const [recent, active] = await Promise.all([
    api("/api/alerts?limit=20"),
    api(`/api/alerts?state=${ACTIVE.join(",")}&order=urgency&limit=100`),
  ]);
  alerts.clear();
  [...recent.alerts, ...active.alerts].forEach((a) => alerts.set(a.id, a));
  render();
}

function connect(delay = 500) {
  const ws = socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/ws`);
  ws.onopen = () => { delay = 500; };
  ws.onmessage = (msg) => {
    const data = JSON.parse(msg.data);
    if (data.type === "snapshot") load().catch(() => {});
    else if (data.alert) { alerts.set(data.alert.id, data.alert); render(); }
  };
  ws.onclose = () => setTimeout(() => { if (socket === ws) connect(Math.min(delay * 2, 10000)); }, delay);
}

function showView(user) {
  me = user;
  $("#login").hidden = true;
  $("#view").hidden = false;
  loadNames().finally(() => { render(); connect(); });
}

function showLogin() {
  if (socket) { socket.onclose = null; socket.close(); socket = null; }
  $("#view").hidden = true;
  $("#login").hidden = false;
}
whenLoggedOut(showLogin);

$("#login").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("#login-error").textContent = "";
  try {
    const body = await api("/api/login", { method: "POST", body: {
      username: $("#username").value, password: $("#password").value } });
    $("#password").value = "";
    showView(body.user);
  } catch (err) {
    $("#login-error").textContent = err.message;
  }
});

// --- Web Push ------------------------------------------------------------------------------

function keyBytes(base64url) {
  const b64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

async function subscribe(registration) {
  const permission = await Notification.requestPermission();
  if (permission !== "granted") {
    say("push.denied", "denied");
    return;
  }
  const { public_key: key } = await api("/api/push/vapid-public-key");
  const sub = await registration.pushManager.subscribe({
    userVisibleOnly: true, applicationServerKey: keyBytes(key),
  });
  await api("/api/push/subscriptions", { method: "POST", body: sub.toJSON() });
  say("push.on", "subscribed");
}

async function startPush() {
  if (!("serviceWorker" in navigator) || !("PushManager" in window)) {
    say("push.unsupported", "unsupported");
    return;
  }
  const registration = await navigator.serviceWorker.register("/family/sw.js", { scope: "/family/" });
  await navigator.serviceWorker.ready;
  document.body.dataset.sw = "active";
  const existing = await registration.pushManager.getSubscription();
  if (existing) say("push.on", "subscribed"); else say("push.off", "off");
  $("#enable").disabled = false;
  $("#enable").addEventListener("click", () => {
    subscribe(registration).catch((err) => say("push.failed", "error", { error: err.message }));
  });
}

const langSelect = $("#lang");
langSelect.value = currentLang();
langSelect.addEventListener("change", () => setLang(langSelect.value));
onLangChange(() => { say(...pushState); if (me) render(); });
translate(document);
say(...pushState);
startPush().catch((err) => say("push.failed", "error", { error: err.message }));
// Alert types are named from the one vocabulary; without it the page still works, in ids.
loadVocabulary().catch(() => {}).finally(() => api("/api/me").then(showView).catch(showLogin));
