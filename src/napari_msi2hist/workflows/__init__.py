"""Whole jobs (one generator each, taking a frozen config) that the CLI and the widgets share."""
