// The dashboard: log in, then the live board (filters, places, pages), alert detail and
// actions, in Chinese or English. Plain ES modules, no build step.
import { api, whenLoggedOut } from "./js/api.js";
import { Board } from "./js/board.js";
import { Detail } from "./js/detail.js";
import {
  alertTypes, currentLang, label, loadVocabulary, onLangChange, setLang, t, translate,
} from "./js/i18n.js";
import { showDevices } from "./js/devices.js";
import { Places } from "./js/places.js";
import { ResidentView } from "./js/resident.js";
import { beep, refreshSound, setupSound } from "./js/sound.js";
import { notify } from "./js/notify.js";

const $ = (sel) => document.querySelector(sel);
const loginForm = $("#login");
const boardEl = $("#board");
const conn = $("#conn");
let socket = null;
let board = null;
let detail = null;
let places = null;
let connState = "conn.connecting";

function setConn(key, up) {
  connState = key;
  conn.dataset.i18n = key;
  conn.textContent = t(key);
  conn.className = `conn ${up ? "up" : "down"}`;
}

function showLogin() {
  if (socket) { socket.onclose = null; socket.close(); socket = null; }
  boardEl.hidden = true;
  $("#who").hidden = true;
  $("#sound").hidden = true;
  loginForm.hidden = false;
  setConn("conn.out", false);
}
whenLoggedOut(showLogin);

function jurisdictions(me) {
  const select = $("#f-location");
  const mine = me.role === "police" || me.role === "worker" ? me.locations : [];
  select.replaceChildren(new Option(t("filter.mine"), ""), ...mine.map((p) => new Option(p, p)));
  select.disabled = mine.length === 0;
}

function showBoard(me) {
  $("#user").textContent = `${me.display_name} (${label("role", me.role)})`;
  loginForm.hidden = true;
  $("#who").hidden = false;
  $("#sound").hidden = false;
  boardEl.hidden = false;
  const residentView = new ResidentView($("#detail"), { onClose: () => detail.close() });
  detail = new Detail($("#detail"), {
    me, onChanged: (a) => board.apply(a, false),
    onResident: (id) => { detail.id = null; residentView.open(id).catch(report); },
  });
  board = new Board({
    table: $("#alerts"), empty: $("#empty"), pager: $("#pager"), notice: $("#newer"),
    onOpen: (id) => detail.open(id).catch(report),
    onAck: acknowledge,
  });
  window.shouwang = { board, detail }; // for the browser tests' measurements
  places = new Places($("#places"), choosePlace);
  places.canSeeBuildings = me.role !== "family";
  jurisdictions(me);
  for (const key of ["state", "type", "severity", "location", "q", "from", "to"]) {
    $(`#f-${key}`).value = board.filters[key];
  }
  showExport();
  if ($("#f-location").value !== board.filters.location) $("#f-location").value = "";
  places.show(board.filters.location).catch(report);
  connect();
}

function report(err) {
  const banner = $("#critical");
  banner.querySelector(".text").textContent = t("error.generic", { error: err.message });
  banner.hidden = false;
}

async function choosePlace(path) {
  $("#f-location").value = [...$("#f-location").options].some((o) => o.value === path) ? path : "";
  await Promise.all([places.show(path), board.setFilters({ location: path }).then(showExport),
    $("#devices").hidden ? null : showDevices($("#devices"), path)]);
}

function showView(name) {
  const devices = name === "devices";
  $("#tab-alerts").setAttribute("aria-selected", String(!devices));
  $("#tab-devices").setAttribute("aria-selected", String(devices));
  $("#list").hidden = devices;
  $("#filters").hidden = devices;
  $("#devices").hidden = !devices;
  if (devices) showDevices($("#devices"), board.filters.location).catch(report);
}

async function acknowledge(id, button) {
  button.disabled = true;
  pending.delete(id);
  try {
    const alert = await api(`/api/alerts/${encodeURIComponent(id)}/ack`, { method: "POST", body: {} });
    board.apply(alert, false);
    detail.changed(alert);
  } catch (err) {
    button.disabled = false;
    report(err);
  }
}

// What this page last knew of each alert, so a change that needs a person's attention is
// cued once: a new critical alert, one that became critical (a gas leak from high to
// critical), the button pressed again on a life-safety case, or any of these that happened
// while the board was reconnecting (they arrive in the snapshot, not as messages).
const known = new Map(); // id -> {severity, repeats}
const ACTIVE_STATES = ["open", "acknowledged", "dispatched"];

function needsCue(alert) {
  const before = known.get(alert.id);
  known.set(alert.id, { severity: alert.severity, repeats: alert.repeats || 0 });
  if (!ACTIVE_STATES.includes(alert.state)) return null;
  const critical = alert.severity === "critical";
  if (!before) return critical && alert.state === "open" ? "board.critical" : null;
  if (critical && before.severity !== "critical") return "board.now_critical";
  if ((alert.repeats || 0) > before.repeats && (critical || alert.life_safety)) return "board.repeated";
  return null;
}

// A cue repeats until the alert is no longer open (someone acknowledged it) or the duty
// officer silences it; a hidden tab also gets a system notification.
const CUE_REPEAT_MS = 15000;
const pending = new Set(); // ids whose cue repeats
let repeatTimer = null;

function cue(alert) {
  if (alert.state !== "open") pending.delete(alert.id);
  const key = needsCue(alert);
  if (!key) return;
  const text = t(key, {
    type: label("type", alert.type), where: alert.location || alert.device,
    n: (alert.repeats || 0) + 1,
  });
  beep();
  notify(t("cue.notify_title", { type: label("type", alert.type) }), text, alert);
  document.body.dataset.cues = String(Number(document.body.dataset.cues || 0) + 1);
  const banner = $("#critical");
  banner.querySelector(".text").textContent = text;
  banner.dataset.alert = alert.id;
  banner.hidden = false;
  if (alert.state === "open") pending.add(alert.id);
  if (!repeatTimer) {
    repeatTimer = setInterval(() => {
      if (pending.size) beep(true);
      else { clearInterval(repeatTimer); repeatTimer = null; }
    }, CUE_REPEAT_MS);
  }
}

function silence() {
  pending.clear();
  $("#critical").hidden = true;
}

// The tab title counts unhandled critical alerts in the user's scope: "(2) 守望 · 告警".
let criticalOpen = 0;
function showTitle() {
  document.title = (criticalOpen ? `(${criticalOpen >= 500 ? "500+" : criticalOpen}) ` : "")
    + t("app.title");
  document.body.dataset.criticalOpen = String(criticalOpen);
}
async function countCritical() {
  const data = await api("/api/alerts?state=open&severity=critical&limit=500");
  criticalOpen = data.alerts.length;
  showTitle();
}

// Place counts follow live changes, at most one request a second however busy the stream.
let placesTimer = null;
function refreshPlaces() {
  if (placesTimer) return;
  placesTimer = setTimeout(() => {
    placesTimer = null;
    places.show(places.prefix).catch(report);
    countCritical().catch(report);
  }, 1000);
}

// A device changed (offline, stale, faulty, battery): the Devices tab and a building on
// screen follow, at most once a second.
let devicesTimer = null;
function refreshDevices() {
  if (devicesTimer) return;
  devicesTimer = setTimeout(() => {
    devicesTimer = null;
    if (!$("#devices").hidden) showDevices($("#devices"), board.filters.location).catch(report);
    else if ($("#places .building")) places.show(places.prefix).catch(report);
  }, 1000);
}

function connect(delay = 500) {
  const ws = socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/ws`);
  ws.onopen = () => { setConn("conn.live", true); delay = 500; };
  ws.onmessage = (msg) => {
    const data = JSON.parse(msg.data);
    // A snapshot comes first on every (re)connect: reload the page on screen, so whatever
    // happened while away shows, without a gap (live changes are registered before it).
    if (data.type === "snapshot") {
      board.load("initial").catch(report);
      countCritical().catch(report);
      data.alerts.forEach(cue); // what happened while this board was away is cued too
    }
    if (data.type === "alert") { board.apply(data.alert, true); cue(data.alert); refreshPlaces(); }
    if (data.type === "device") refreshDevices();
    if (data.type === "alert_updated") {
      board.apply(data.alert, false);
      cue(data.alert);
      detail.changed(data.alert);
      refreshPlaces();
    }
  };
  ws.onclose = () => {
    setConn("conn.down", false);
    // A session that expired or ended elsewhere shows the login form, not endless retries.
    setTimeout(async () => {
      if (socket !== ws) return;
      const me = await fetch("/api/me").catch(() => null);
      if (me && me.status === 401) showLogin();
      else connect(Math.min(delay * 2, 10000));
    }, delay);
  };
}

loginForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  $("#login-error").textContent = "";
  try {
    const body = await api("/api/login", { method: "POST", body: {
      username: $("#username").value, password: $("#password").value,
    } });
    $("#password").value = "";
    showBoard(body.user);
  } catch (err) {
    $("#login-error").textContent = err.message;
  }
});

$("#logout").addEventListener("click", async () => {
  await api("/api/logout", { method: "POST" }).catch(() => {});
  showLogin();
});

for (const [id, key] of [["#f-state", "state"], ["#f-type", "type"], ["#f-severity", "severity"],
  ["#f-from", "from"], ["#f-to", "to"]]) {
  $(id).addEventListener("change", (e) => board.setFilters({ [key]: e.target.value })
    .then(showExport).catch(report));
}
// Search as one types, once the typing pauses.
let searchTimer = null;
$("#f-q").addEventListener("input", (e) => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => board.setFilters({ q: e.target.value }).then(showExport)
    .catch(report), 300);
});
$("#filters").addEventListener("submit", (e) => e.preventDefault());
// The export link carries the board's filters; the download is audited by the server.
function showExport() { $("#export").href = board.exportUrl(currentLang()); }
$("#f-location").addEventListener("change", (e) => choosePlace(e.target.value).catch(report));
$("#pager .prev").addEventListener("click", () => board.goto(board.page - 1).catch(report));
$("#pager .next").addEventListener("click", () => board.goto(board.page + 1).catch(report));
$("#newer").addEventListener("click", () => board.goto(0).catch(report));
$("#silence").addEventListener("click", (e) => { e.stopPropagation(); silence(); });
$("#critical").addEventListener("click", () => {
  const id = $("#critical").dataset.alert;
  if (id && detail) detail.open(id).catch(report);
});
$("#tab-alerts").addEventListener("click", () => showView("alerts"));
$("#tab-devices").addEventListener("click", () => showView("devices"));

const langSelect = $("#lang");
langSelect.value = currentLang();
langSelect.addEventListener("change", () => setLang(langSelect.value));
onLangChange(() => {
  setConn(connState, conn.classList.contains("up"));
  showTitle();
  refreshSound();
  if (board) { board.relabel(); places.show(places.prefix).catch(report); }
  if (detail && detail.id) detail.render();
  if (!$("#devices").hidden) showDevices($("#devices"), board.filters.location).catch(report);
});
// The type filter lists every type the system raises, named from the one vocabulary.
function typeOptions() {
  const select = $("#f-type");
  for (const type of alertTypes()) {
    const option = new Option(label("type", type), type);
    option.dataset.i18n = `type.${type}`;
    select.append(option);
  }
}

setupSound($("#sound"));
setInterval(() => board && board.tick(), 30000);
loadVocabulary().catch(report).finally(() => {
  typeOptions();
  translate(document);
  api("/api/me").then(showBoard).catch(showLogin);
});
