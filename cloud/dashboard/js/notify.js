// System notifications for a duty officer whose board is in a hidden tab: asked for with the
// sound switch (a click, as browsers require), sent only while the page is not visible.
let asked = false;

export async function askPermission() {
  if (asked || !("Notification" in window) || Notification.permission !== "default") return;
  asked = true;
  await Notification.requestPermission().catch(() => {});
}

export function notify(title, body, alert) {
  if (document.visibilityState !== "hidden" || !("Notification" in window)) return false;
  if (Notification.permission !== "granted") return false;
  const n = new Notification(title, {
    body, tag: alert.id, renotify: true, requireInteraction: alert.severity === "critical",
  });
  n.onclick = () => { window.focus(); n.close(); };
  return true;
}
