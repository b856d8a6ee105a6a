"""Numbers and tables as text: the one Markdown table writer, the one number format of the reports,
and the one arrow that says which way a metric is better."""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["direction_arrow", "format_value", "table"]


def table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table: the ``head`` cells, the rule, then one line per row (cells as ``str``)."""
    lines = ["| " + " | ".join(str(c) for c in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def format_value(value: Any) -> str:
    """A metric's value as the reports print it: floats with 4 decimals, anything else as ``str``."""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def direction_arrow(higher_is_better: bool | None) -> str:
    """``"↑"`` when higher is better, ``"↓"`` when lower is, ``""`` when neither (a descriptive value)."""
    return "" if higher_is_better is None else ("↑" if higher_is_better else "↓")
