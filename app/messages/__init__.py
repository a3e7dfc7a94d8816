"""Outbound messages: routing with the send gate, the transactional outbox and the dispatcher."""
