// Navigation district → street → community → grid → building → … → household, from
// GET /api/locations (only places in the user's scope); choosing one narrows the board.
import { api, enc } from "./api.js";
import { t, label } from "./i18n.js";

export const LEVELS = ["district", "street", "community", "grid", "building", "unit", "floor", "household"];

export class Places {
  constructor(root, onChoose) {
    this.root = root;
    this.onChoose = onChoose;
    this.prefix = "";
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
    this.root.replaceChildren(crumbs, level, children);
  }

  link(path, text) {
    const a = document.createElement("a");
    a.href = "#";
    a.textContent = text;
    a.addEventListener("click", (e) => { e.preventDefault(); this.onChoose(path); });
    return a;
  }
}
