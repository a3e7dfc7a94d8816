"""The consent service.

Time-zone data: the service reads its zones from the ``tzdata`` package it pins (``pyproject.toml``), never from
the machine's ``/usr/share/zoneinfo`` (nor ``PYTHONTZPATH``), so every machine computes send windows and shown dates
with the same, current release (Debian 12's was 2025b, which still let Vancouver fall back in November 2026).
Consent ends are computed by the database (:func:`app.eligibility.repository.span_end_sql`);
:func:`app.workspaces.service.time_zone_drift` tells at start-up where the database's release reads a zone in use
otherwise.
"""

import zoneinfo

zoneinfo.reset_tzpath(to=[])  # the tzdata package only
