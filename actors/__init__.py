"""Ray actor shells: load a stage backend once, serve calls, report timings and health."""
