// 高空抛物 in an alert's detail: where the object came from (the camera's estimate in words, the
// ranked candidate windows), the snapshot with the track and candidate windows drawn and the
// launch area enlarged (both drawn by the camera worker: edge/video/throw/evidence.py), the flat
// found after investigation, and the form that records it (POST /api/alerts/{id}/confirm_flat).
import { api, enc } from "./api.js";
import { t, fmtTime } from "./i18n.js";

// Who may record the flat (cloud/access/scope.py ACTIONS.confirm_flat).
const FLAT_ROLES = ["police", "worker", "admin"];
// Pictures this section shows; the evidence list below leaves them out.
export const THROW_KINDS = ["marked", "launch"];

// "12:3:0.71 13:3:0.18" (the camera profile's `candidates`) → [[12, 3, 0.71], [13, 3, 0.18]].
export function candidates(text) {
  return String(text || "").split(/\s+/).filter(Boolean).map((c) => c.split(":").map(Number))
    .filter((c) => c.length === 3 && c.every(Number.isFinite));
}

export const flatText = (floor, column) => t("throw.flat", { floor, column });

// A timeline line the server wrote for a confirmed flat: "flat 12:3" or "flat 12:3: note".
export function flatStep(note) {
  const m = /^flat (\d+):(\d+)(?:: ([\s\S]*))?$/.exec(note || "");
  return m ? { text: t("tl.flat", { flat: flatText(m[1], m[2]) }), note: m[3] || null } : null;
}

export function throwSection(a, { el, section, role, onChanged }) {
  const data = ((a.detail || {}).why || {}).data || {};
  const known = Number.isInteger(data.floor) && Number.isInteger(data.column);
  const part = section("throw", el("p", { class: "floor" },
    known ? t("throw.estimate", { floor: data.floor, column: data.column }) : t("throw.unknown")));
  const ranked = candidates(data.candidates);
  if (ranked.length) {
    part.append(el("ol", { class: "candidates", "aria-label": t("throw.candidates") },
      ...ranked.map(([f, c, p]) => el("li", {}, flatText(f, c), " — ",
        el("strong", {}, `${Math.round(p * 100)}%`)))));
  }
  const pictures = THROW_KINDS.map((kind) => (a.evidence || []).find((e) => e.kind === kind))
    .filter(Boolean).map((e) => el("figure", { class: e.kind },
      el("img", { class: e.kind, src: `/api/alerts/${enc(a.id)}/evidence/${e.sha256}`,
        alt: t(`throw.${e.kind}`) }),
      el("figcaption", {}, t(`throw.${e.kind}`))));
  part.append(pictures.length ? el("div", { class: "throw-shots" }, ...pictures)
    : el("p", { class: "hint" }, t("throw.no_marked")));
  const found = a.confirmed_flat;
  if (found) {
    part.append(el("p", { class: "confirmed" }, t("throw.confirmed", {
      flat: flatText(found.floor, found.column), by: found.by, time: fmtTime(found.ts) })),
    found.note ? el("blockquote", {}, found.note) : null);
  }
  if (FLAT_ROLES.includes(role) && a.state !== "false_alarm") part.append(flatForm(a, el, onChanged));
  return part;
}

function flatForm(a, el, onChanged) {
  const data = ((a.detail || {}).why || {}).data || {};
  const prefill = a.confirmed_flat || (Number.isInteger(data.floor) ? data : {});
  const number = (name) => el("input", { type: "number", name, min: "1", max: "200", required: "",
    value: prefill[name] ?? "", inputmode: "numeric" });
  const floor = number("floor");
  const column = number("column");
  const note = el("textarea", { name: "note", rows: "2", maxlength: "2000", placeholder: t("throw.note") });
  const error = el("p", { class: "error", role: "alert" });
  const submit = el("button", { type: "submit" }, t("throw.record"));
  const form = el("form", { class: "flat" },
    el("label", {}, t("throw.floor"), " ", floor), " ",
    el("label", {}, t("throw.column"), " ", column), note, submit, error);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    const body = { floor: Number(floor.value), column: Number(column.value) };
    if (note.value.trim()) body.note = note.value.trim();
    try {
      onChanged(await api(`/api/alerts/${enc(a.id)}/confirm_flat`, { method: "POST", body }));
    } catch (err) {
      error.textContent = err.message;
      submit.disabled = false;
    }
  });
  return form;
}
