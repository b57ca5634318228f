// Talking to the cloud API: JSON in and out; a 401 anywhere means "log in again".
let onLoggedOut = () => {};
export const whenLoggedOut = (fn) => { onLoggedOut = fn; };

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export async function api(path, { method = "GET", body } = {}) {
  // Anything but a read carries a JSON object: the server refuses other bodies, and no body,
  // so that no form on another page can act with this user's cookie (docs/security.md).
  const reads = method === "GET" || method === "HEAD";
  const res = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: reads ? {} : { "Content-Type": "application/json" },
    body: reads ? undefined : JSON.stringify(body ?? {}),
  });
  const data = res.headers.get("Content-Type")?.includes("json") ? await res.json() : null;
  if (res.status === 401 && path !== "/api/login") onLoggedOut();
  if (!res.ok) throw new ApiError(res.status, (data && data.error) || res.statusText);
  return data;
}

export const enc = encodeURIComponent;
