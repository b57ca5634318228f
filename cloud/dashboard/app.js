// The live alert board: log in, then a snapshot of the alerts in your scope and live changes.
const board = document.querySelector("#board");
const loginForm = document.querySelector("#login");
const loginError = document.querySelector("#login-error");
const who = document.querySelector("#who");
const tbody = document.querySelector("#alerts tbody");
const empty = document.querySelector("#empty");
const conn = document.querySelector("#conn");
const rows = new Map(); // alert id -> <tr>

const fmtTime = (ms) => new Date(ms).toLocaleString();

function render(alert, isNew = false) {
  let tr = rows.get(alert.id);
  if (!tr) {
    tr = document.createElement("tr");
    tr.dataset.id = alert.id;
    rows.set(alert.id, tr);
    // Newest first: rows are kept ordered by event time.
    const after = [...tbody.children].find((r) => Number(r.dataset.ts) < alert.ts);
    tbody.insertBefore(tr, after || null);
  }
  tr.dataset.ts = alert.ts;
  tr.className = `sev-${alert.severity} state-${alert.state}` + (isNew ? " new" : "");
  const cells = [fmtTime(alert.ts), alert.severity, alert.type, alert.subject,
                 alert.location || "", alert.device, alert.state];
  tr.replaceChildren(...cells.map((text) => {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }));
  const action = document.createElement("td");
  if (alert.state === "open") {
    const button = document.createElement("button");
    button.textContent = "确认 Acknowledge";
    button.className = "ack";
    button.addEventListener("click", () => acknowledge(alert.id, button));
    action.append(button);
  }
  tr.append(action);
  empty.hidden = rows.size > 0;
}

async function acknowledge(id, button) {
  button.disabled = true;
  const res = await fetch(`/api/alerts/${encodeURIComponent(id)}/ack`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({}),
  });
  if (res.ok) render(await res.json());
  else if (res.status === 401) showLogin();
  else { button.disabled = false; alert((await res.json()).error); }
}

let socket = null;

function showLogin() {
  if (socket) { socket.onclose = null; socket.close(); socket = null; }
  board.hidden = true;
  who.hidden = true;
  loginForm.hidden = false;
  conn.textContent = "未登录 logged out";
  conn.className = "conn down";
}

function showBoard(me) {
  document.querySelector("#user").textContent = `${me.display_name} (${me.role})`;
  loginForm.hidden = true;
  who.hidden = false;
  board.hidden = false;
  tbody.replaceChildren();
  rows.clear();
  connect();
}

loginForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  loginError.textContent = "";
  const res = await fetch("/api/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      username: document.querySelector("#username").value,
      password: document.querySelector("#password").value,
    }),
  });
  const body = await res.json();
  if (!res.ok) { loginError.textContent = body.error; return; }
  document.querySelector("#password").value = "";
  showBoard(body.user);
});

document.querySelector("#logout").addEventListener("click", async () => {
  await fetch("/api/logout", { method: "POST" });
  showLogin();
});

async function start() {
  const res = await fetch("/api/me");
  if (res.ok) showBoard(await res.json());
  else showLogin();
}

function connect(delay = 500) {
  const ws = socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/ws`);
  ws.onopen = () => {
    conn.textContent = "实时 live";
    conn.className = "conn up";
    delay = 500;
  };
  ws.onmessage = (msg) => {
    const data = JSON.parse(msg.data);
    // The server sends a snapshot first on every (re)connect: what happened while away.
    if (data.type === "snapshot") { data.alerts.forEach((a) => render(a)); empty.hidden = rows.size > 0; }
    if (data.type === "alert") render(data.alert, true);
    if (data.type === "alert_updated") render(data.alert);
  };
  ws.onclose = () => {
    conn.textContent = "已断开 disconnected";
    conn.className = "conn down";
    // A session that expired or was ended elsewhere shows the login form, not endless retries.
    setTimeout(async () => {
      if (socket !== ws) return;
      const me = await fetch("/api/me").catch(() => null);
      if (me && me.status === 401) showLogin();
      else connect(Math.min(delay * 2, 10000));
    }, delay);
  };
}

start();
