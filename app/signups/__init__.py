"""Signups: starting an opt-in on a channel (records pending with its evidence and notice)."""
