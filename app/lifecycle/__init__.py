"""Consent lifecycle: consents that end (validity, inactivity), the sweep that ends them, re-permission."""
