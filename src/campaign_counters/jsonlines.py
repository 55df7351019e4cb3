"""Decoding one JSON Lines record, as fast as the platform allows.

Event files and histories run to millions of lines, and the standard
library's decoder is a third of the time spent reading them; orjson (a
dependency) decodes about three times faster. The fallback keeps the
package usable where orjson cannot be installed.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson

    loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency
    loads = json.JSONDecoder().decode

__all__ = ["decode_error", "loads", "loads_line"]


def decode_error(exc: ValueError) -> str:
    """The decoder's reason, without the line's text."""
    return getattr(exc, "msg", None) or str(exc)


def loads_line(line: bytes) -> Any:
    """One line of bytes; ValueError (UnicodeDecodeError included) when it is not JSON text."""
    return loads(line.decode("utf-8"))
