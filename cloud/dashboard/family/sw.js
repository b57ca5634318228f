// Service worker of the family page: shows each push as a notification, opens it on click.
"use strict";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch (err) {
    data = { title: "守望 Shouwang", body: "New alert: open the app." };
  }
  const first = (data.alerts || [])[0];
  const options = {
    body: data.body || "",
    icon: "/family/static/icons/icon-192.png",
    badge: "/family/static/icons/icon-192.png",
    // One notification per alert (a repeat replaces it); digests replace each other.
    tag: data.digest ? "shouwang-digest" : `alert-${first ? first.id : "unknown"}`,
    renotify: Boolean(data.critical),
    requireInteraction: Boolean(data.critical),  // a critical alert stays until someone acts
    data: { url: data.url || "/family/" },
  };
  event.waitUntil(self.registration.showNotification(data.title || "守望 Shouwang", options));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = new URL(event.notification.data.url, self.location.origin).href;
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    for (const client of windows) {
      if (client.url === url && "focus" in client) return client.focus();
    }
    return self.clients.openWindow(url);
  })());
});
