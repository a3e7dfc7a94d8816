"""Outbound change events: webhook subscriptions, a transactional outbox, signed and retried deliveries."""
