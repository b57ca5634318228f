// Navigation district → street → community → grid → building → … → household, from
// GET /api/locations (only places in the user's scope); choosing one narrows the board.
import { api, enc } from "./api.js";
import { t, label } from "./i18n.js";

export const LEVELS = ["district", "street", "community", "grid", "building", "unit", "floor", "household"];
const BUILDING_DEPTH = 5;

export class Places {
  constructor(root, onChoose) {
    this.root = root;
    this.onChoose = onChoose;
    this.prefix = "";
    this.canSeeBuildings = true; // family users have no building view
  }

  async show(prefix) {
    this.prefix = prefix;
    const data = await api(`/api/locations?prefix=${enc(prefix)}`);
    const crumbs = document.createElement("ol");
    crumbs.className = "crumbs";
    const parts = prefix ? prefix.split("/") : [];
    const items = [["", t("nav.all")], ...parts.map((p, i) => [parts.slice(0, i + 1).join("/"),
      `${label("level", LEVELS[i] || "")} ${p}`])];
    items.forEach(([path, text], i) => {
      const li = document.createElement("li");
      if (i === items.length - 1) li.textContent = text;
      else li.append(this.link(path, text));
      crumbs.append(li);
    });
    const children = document.createElement("ul");
    children.className = "places";
    for (const child of data.children) {
      const li = document.createElement("li");
      const a = this.link(child.path, child.label || child.name);
      a.dataset.path = child.path;
      const count = document.createElement("span");
      count.className = child.critical_active ? "count critical" : "count";
      count.textContent = String(child.active);
      a.append(count);
      li.append(a);
      children.append(li);
    }
    const level = document.createElement("span");
    level.className = "level";
    level.textContent = data.level ? `${label("level", data.level)}:` : "";
    if (!data.children.length) level.textContent = t("nav.empty");
    // A building is shown as itself: 单元 → 楼层 → 户, the households with open alerts or
    // device problems lit, each a way to its alerts.
    const building = parts.length === BUILDING_DEPTH && this.canSeeBuildings
      ? await this.building(prefix) : null;
    if (prefix !== this.prefix) return; // a newer choice superseded this one
    this.root.replaceChildren(crumbs, level, children, ...(building ? [building] : []));
  }

  async building(path) {
    const data = await api(`/api/locations/building?path=${enc(path)}`);
    const root = document.createElement("div");
    root.className = "building";
    for (const unit of data.units) {
      const table = document.createElement("table");
      table.className = "unit";
      const caption = table.createCaption();
      caption.textContent = `${label("level", "unit")} ${unit.name}`;
      const body = table.createTBody();
      for (const floor of unit.floors) {
        const tr = body.insertRow();
        const th = document.createElement("th");
        th.scope = "row";
        th.textContent = `${label("level", "floor")} ${floor.name}`;
        tr.append(th);
        for (const home of floor.households) {
          const td = tr.insertCell();
          const a = this.link(home.path, home.name);
          a.dataset.path = home.path;
          a.className = `home${home.critical_active ? " critical" : home.active ? " alert" : ""}`
            + (home.device_problems ? " device" : "");
          const says = [home.active ? t("building.alerts", { n: home.active }) : "",
            home.device_problems ? t("building.devices", { n: home.device_problems }) : ""]
            .filter(Boolean).join("，");
          a.title = says || t("building.quiet");
          a.setAttribute("aria-label", `${home.name} ${says || t("building.quiet")}`);
          td.append(a);
        }
      }
      root.append(table);
    }
    const legend = document.createElement("p");
    legend.className = "legend";
    legend.textContent = t("building.legend");
    root.append(legend);
    return root;
  }

  link(path, text) {
    const a = document.createElement("a");
    a.href = "#";
    a.textContent = text;
    a.addEventListener("click", (e) => { e.preventDefault(); this.onChoose(path); });
    return a;
  }
}
