"""The console (``/console``): login links, staff sessions and the server-rendered pages (issue 18)."""
