"""The domain core: pure rules, no I/O, importing nothing from the rest of the service."""
