"""Reference backends: run on any CPU with weights that install from the package index."""
