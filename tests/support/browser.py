"""Reports people read are checked the way they read them: rendered by headless Chromium (Debian's `chromium`).

Screenshots are kept as test artefacts under out/screenshots/ (git-ignored), so a person can look at them.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = ROOT / "out" / "screenshots"


def chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        raise AssertionError("chromium is not installed: scripts/install-lab-deps.sh installs it")
    return exe


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    # A profile of its own per run: two tests never share a browser, and nothing is read from the user's.
    with tempfile.TemporaryDirectory(prefix="kumiai-chromium-") as profile:
        cmd = [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            *args,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def rendered_dom(html: Path) -> str:
    """The document after Chromium has loaded it offline (scripts run), as HTML text."""
    proc = _run("--dump-dom", html.resolve().as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def screenshot(html: Path, name: str, *, width: int = 1280, height: int = 1600) -> Path:
    """A PNG of the page as Chromium shows it, kept as out/screenshots/<name>.png."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    png = ARTEFACTS / f"{name}.png"
    png.unlink(missing_ok=True)
    proc = _run(f"--screenshot={png}", f"--window-size={width},{height}", "--hide-scrollbars", html.resolve().as_uri())
    assert proc.returncode == 0 and png.exists() and png.stat().st_size > 1000, proc.stderr[-2000:]
    return png
