"""Reports: the metric catalogue, its rollups and ``/v1/reports`` (docs/reporting.md)."""
