"""Command-line tools: the spend report and the audited operator actions."""
