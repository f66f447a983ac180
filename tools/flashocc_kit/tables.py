"""Plain-text tables for the terminal (status, stacks, series, the gate)."""

from __future__ import annotations


def format_table(rows: list[dict[str, str]]) -> str:
    """Rows of equal keys as aligned columns under a header and a rule."""
    if not rows:
        return ""
    headers = list(rows[0])
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in headers]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(r[h]).ljust(w) for h, w in zip(headers, widths)) for r in rows]
    return "\n".join(lines)
