"""The enrollment and render pipelines, written as numbered steps."""
