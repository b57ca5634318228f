// Device health by building: offline, stale, faulty and low-battery devices in your scope.
import { api, enc } from "./api.js";
import { fmtTime, t } from "./i18n.js";

const PROBLEMS = ["offline", "stale", "faulty", "low_battery"];

const cell = (tag, text, cls) => {
  const td = document.createElement(tag);
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
};

export async function showDevices(root, location) {
  const data = await api(`/api/devices/health?location=${enc(location || "")}`);
  const table = document.createElement("table");
  table.className = "buildings";
  const head = document.createElement("tr");
  head.append(cell("th", t("devices.building")), cell("th", t("devices.count")),
    ...PROBLEMS.map((p) => cell("th", t(`devices.${p}`))));
  table.createTHead().append(head);
  const body = table.createTBody();
  for (const b of data.buildings) {
    const tr = document.createElement("tr");
    tr.dataset.building = b.building || "";
    tr.append(cell("td", b.building || t("devices.unplaced")), cell("td", String(b.devices)),
      ...PROBLEMS.map((p) => cell("td", String(b[p]), b[p] ? "bad" : "")));
    body.append(tr);
  }
  const list = document.createElement("table");
  list.className = "problems";
  const lhead = document.createElement("tr");
  lhead.append(...["col.device", "devices.kind", "col.location", "devices.problems", "devices.last_seen"]
    .map((k) => cell("th", t(k))));
  list.createTHead().append(lhead);
  const lbody = list.createTBody();
  for (const d of data.devices) {
    const tr = document.createElement("tr");
    tr.dataset.device = d.id;
    tr.append(cell("td", d.id), cell("td", d.profile || "?"), cell("td", d.location || "", "loc"),
      cell("td", d.problems.map((p) => t(`devices.${p}`)).join("、"), "bad"),
      cell("td", d.last_seen_ms ? fmtTime(d.last_seen_ms) : "—"));
    lbody.append(tr);
  }
  const h = document.createElement("h3");
  h.textContent = t("devices.needing");
  root.replaceChildren(table, h, list);
  root.dataset.loaded = String(Number(root.dataset.loaded || 0) + 1);
  return data;
}


