"""Standalone C from the IR (see :mod:`fedge.deployment.formats.c.emit`)."""

from fedge.deployment.formats.c.emit import CSource, emit_c

__all__ = ["CSource", "emit_c"]
