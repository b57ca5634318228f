// The people on the board: names, tags and numbers to call, as the user's role may see them
// (GET /api/residents?ids=…, docs/access.md). Fetched once per resident, in batches.
import { api } from "./api.js";

const known = new Map(); // resident id -> person, or null when not visible
const waiting = new Map(); // resident id -> promise of the batch that fetches it

export const person = (id) => known.get(id) || null;

export async function fetchPeople(ids) {
  const wanted = [...new Set(ids.filter((id) => id && !known.has(id) && !waiting.has(id)))];
  for (let i = 0; i < wanted.length; i += 100) {
    const batch = wanted.slice(i, i + 100);
    const request = api(`/api/residents?ids=${batch.map(encodeURIComponent).join(",")}`)
      .then((data) => {
        batch.forEach((id) => known.set(id, null));
        data.residents.forEach((p) => known.set(p.id, p));
      })
      .finally(() => batch.forEach((id) => waiting.delete(id)));
    batch.forEach((id) => waiting.set(id, request));
  }
  await Promise.all(ids.map((id) => waiting.get(id)).filter(Boolean));
}

// "王大爷（独居）", or the id when the name is not visible.
export function personText(id, label) {
  const p = person(id);
  if (!p) return id || "";
  const tags = (p.tags || []).map((x) => label("tag", x)).join("、");
  return tags ? `${p.name}（${tags}）` : p.name;
}

// A tap on a phone calls: <a href="tel:…">.
export function telLink(phone, text) {
  const a = document.createElement("a");
  a.href = `tel:${phone.replace(/[\s-]/g, "")}`;
  a.className = "tel";
  a.textContent = text || phone;
  return a;
}
