"""Twilio: signed inbound SMS/WhatsApp webhooks (start words, STOP, HELP) and status callbacks."""
