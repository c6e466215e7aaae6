"""Write ``docs/dashboard.png``, the README's picture of the dashboard, from a run of the
dashboard's browser test (``tests/web/test_dashboard_browser.py``), which saves a screenshot
of each page: a real ``loom serve``, real agent processes, headless Chromium.

Usage: .venv/bin/python scripts/dashboard_png.py [PAGE]   (PAGE: agents, agent, topology,
topics, tail, timeline, deadletters, login; default agent)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = "tests/web/test_dashboard_browser.py"


def main() -> int:
    page = sys.argv[1] if len(sys.argv) > 1 else "agent"
    with tempfile.TemporaryDirectory(prefix="loom-dashboard-") as tmp:
        base = Path(tmp) / "run"
        run = [sys.executable, "-m", "pytest", "-q", TEST, f"--basetemp={base}"]
        if subprocess.run(run, cwd=ROOT, check=False).returncode != 0:
            print("the browser test failed: no picture written", file=sys.stderr)
            return 1
        shot = next(base.glob(f"*/screenshots/{page}.png"), None)
        if shot is None:
            print(f"no screenshot of page {page!r}", file=sys.stderr)
            return 1
        shutil.copyfile(shot, ROOT / "docs" / "dashboard.png")
    print(f"docs/dashboard.png: the {page} page")
    return 0


if __name__ == "__main__":
    sys.exit(main())
