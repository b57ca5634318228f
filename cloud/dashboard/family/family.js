// The family page: the elder's status and alerts, live; the service worker and Web Push.
import { api, whenLoggedOut } from "/static/js/api.js";
import {
  currentLang, fmtTime, label, loadVocabulary, onLangChange, setLang, t, translate,
} from "/static/js/i18n.js";

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

function render() {
  const list = [...alerts.values()].sort((a, b) => b.ts - a.ts).slice(0, 20);
  $("#elders").replaceChildren(...me.residents.map((resident) => {
    const active = list.filter((a) => a.resident === resident && ACTIVE.includes(a.state));
    const card = document.createElement("article");
    card.className = active.length ? "elder attention" : "elder";
    card.dataset.resident = resident;
    const name = document.createElement("h2");
    name.textContent = `${t("family.elder")} ${resident}`;
    const status = document.createElement("div");
    status.className = "status";
    status.textContent = active.length ? t("family.attention") : t("family.well");
    const line = document.createElement("div");
    line.textContent = active.length
      ? `${label("type", active[0].type)} · ${fmtTime(active[0].ts)} · ${label("state", active[0].state)}`
      : t("family.well_text");
    card.append(name, status, line);
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
  const page = await api("/api/alerts?limit=20");
  alerts.clear();
  page.alerts.forEach((a) => alerts.set(a.id, a));
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
  connect();
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
