"""The consent ledger: contacts, contact points, consents (the projection), events (the chain), suppressions."""
