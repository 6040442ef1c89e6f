"""Changing where a town is served: its `placement` in its own town file, the one place everything reads it from.

A failover writes the new placement before it moves anything (desired state first, then the move), so the next
`plan` moves the town's `db` Service, the Ansible inventory gives each site its new role, and an auditor sees the
move in git. The file is rewritten in place: comments, key order and quoting are kept; a placement equal to the
consortium's default (primary site, then DR site) is removed rather than spelled out.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from ruamel.yaml import YAML

from kumiai.errors import InputError, Problem
from kumiai.inventory import TOWNS_DIR, Inventory, load_town


def town_file(inv: Inventory, town_id: str) -> Path:
    for suffix in (".yaml", ".yml"):
        path = inv.root / TOWNS_DIR / f"{town_id}{suffix}"
        if path.is_file():
            return path
    raise InputError(Problem(str(inv.root / TOWNS_DIR), "id", f"no file for town {town_id!r}"))


def render_placement(text: str, primary: str, dr: str, *, default: tuple[str, str]) -> str:
    """The town file's text with its placement set (or removed when it is the default). Pure."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    data = yaml.load(text)
    if (primary, dr) == default:
        data.pop("placement", None)
    else:
        placement = data.get("placement")
        if placement is None:
            data["placement"] = {"primary": primary, "dr": dr}
        else:
            placement["primary"], placement["dr"] = primary, dr
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def write_placement(inv: Inventory, town_id: str, primary: str, dr: str) -> Path | None:
    """Set the town's placement in its file; the file's path when it changed, None when it already said so."""
    site_ids = [s.id for s in inv.consortium.sites]
    for field, site in (("primary", primary), ("dr", dr)):
        if site not in site_ids:
            raise InputError(Problem("--to", field, f"unknown site {site!r}; sites are: {', '.join(site_ids)}"))
    path = town_file(inv, town_id)
    text = path.read_text(encoding="utf-8")
    new = render_placement(text, primary, dr, default=(inv.primary_site.id, inv.dr_site.id))
    if new == text:
        return None
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new, encoding="utf-8")
    # The rewritten file must load as the town it was, only moved; otherwise nothing is replaced.
    town, problems = load_town(tmp.with_name(path.name), inv.consortium, data=YAML(typ="safe").load(new))
    if town is None or problems:
        tmp.unlink()
        raise InputError(problems or Problem(str(path), "placement", "the rewritten file does not load"))
    os.replace(tmp, path)
    return path
