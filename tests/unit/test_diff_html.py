"""The HTML diff as an auditor opens it: one offline file, rendered by headless Chromium (screenshot kept)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_helpers import clean_env, kumiai
from git_helpers import commit_all, edit, repo_with_inventory

from support.browser import rendered_dom, screenshot


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The diff of a tier change, a removed segment and a failover, written as HTML."""
    root = tmp_path_factory.mktemp("html")
    inv = repo_with_inventory(root / "repo")
    edit(inv / "towns" / "nakai.yaml", "tier: s", "tier: m")
    edit(inv / "towns" / "kiyokawa.yaml", "  - {name: 電子申請, segment: internet}\n", "")
    town = inv / "towns" / "manazuru.yaml"
    town.write_text(town.read_text(encoding="utf-8") + "placement:\n  primary: site-b\n  dr: site-a\n", "utf-8")
    commit_all(inv.parent, "changes")
    out = root / "diff.html"
    env = clean_env(KUMIAI_STATE_DIR=str(root / "state"))
    r = kumiai("--inventory", inv, "diff", "HEAD~1", "--format", "html", "--out", out, env=env, cwd=inv.parent)
    assert r.code == 0, r.stderr
    return out


def test_the_file_is_self_contained(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert '<meta charset="utf-8">' in text and "<style>" in text
    assert not re.search(r"<(link|script|img|iframe)\b", text)  # nothing fetched, nothing run
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", text)


def test_chromium_shows_summary_towns_and_collapsible_diffs(page: Path) -> None:
    dom = rendered_dom(page)
    for name in ("中井町", "清川村", "真鶴町"):
        assert name in dom
    assert dom.count("<details") >= 8  # nakai's quotas and limits at two sites, at least
    assert "<table>" in dom and "database moves site-a → site-b" in dom
    assert "resources will be REMOVED" in dom and 'class="remove"' in dom
    png = screenshot(page, "diff")
    assert png.stat().st_size > 20_000  # a page with tables and colour, not a blank one
