// Translations: one dictionary per language (zh-CN default, en); the choice is kept in localStorage.
import zh from "./i18n/zh-CN.js";
import en from "./i18n/en.js";

export const LANGUAGES = { "zh-CN": zh, en };
const KEY = "shouwang.lang";
let lang = LANGUAGES[localStorage.getItem(KEY)] ? localStorage.getItem(KEY) : "zh-CN";
const listeners = [];

export const currentLang = () => lang;

// t("board.page", {page: 2}) → the phrase in the current language; an unknown key shows itself.
export function t(key, vars = {}) {
  const text = LANGUAGES[lang][key] ?? LANGUAGES.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

// A label for a value that may have no translation (a new alert type): the raw value then.
export function label(prefix, value) {
  const key = `${prefix}.${value}`;
  return key in LANGUAGES[lang] ? LANGUAGES[lang][key] : String(value);
}

export function setLang(next) {
  if (!LANGUAGES[next]) return;
  lang = next;
  localStorage.setItem(KEY, next);
  translate(document);
  listeners.forEach((fn) => fn(next));
}

export const onLangChange = (fn) => listeners.push(fn);

// Alert types and their names come from the one registry (GET /api/vocabulary,
// shouwang/alert_types.yaml), not from these files: a type a detector raises always has a name.
let types = [];
export async function loadVocabulary() {
  const res = await fetch("/api/vocabulary");
  if (!res.ok) throw new Error(`vocabulary: HTTP ${res.status}`);
  const vocabulary = await res.json();
  ({ types } = vocabulary);
  for (const { type, zh: zhName, en: enName } of types) {
    LANGUAGES["zh-CN"][`type.${type}`] = zhName;
    LANGUAGES.en[`type.${type}`] = enName;
  }
  // The watchlists a face match names (label("watchlist", id); a list without a name: its id).
  for (const { list, zh: zhName, en: enName } of vocabulary.watchlists || []) {
    LANGUAGES["zh-CN"][`watchlist.${list}`] = zhName;
    LANGUAGES.en[`watchlist.${list}`] = enName;
  }
  return types.map((x) => x.type);
}
export const alertTypes = () => types.map((x) => x.type);

// Static text: elements carry data-i18n (text) or data-i18n-title / data-i18n-placeholder.
export function translate(root) {
  document.documentElement.lang = lang;
  document.title = t(document.documentElement.dataset.title || "app.title");
  root.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  root.querySelectorAll("[data-i18n-title]").forEach((el) => { el.title = t(el.dataset.i18nTitle); });
  root.querySelectorAll("[data-i18n-placeholder]").forEach((el) => {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  });
}

export function fmtTime(ms) {
  return new Intl.DateTimeFormat(lang, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  }).format(new Date(ms));
}

// "3 分钟前" / "3 minutes ago"; the exact time is in the cell's title. Past 30 days, the date.
const UNITS = [["day", 86400], ["hour", 3600], ["minute", 60]];
export function fmtAgo(ms, now = Date.now()) {
  const seconds = (ms - now) / 1000;
  if (Math.abs(seconds) < 45) return t("time.just_now");
  if (Math.abs(seconds) >= 30 * 86400) return fmtTime(ms);
  const fmt = new Intl.RelativeTimeFormat(lang, { numeric: "auto" });
  const [unit, size] = UNITS.find(([, size]) => Math.abs(seconds) >= size) || UNITS.at(-1);
  return fmt.format(Math.trunc(seconds / size), unit);
}
