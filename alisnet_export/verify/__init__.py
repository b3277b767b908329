"""Is the artifact still the float model? Metrics and gates (``parity``), re-checking shipped artifacts
against their float checkpoint (``recheck``), and the reports both write (``reports``: JSON, JUnit XML,
Markdown, HTML with overlays)."""
