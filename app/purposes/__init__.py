"""Purposes: what messages are for."""
