"""The one exception type for user-facing mistakes.

A `SplitrtError` carries a one-line message that names what was wrong (the file, the field, the
flag and the value). The CLI prints it without a traceback and exits non-zero; every other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class SplitrtError(Exception):
    """A bad file, flag, message or state that the user can fix; the message says how."""


class ManifestError(SplitrtError):
    """A manifest, segment file or profile that is missing, malformed or tampered with."""
