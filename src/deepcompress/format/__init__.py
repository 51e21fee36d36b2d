"""The ``.dcz`` file: writer, strict reader and per-layer inspection (docs/FORMAT.md)."""

from deepcompress.format.inspect import inspect_bytes, inspect_file
from deepcompress.format.reader import from_bytes, load_compressed, parse_layout
from deepcompress.format.writer import save, to_bytes, with_attachments

__all__ = ["from_bytes", "inspect_bytes", "inspect_file", "load_compressed", "parse_layout", "save", "to_bytes", "with_attachments"]
