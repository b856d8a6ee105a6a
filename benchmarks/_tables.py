"""What every benchmark script does with its table: print it and write it (markdown, UTF-8)."""

from __future__ import annotations

import os


def write_table(table: str, path: str) -> None:
    table = table.rstrip("\n") + "\n"
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(table)
    print("wrote", path)
