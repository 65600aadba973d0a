"""Whole jobs that the CLI and the widgets share: one generator per job, taking a frozen config."""
