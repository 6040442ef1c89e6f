"""What every benchmark does with its figures: print them, keep the raw JSON, and replace its own section of
docs/benchmarks.md (`## <title>` up to the next section) with the Markdown it made."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_section(title: str, section: str) -> None:
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = (
        pattern.sub(lambda _m: section + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    )
    DOCS.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def publish(results: dict[str, Any], section: str, *, title: str, json_path: Path | None, write_docs: bool) -> None:
    print(json.dumps(results, indent=2))
    if json_path:
        json_path.write_text(json.dumps(results, indent=2) + "\n")
    print(section)
    if write_docs:
        write_section(title, section)
