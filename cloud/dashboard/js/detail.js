// One alert in full: who and where, why, evidence, the timeline of transitions and
// notifications, and the actions the user's role allows in the alert's state, with a note.
// A watchlist match shows its crops beside the enrolled reference photo, and until a person
// confirms or rejects it, those are its only actions (docs/face.md).
import { api, enc } from "./api.js";
import { t, label, fmtTime, fmtAgo, currentLang } from "./i18n.js";
import { ackName, awaitsConfirmation, dispatchedName, seenName, stateText, typeText } from "./board.js";
import { LEVELS } from "./places.js";
import { fetchPeople, person, telLink } from "./people.js";
import { THROW_KINDS, flatStep, throwSection } from "./throw.js";

// What each state allows (cloud/alerts.py TRANSITIONS), by action.
const NEXT = {
  open: ["ack", "resolve", "false_alarm"],
  acknowledged: ["dispatch", "resolve", "false_alarm"],
  dispatched: ["resolve", "false_alarm"],
  resolved: [],
  false_alarm: [],
};
const ROLE_MAY = { family: ["ack", "resolve", "false_alarm"] }; // others: every action
// Who may write a note without a state change, and who may share one with the family
// (cloud/access/scope.py ACTIONS.note, ACTIONS.share_note; docs/access.md).
const NOTE_ROLES = ["police", "worker", "admin"];
const SHARE_ROLES = ["worker", "admin"];
// Who may open a resident's record and vitals (docs/access.md): not police.
const RESIDENT_ROLES = ["family", "worker", "admin"];
// Who may export a signed evidence package (cloud/access/scope.py ACTIONS.export_package).
const EXPORT_ROLES = ["police", "worker", "admin"];

const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
};
const section = (key, ...children) => el("section", { class: `part ${key}` },
  el("h3", {}, t(`detail.${key}`)), ...children);
const pairs = (rows) => el("dl", {}, ...rows.filter(([, v]) => v !== null && v !== undefined && v !== "")
  .flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, typeof v === "object" ? JSON.stringify(v) : String(v))]));

export class Detail {
  constructor(root, { me, onChanged, onResident }) {
    this.root = root;
    this.me = me;
    this.onChanged = onChanged;
    this.onResident = onResident;
    this.id = null;
    // Escape closes the detail from anywhere inside it (keyboard users, docs/dashboard.md).
    root.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && this.id) { e.preventDefault(); this.close(); }
    });
  }

  async open(id) {
    this.id = id;
    const alert = await api(`/api/alerts/${enc(id)}`);
    if (alert.resident) await fetchPeople([alert.resident]).catch(() => {});
    if (this.id !== id) return;
    this.alert = alert;
    this.render();
    this.root.hidden = false;
    // Keyboard and screen-reader users land in the panel; on a narrow screen, where it sits
    // below the board or covers it, it comes into view.
    this.root.tabIndex = -1;
    this.root.focus({ preventScroll: true });
    if (matchMedia("(max-width: 900px)").matches) this.root.scrollIntoView({ block: "start" });
  }

  close() {
    const id = this.id;
    this.id = null;
    this.media = null;
    this.root.hidden = true;
    this.root.replaceChildren();
    // Back to the row the user came from.
    const row = id && document.querySelector(`#alerts tr[data-id="${CSS.escape(id)}"] button.detail`);
    if (row) row.focus({ preventScroll: false });
  }

  // A live change to the alert on screen: read it again (the read is audited, as it is seen).
  changed(alert) {
    if (this.id === alert.id && alert.version !== this.alert.version) this.open(alert.id);
  }

  render() {
    const a = this.alert;
    const close = el("button", { type: "button", class: "close" }, t("detail.close"));
    close.addEventListener("click", () => this.close());
    const head = el("header", {},
      el("h2", {}, el("span", { class: `badge sev-${a.severity}` }, label("severity", a.severity)),
        " ", typeText(a), " ", el("span", { class: `state state-${a.state}` }, stateText(a))),
      close);
    const detail = a.detail || {};
    const about = detail.who || {};
    const tags = about.tags && about.tags.length ? about.tags : null;
    const p = a.resident ? person(a.resident) : null;
    const who = section("who", pairs([
      [t("detail.resident"), p ? [p.name, p.age ? t("detail.age", { n: p.age }) : ""].filter(Boolean).join(" · ") : a.resident],
      [t("detail.subject"), p ? null : a.subject],
      [t("detail.tags"), tags && tags.map((x) => label("tag", x)).join("、")],
      [t("detail.device"), about.kind ? `${a.device} (${about.kind})` : a.device],
      [t("detail.site"), a.site],
      [t("detail.ack_by"), a.ack_by && `${ackName(a)} (${label("role", a.ack_role)})`],
      [t("detail.seen_by"), a.seen_by && `${seenName(a)} · ${fmtTime(a.seen_ms)}`],
      [t("detail.dispatched_to"), dispatchedName(a)],
      [t("detail.repeats"), a.repeats ? t("detail.repeats_text", { n: a.repeats, last: fmtTime(a.last_ms) }) : null],
    ]));
    // Numbers to call, one tap each on a phone: the resident, then their emergency contacts.
    const calls = p ? [
      ...(p.phone ? [[t("detail.call_resident", { name: p.name }), p.phone]] : []),
      ...(p.contacts || []).map((c) => [
        [c.name, c.relation ? label("relation", c.relation) : ""].filter(Boolean).join(" · "), c.phone]),
    ] : [];
    if (calls.length) {
      who.append(el("ul", { class: "calls" }, ...calls.map(([text, phone]) =>
        el("li", {}, telLink(phone, `${t("action.call")} ${text}`), " ", el("small", {}, phone)))));
    }
    if (a.resident && RESIDENT_ROLES.includes(this.me.role)) {
      const open = el("button", { type: "button", class: "resident" }, t("resident.open"));
      open.addEventListener("click", () => this.onResident(a.resident));
      who.append(open);
    }
    const path = (a.location || "").split("/").filter(Boolean);
    const where = section("where", el("ol", { class: "path" },
      ...path.map((p, i) => el("li", {}, el("small", {}, label("level", LEVELS[i] || "")), " ", p))));
    // Why, as a sentence in the reader's language ("一键通按钮被按下 3 次", from the server's
    // shouwang/explain.py); the rule's own keys stay under "技术细节" for whoever needs them.
    const reasons = detail.why && typeof detail.why === "object" ? detail.why : {};
    const sentence = (a.explain || {})[currentLang() === "en" ? "en" : "zh"] || detail.what;
    const technical = pairs([
      [label("field", "what"), detail.what],
      ...Object.entries(reasons).map(([k, v]) => [label("field", k), v]),
      ...Object.entries(detail).filter(([k]) => !["who", "what", "why", "evidence", "update", "supersedes", "alert_id", "previous_severity", "repeats", "last_ms"].includes(k))
        .map(([k, v]) => [label("field", k), v]),
    ]);
    const why = section("why", el("p", { class: "explain" }, sentence), pairs([
      [t("col.time"), `${fmtTime(a.ts)} (${fmtAgo(a.ts)})`],
      // Raised later than it happened: a fall after its cancel window, a threshold after its duration.
      [t("detail.raised"), a.raised_ms && a.raised_ms - a.ts >= 1000 ? fmtTime(a.raised_ms) : null],
      [t("detail.received"), fmtTime(a.received_ms)],
    ]), technical.childElementCount
      ? el("details", { class: "technical" }, el("summary", {}, t("detail.technical")), technical)
      : null);
    // A live change re-renders the detail; the media elements are kept (moved into the new
    // figure within the same task), so a clip playing goes on playing instead of starting over.
    if (!this.media || this.media.id !== a.id) this.media = { id: a.id, nodes: new Map() };
    // A thrown object: where it came from, its marked pictures and the confirmed flat.
    const thrown = a.type === "thrown_object" ? throwSection(a, {
      el, section, role: this.me.role,
      onChanged: (updated) => { this.alert = updated; this.render(); this.onChanged(updated); },
    }) : null;
    const listed = (a.evidence || []).filter((e) => !thrown || !THROW_KINDS.includes(e.kind));
    const shots = listed.map((e) => {
      const src = `/api/alerts/${enc(a.id)}/evidence/${e.sha256}`;
      const image = e.content_type.startsWith("image/");
      // A clip plays from byte ranges (the server answers Range); "metadata" fetches only the
      // start until the user presses play; the server audits each view once.
      const media = this.media.nodes.get(e.sha256) || (image
        ? el("img", { src, alt: `${t("detail.evidence")} ${e.sha256.slice(0, 12)}`, loading: "lazy" })
        : el("video", { src, controls: "", preload: "metadata", playsinline: "" }));
      this.media.nodes.set(e.sha256, media);
      return el("figure", { class: image ? "snapshot" : "clip" }, media,
        el("figcaption", {}, [e.kind ? label("evidence", e.kind) : null, fmtTime(e.captured_ts),
          e.device, `${e.sha256.slice(0, 12)}…`].filter(Boolean).join(" · ")));
    });
    const match = a.match ? this.match() : null;
    const evidence = section("evidence", shots.length ? el("div", { class: "shots" }, ...shots)
      : el("p", {}, t("detail.no_evidence")));
    if (EXPORT_ROLES.includes(this.me.role)) {
      // A plain link: the browser streams the zip to disk (a clip is up to 64 MiB).
      evidence.append(el("a", { class: "export", href: `/api/alerts/${enc(a.id)}/package`,
        download: `shouwang-evidence-${a.id}.zip`, title: t("detail.export_hint") }, t("detail.export")));
    }
    this.root.replaceChildren(head, el("div", { class: "cols" },
      el("div", {}, match, who, where, why, thrown, evidence),
      el("div", {}, this.actions(), section("timeline", this.timeline()))));
  }

  // The match as a person checks it: the list in words, the score, the track's best crops (the
  // alert's pictures) beside the photo the person was enrolled with.
  match() {
    const a = this.alert;
    const m = a.match;
    const reference = el("img", { class: "reference", alt: t("match.reference"),
      src: `/api/watchlists/${enc(m.list)}/people/${enc(m.person)}/photo` });
    reference.addEventListener("error", () => reference.replaceWith(
      el("p", { class: "no-reference" }, t("match.no_reference"))));
    const crops = (a.evidence || []).filter((e) => e.content_type.startsWith("image/")).map((e) =>
      el("figure", { class: "crop" },
        el("img", { src: `/api/alerts/${enc(a.id)}/evidence/${e.sha256}`, alt: t("match.crop") }),
        el("figcaption", {}, t("match.crop"))));
    const score = typeof m.score === "number" ? m.score.toFixed(2) : m.score;
    const facts = pairs([
      [t("match.list"), label("watchlist", m.list)],
      [t("match.person"), m.person],
      [t("match.score"), score],
      [t("match.confirmed"), a.confirmed ? `${a.confirmed.by} · ${fmtTime(a.confirmed.ms)}`
        : a.state === "open" ? t("match.awaiting") : null],
    ]);
    return section("match", facts, el("div", { class: "compare" },
      el("figure", { class: "reference" }, reference, el("figcaption", {}, t("match.reference"))),
      ...(crops.length ? crops : [el("p", {}, t("match.no_crops"))])));
  }

  timeline() {
    const a = this.alert;
    const items = [];
    for (const step of a.timeline || []) {
      let text = step.from_state === null ? t("tl.opened")
        : t("tl.transition", { from: label("state", step.from_state), to: label("state", step.to_state) });
      let note = step.note;
      if (step.from_state === step.to_state && step.note === "seen") { text = t("tl.seen"); note = null; }
      else if (step.from_state === step.to_state && /^confirmed(: |$)/.test(step.note || "")) {
        text = t("tl.confirmed"); note = step.note.slice("confirmed: ".length) || null;
      }
      else if (step.from_state === step.to_state && (step.note || "").startsWith("repeated")) {
        text = t("tl.repeated"); note = null;
      }
      else if (step.from_state === step.to_state && flatStep(step.note)) {
        ({ text, note } = flatStep(step.note));
      }
      else if (step.from_state === step.to_state) text = t(step.note ? "tl.note" : "tl.update");
      // A person by their name; a site or the system as it is recorded.
      items.push([step.ts, step.shared && note ? "transition shared" : "transition", text,
        step.name || step.actor, note, step.shared && note]);
    }
    for (const n of a.notifications || []) {
      items.push([n.ts, "notified", t("tl.notified", { who: n.display_name || n.username, stage: n.stage, outcome: n.outcome }), null, null]);
    }
    for (const n of a.deliveries || []) {
      items.push([n.ts, "attempt", t("tl.attempt", { channel: n.channel, recipient: n.recipient_name || n.recipient, result: n.result }),
        n.target, n.reason]);
    }
    items.sort((x, y) => x[0] - y[0]);
    return el("ol", { class: "timeline" }, ...items.map(([ts, kind, text, actor, note, shared]) => el("li", { class: kind },
      el("time", {}, fmtTime(ts)), " ", el("span", { class: "what" }, text),
      actor ? el("span", { class: "actor" }, ` · ${t("tl.by")} ${actor}`) : null,
      note ? el("blockquote", {}, note) : null,
      shared ? el("small", { class: "shared-mark" }, t("tl.shared")) : null)));
  }

  actions() {
    const a = this.alert;
    // An unconfirmed match: only confirm or reject, by the roles its policy names.
    const allowed = awaitsConfirmation(a)
      ? ((a.match.confirmers || []).includes(this.me.role) ? ["confirm", "reject"] : [])
      : (NEXT[a.state] || []).filter((x) => (ROLE_MAY[this.me.role] || [x]).includes(x));
    const part = section("actions");
    // An unconfirmed match takes only confirm or reject (the server says 409 to a note).
    const noting = NOTE_ROLES.includes(this.me.role) && !awaitsConfirmation(a);
    if (!allowed.length && !noting) return part;
    const note = el("textarea", { id: "note", rows: "2", maxlength: "2000", placeholder: t("action.note"),
      "aria-label": t("action.note") });
    // The note goes to the family too when this is ticked (not by default: a note is for
    // colleagues unless the worker decides otherwise).
    const share = SHARE_ROLES.includes(this.me.role)
      ? el("input", { type: "checkbox", id: "share-note" }) : null;
    const error = el("p", { class: "error", role: "alert", id: "action-error" });
    const buttons = el("div", { class: "buttons" });
    let worker = null;
    if (allowed.includes("dispatch")) {
      worker = el("select", { id: "worker", "aria-label": t("action.worker") });
      // Asked once per alert: a re-render (a live change, a language switch) keeps the list.
      if (!this.workers || this.workers.id !== a.id) {
        this.workers = { id: a.id, list: api(`/api/alerts/${enc(a.id)}/workers`) };
      }
      this.workers.list.then(({ workers }) => {
        worker.append(...workers.map((w) => el("option", { value: w.username }, `${w.display_name} (${w.username})`)));
        if (!workers.length) worker.append(el("option", { value: "" }, t("action.no_workers")));
      }).catch(() => {});
    }
    for (const action of allowed) {
      const b = el("button", { type: "button", class: `do-${action}` }, t(`action.${action}`));
      b.addEventListener("click", async () => {
        error.textContent = "";
        if (action === "reject" && !note.value.trim()) {  // the reason is the record
          error.textContent = t("match.reason_needed");
          note.focus();
          return;
        }
        buttons.querySelectorAll("button").forEach((x) => { x.disabled = true; });
        const body = note.value.trim() ? { note: note.value.trim() } : {};
        if (share && share.checked && body.note && !["confirm", "reject"].includes(action)) body.share = true;
        if (action === "dispatch") body.worker = worker.value;
        try {
          const updated = await api(`/api/alerts/${enc(a.id)}/${action}`, { method: "POST", body });
          this.alert = updated;
          this.render();
          this.onChanged(updated);
        } catch (err) {
          error.textContent = err.message;
          buttons.querySelectorAll("button").forEach((x) => { x.disabled = false; });
        }
      });
      buttons.append(b);
    }
    if (noting) {
      // A note on its own, in any state: what was found, what was done, for the record.
      const add = el("button", { type: "button", class: "do-note" }, t("action.add_note"));
      add.addEventListener("click", async () => {
        error.textContent = "";
        if (!note.value.trim()) {
          error.textContent = t("action.note_needed");
          note.focus();
          return;
        }
        add.disabled = true;
        const body = { note: note.value.trim(), ...(share && share.checked ? { share: true } : {}) };
        try {
          const updated = await api(`/api/alerts/${enc(a.id)}/note`, { method: "POST", body });
          this.alert = updated;
          this.render();
          this.onChanged(updated);
        } catch (err) {
          error.textContent = err.message;
          add.disabled = false;
        }
      });
      buttons.append(add);
    }
    if (worker) part.append(el("label", {}, t("action.worker"), " ", worker));
    part.append(note);
    if (share) part.append(el("label", { class: "share" }, share, " ", t("action.share")));
    part.append(buttons, error);
    return part;
  }
}
