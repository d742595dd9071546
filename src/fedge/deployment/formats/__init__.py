"""Artifact formats, one module (or package) per target format."""
