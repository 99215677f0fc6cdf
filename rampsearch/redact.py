"""Secrets never reach output or files: `redact(text)` hides the passwords of storage URLs in any text.

Three forms carry a password in an SQLAlchemy / libpq URL, and all are hidden wherever they appear
(a URL, a command line, an exception message): `user:PASSWORD@host`, a `password=` (or `passwd=`,
`pwd=`) query parameter, and libpq's `options=` parameter, whose value can set anything.
"""
from __future__ import annotations

import re
from typing import Iterable

HIDDEN = "***"
_USERINFO = re.compile(r"(?P<keep>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)[^\s/]*@")
_QUERY = re.compile(r"(?P<keep>(?:^|[?&;\s])(?:password|passwd|pwd|options)=)(?:'[^']*'|\"[^\"]*\"|[^&;\s]*)",
                    re.IGNORECASE)


def redact(text: str | None) -> str | None:
    """`text` with every storage password (and libpq `options`) replaced by ***."""
    if not text:
        return text
    text = _USERINFO.sub(lambda m: m["keep"] + HIDDEN + "@", text)
    return _QUERY.sub(lambda m: m["keep"] + HIDDEN, text)


def redact_command(argv: Iterable[str]) -> list[str]:
    """A command line (e.g. sys.argv) with its secrets hidden, argument by argument."""
    return [redact(a) for a in argv]
