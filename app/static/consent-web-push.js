/*
 * Consent service: web push opt-in button.
 *
 * <button data-consent-web-push
 *         data-vapid-key-url="https://consent.example.com/v1/push/web/vapid-public-key?workspace=WORKSPACE_ID"
 *         data-subscribe-url="/your-backend/push-subscriptions"
 *         data-purposes="newsletter"
 *         data-notice-id="NOTICE_ID"
 *         data-service-worker="/consent-sw.js">Notify me</button>
 * <script src="/consent-web-push.js" defer></script>
 *
 * Only a click asks for the permission (browsers require a user gesture). After "allow" it subscribes with the
 * workspace's VAPID key and POSTs {subscription, purposes, notice_id} to data-subscribe-url: your backend adds
 * the contact and calls POST /v1/push/web-subscriptions with its API key (keys never go to the browser).
 * The button gets data-state="subscribed" | "denied" | "unsupported" | "error" and fires a
 * "consent-web-push" event with {detail: {state}}.
 */
(function () {
  "use strict";

  function keyBytes(base64url) {
    var padded = (base64url + "===".slice((base64url.length + 3) % 4)).replace(/-/g, "+").replace(/_/g, "/");
    var raw = atob(padded);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i += 1) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  function done(button, state) {
    button.setAttribute("data-state", state);
    button.dispatchEvent(new CustomEvent("consent-web-push", { bubbles: true, detail: { state: state } }));
  }

  async function subscribe(button) {
    if (!("serviceWorker" in navigator) || !("PushManager" in window) || !("Notification" in window)) {
      done(button, "unsupported");
      return;
    }
    var permission = await Notification.requestPermission();
    if (permission !== "granted") {
      done(button, "denied");
      return;
    }
    var registration = await navigator.serviceWorker.register(button.dataset.serviceWorker || "/consent-sw.js");
    await navigator.serviceWorker.ready;
    var answer = await fetch(button.dataset.vapidKeyUrl, { credentials: "omit" });
    if (!answer.ok) throw new Error("VAPID key: HTTP " + answer.status);
    var publicKey = (await answer.json()).public_key;
    var subscription = await registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: keyBytes(publicKey),
    });
    var purposes = (button.dataset.purposes || "").split(",").map(function (p) { return p.trim(); }).filter(Boolean);
    var saved = await fetch(button.dataset.subscribeUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        subscription: subscription.toJSON(),
        purposes: purposes,
        notice_id: button.dataset.noticeId || null,
      }),
    });
    if (!saved.ok) throw new Error("subscribe: HTTP " + saved.status);
    done(button, "subscribed");
  }

  function attach() {
    var buttons = document.querySelectorAll("[data-consent-web-push]");
    Array.prototype.forEach.call(buttons, function (button) {
      button.addEventListener("click", function () {
        subscribe(button).catch(function (error) {
          done(button, "error");
          if (window.console) console.error("consent web push:", error);
        });
      });
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", attach);
  else attach();
})();
