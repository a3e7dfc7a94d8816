"""Constraints on text that ends up in a mail header (a subject, a purpose name in a subject)."""

from __future__ import annotations

import msgspec

# C0 and C1 controls and the Unicode line and paragraph separators: all of them end a line for str.splitlines().
# The end is "(?![\s\S])", not "$": Python's "$" also matches before a final newline (and "\Z" is not ECMAScript).
SINGLE_LINE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*(?![\s\S])"
SINGLE_LINE_MESSAGE = "must be a single line of text: no line breaks, tabs or other control characters"

# CR/LF in a mail header fails the send on every retry (or, worse, adds a header): refused at input instead.
# Combine with the length: ``Annotated[str, msgspec.Meta(min_length=1, max_length=200), SINGLE_LINE]``.
SINGLE_LINE = msgspec.Meta(pattern=SINGLE_LINE_PATTERN)
