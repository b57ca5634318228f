// A resident for those allowed to see them (family, grid workers, admins; never police):
// who, where, tags, devices, and vital-sign charts from the telemetry store.
import { api, enc } from "./api.js";
import { fmtTime, label, t } from "./i18n.js";
import { lineChart } from "./chart.js";

export const VITALS = [["heart_rate", " bpm"], ["spo2", "%"], ["skin_temp", "°C"]];
const SPANS = { "24h": 24 * 3600e3, "7d": 7 * 24 * 3600e3 };

const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
};

export class ResidentView {
  constructor(root, { onClose }) {
    this.root = root;
    this.onClose = onClose;
    this.span = "24h";
  }

  async open(id) {
    this.id = id;
    this.resident = await api(`/api/residents/${enc(id)}`);
    await this.render();
    this.root.hidden = false;
  }

  async render() {
    const r = this.resident;
    const close = el("button", { type: "button", class: "close" }, t("detail.close"));
    close.addEventListener("click", () => this.onClose());
    const spans = el("div", { class: "spans" }, ...Object.keys(SPANS).map((s) => {
      const b = el("button", { type: "button", class: s === this.span ? "on" : "", "data-span": s }, t(`resident.span_${s}`));
      b.addEventListener("click", () => { this.span = s; this.render(); });
      return b;
    }));
    const health = (d) => ["transport", "data", "health", "battery"]
      .map((k) => d[k] ? label("liveness", d[k]) : null).filter(Boolean).join(" · ");
    const to = Date.now();
    const from = to - SPANS[this.span];
    const charts = await Promise.all(VITALS.map(async ([field, unit]) => {
      let data;
      try {
        data = await api(`/api/residents/${enc(r.id)}/vitals?field=${field}&from=${Math.round(from)}&to=${Math.round(to)}`);
      } catch (err) {
        return el("figure", { class: `vital ${field}`, "data-points": "0" },
          el("figcaption", {}, label("field", field)), el("p", { class: "nodata" }, err.message));
      }
      const series = data.series.map((s) => ({ ...s, step: data.step * 1000 }));
      const points = series.reduce((n, s) => n + s.points.length, 0);
      return el("figure", { class: `vital ${field}`, "data-points": String(points) },
        el("figcaption", {}, label("field", field)),
        points ? lineChart(series, { from: data.from, to: data.to, unit, fmt: fmtTime })
          : el("p", { class: "nodata" }, t("resident.no_data")));
    }));
    this.root.replaceChildren(
      el("header", {}, el("h2", {}, `${t("detail.resident")} ${r.name} (${r.id})`), close),
      el("dl", {}, el("dt", {}, t("col.location")), el("dd", {}, r.location || ""),
        el("dt", {}, t("detail.tags")), el("dd", { class: "tags" }, r.tags.map((x) => label("tag", x)).join("、") || "—")),
      el("h3", {}, t("resident.devices")),
      el("ul", { class: "devices" }, ...r.devices.map((d) => el("li", { "data-device": d.id },
        `${d.id} (${d.profile || "?"}) ${health(d)}`, d.last_seen_ms ? ` · ${fmtTime(d.last_seen_ms)}` : ""))),
      el("h3", {}, t("resident.vitals")), spans, ...charts);
  }
}
