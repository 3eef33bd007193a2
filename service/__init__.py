"""The `cameofarm` command line (and, later, the HTTP API)."""
