"""A real headless Chromium for the tests, driven by Playwright: Debian's ``chromium``, never a
browser Playwright downloads. Installed with apt-get when missing and the tests run as root
(a fresh CI machine), as tests/slurm_cluster.py installs Slurm; else the tests skip."""

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def unavailable() -> str | None:
    """Why no Chromium can run here (a reason to skip), or None; installs Debian's
    ``chromium`` first if it is missing and this is root on Debian."""
    if os.path.exists(CHROMIUM):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"no {CHROMIUM}, and no root with apt-get to install Debian's chromium"
    quiet = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "chromium"], check=True, capture_output=True, env=quiet
    )
    return None if os.path.exists(CHROMIUM) else f"apt-get installed no {CHROMIUM}"


@contextmanager
def chromium() -> Iterator:
    """A Playwright Browser on Debian's Chromium, closed after."""
    from playwright.sync_api import sync_playwright  # the dev extra

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
