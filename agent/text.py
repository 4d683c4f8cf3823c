"""Text for one line of output: names from the file system and the bucket shown the same way everywhere.

A file name that is not UTF-8 reaches Python as surrogate escapes (``os.fsdecode``), which SQLite, JSON
and terminals reject or mangle; a bucket key may hold a newline that would split a log line. Every
surface (log, status, journal, ``dlq list``, ``sync``) shows such a name through ``printable``: the
undecodable byte as ``\\xff``, a control character as ``\\n``, never ``\\udcff`` or a broken line.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` safe for one log or status line: control characters and undecodable bytes escaped (``\\n``, ``\\xe9``)."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if "\udc80" <= ch <= "\udcff":  # a byte os.fsdecode could not decode (surrogateescape)
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif "\ud800" <= ch <= "\udfff":  # any other lone surrogate: not encodable anywhere
            out.append(f"\\u{ord(ch):04x}")
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)
