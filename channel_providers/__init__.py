"""Provider adapters (SMTP, Twilio, web push, FCM/APNs, print) behind one Protocol."""
