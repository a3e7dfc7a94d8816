"""Imports: lists streamed in as CSV (the Robinson list), matched against the ledger in constant memory."""
