"""The front door: the landing page at ``/`` and the interactive API reference at ``/schema``.

Both are server-rendered and load nothing from another origin: the page's CSS and the reference's Swagger UI
(vendored from npm into ``app/static/vendor/``, see ``scripts/vendor_assets.py``) come from this service, and a
strict Content-Security-Policy says so to the browser.
"""
