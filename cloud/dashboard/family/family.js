// Registers the service worker and subscribes this browser to Web Push with the cloud's key.
"use strict";

const statusEl = document.getElementById("status");
const enableEl = document.getElementById("enable");

function say(text, state) {
  statusEl.textContent = text;
  document.body.dataset.push = state;
}

function keyBytes(base64url) {
  const b64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

async function subscribe(registration) {
  const permission = await Notification.requestPermission();
  if (permission !== "granted") {
    say("Notifications are blocked in this browser's settings.", "denied");
    return;
  }
  const res = await fetch("/api/push/vapid-public-key");
  if (!res.ok) throw new Error(`no push key (${res.status})`);
  const { public_key: key } = await res.json();
  const sub = await registration.pushManager.subscribe({
    userVisibleOnly: true, applicationServerKey: keyBytes(key),
  });
  const saved = await fetch("/api/push/subscriptions", {
    method: "POST", headers: { "Content-Type": "application/json" },
    credentials: "same-origin", body: JSON.stringify(sub.toJSON()),
  });
  if (!saved.ok) throw new Error(`subscription not saved (${saved.status})`);
  say("Alerts are on for this device.", "subscribed");
}

async function start() {
  if (!("serviceWorker" in navigator) || !("PushManager" in window)) {
    say("This browser cannot receive push notifications.", "unsupported");
    return;
  }
  const registration = await navigator.serviceWorker.register("/family/sw.js", { scope: "/family/" });
  await navigator.serviceWorker.ready;
  document.body.dataset.sw = "active";
  const existing = await registration.pushManager.getSubscription();
  say(existing ? "Alerts are on for this device." : "Alerts are off for this device.",
      existing ? "subscribed" : "off");
  enableEl.disabled = false;
  enableEl.addEventListener("click", () => {
    subscribe(registration).catch((err) => say(`Could not turn alerts on: ${err.message}`, "error"));
  });
}

start().catch((err) => say(`Could not start: ${err.message}`, "error"));
