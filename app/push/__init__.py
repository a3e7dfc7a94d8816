"""App push and web push: OS/browser permissions reported with the notice shown, VAPID keys, subscriptions."""
