/*
 * Consent service: service worker for web push. Serve it from your own site (a service worker must come from
 * the page's origin), e.g. at /consent-sw.js, and name it in data-service-worker of the button.
 *
 * Payloads sent by the consent service are JSON: {"title": "...", "body": "...", "url": "https://..."}.
 */
"use strict";

self.addEventListener("push", function (event) {
  var message = { title: "", body: "" };
  if (event.data) {
    try {
      message = event.data.json();
    } catch (error) {
      message = { title: event.data.text(), body: "" };
    }
  }
  event.waitUntil(
    self.registration.showNotification(message.title || "", {
      body: message.body || "",
      icon: message.icon,
      data: { url: message.url || "/" },
    })
  );
});

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var url = (event.notification.data && event.notification.data.url) || "/";
  event.waitUntil(self.clients.openWindow(url));
});
