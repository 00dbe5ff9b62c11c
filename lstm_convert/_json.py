"""JSON read from files: nesting too deep for the parser is a ValueError like any other malformed JSON."""

from __future__ import annotations

import json
from typing import Any


def loads(raw: str | bytes, **options: Any) -> Any:
    try:
        return json.loads(raw, **options)
    except RecursionError:
        raise ValueError("nested deeper than any model configuration") from None
