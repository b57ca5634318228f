// The live alert board: loads open and recent alerts, then follows the WebSocket stream.
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
    body: JSON.stringify({ actor: "dashboard" }),
  });
  if (res.ok) render(await res.json());
  else { button.disabled = false; alert((await res.json()).error); }
}

function connect(delay = 500) {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/ws`);
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
    setTimeout(() => connect(Math.min(delay * 2, 10000)), delay);
  };
}

connect();
