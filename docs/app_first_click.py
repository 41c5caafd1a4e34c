"""The web app's first click, as a person meets it (issue 31): ``jointdiff serve`` with the shipped miniature, the page
opened in headless Chromium, Generate pressed once with nothing changed, the page saved as a screenshot.

    python docs/app_first_click.py --out docs/app-first-click.png      # needs Debian's chromium and playwright

Prints the time from the click to the images shown.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/app-first-click.png"))
    p.add_argument("--chromium", default=os.environ.get("JOINTDIFF_CHROMIUM", "/usr/bin/chromium"))
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "serve.log"
        with log.open("w") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "jointdiff", "serve", "--port", str(port)], stdout=out, stderr=out, env=env
            )
            try:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        if urllib.request.urlopen(url, timeout=2).status == 200:
                            break
                    except OSError:
                        pass
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"jointdiff serve did not start:\n{log.read_text()[-2000:]}")
                    time.sleep(0.3)
                with sync_playwright() as pw:
                    browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
                    page = browser.new_page(viewport={"width": 1280, "height": 900})
                    page.goto(url)
                    page.wait_for_function("document.querySelectorAll('#reference-preview img').length >= 1")
                    t0 = time.perf_counter()
                    page.click("#generate")
                    page.wait_for_function(
                        "document.querySelectorAll('#gallery img').length >= 1 && "
                        "[...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth)",
                        timeout=120_000,
                    )
                    seconds = time.perf_counter() - t0
                    status = page.locator("#status").inner_text()
                    page.screenshot(path=str(args.out), full_page=True)
                    browser.close()
            finally:
                server.terminate()
                server.wait(10)
    print(f"first click -> images shown: {seconds:.2f} s; status: {status.strip()}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
