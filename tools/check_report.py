#!/usr/bin/env python3
"""Check an HTML report in a real browser: headless Chromium renders the page at several viewport
widths and reports, for each, whether the page scrolls sideways, whether every image loaded, and
every console message of level error (and uncaught exception).

    python tools/check_report.py runs/demo/report.html            # 1280 px desktop, 400 px phone
    python tools/check_report.py page.html --width 400:desktop --screenshots shots/

A width is ``N`` or ``N:phone`` (mobile emulation, which honours the page's viewport declaration,
device pixel ratio 2) or ``N:desktop`` (a desktop window N pixels wide). By default the page is
checked at 1280 px on a desktop and at 400 px on a phone and in a 400 px desktop window. The page
passes at a width when

- ``document.documentElement.scrollWidth <= window.innerWidth`` (no horizontal overflow), and no
  wider than the width asked for (on a phone a page that overflows also widens ``innerWidth``, as
  the browser zooms out to show it),
- no box hides content sideways: an element that scrolls or clips horizontally (``overflow-x``
  ``auto``, ``scroll``, ``hidden`` or ``clip``) holds nothing wider than itself, so a reader never
  has to find a sideways scroll bar to see a table, a figure or an equation whole,
- every ``<img>`` is ``complete`` with ``naturalWidth > 0`` after decoding,
- every ``<math>`` element has a size (the browser renders MathML),
- nothing was logged at level error and no exception was thrown.

It talks to Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
messages separated by NUL bytes on file descriptors 3 and 4), so it needs nothing beyond the
standard library and a Chromium binary (Debian: ``apt-get install chromium``). Exit status 0 when
every width passes, 1 when one fails, 2 when the browser cannot be run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-pipe",
)
DEFAULT_WIDTHS = ("1280:desktop", "400:phone", "400:desktop")
HEIGHT = 900

# runs in the page: waits for every image to decode, then measures
MEASURE = """
(async () => {
  const images = Array.from(document.images);
  await Promise.all(images.map((img) => (img.decode ? img.decode().catch(() => null) : null)));
  const root = document.documentElement;
  const broken = images.filter((img) => !(img.complete && img.naturalWidth > 0))
    .map((img) => img.alt || img.currentSrc.slice(0, 60));
  const maths = Array.from(document.querySelectorAll("math"));
  const unrendered = maths.filter((el) => { const r = el.getBoundingClientRect(); return !(r.width > 0 && r.height > 0); });
  const name = (el) => el.tagName.toLowerCase() + (typeof el.className === "string" && el.className ? "." + el.className : "") + (el.id ? "#" + el.id : "");
  const all = Array.from(document.body.querySelectorAll("*"));
  const sticking = all.filter((el) => el.getBoundingClientRect().right > window.innerWidth + 0.5).slice(0, 8).map(name);
  const hidden = all.filter((el) => ["auto", "scroll", "hidden", "clip"].includes(getComputedStyle(el).overflowX)
                                    && el.scrollWidth > el.clientWidth + 1)
    .slice(0, 8).map((el) => `${name(el)} (${el.scrollWidth} px in ${el.clientWidth} px${el.id ? "" : ", in " + name(el.closest("[id]") || document.body)})`);
  const shrunk = images.map((img) => img.getBoundingClientRect().width / (img.width || 1));
  return {
    scrollWidth: root.scrollWidth, innerWidth: window.innerWidth, clientWidth: root.clientWidth,
    images: images.length, broken: broken, maths: maths.length, unrenderedMaths: unrendered.length,
    sticking: sticking, hidden: hidden, title: document.title, smallestImageScale: shrunk.length ? Math.min(...shrunk) : 1,
    viewportMeta: !!document.querySelector('meta[name="viewport"]'),
  };
})()
"""


class BrowserError(RuntimeError):
    """Chromium could not be started, or stopped answering."""


def find_chromium(explicit: str | None = None) -> str | None:
    """The Chromium binary: ``explicit``, ``$CHROMIUM``, or ``chromium`` / ``chromium-browser`` /
    ``google-chrome`` on the PATH; None when there is none."""
    for candidate in (explicit, os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (path := shutil.which(candidate)):
            return path
    return None


class Chromium:
    """A headless Chromium driven over ``--remote-debugging-pipe``."""

    def __init__(self, binary: str, timeout: float = 60.0):
        self.timeout, self.next_id, self.buffer, self.events = timeout, 0, b"", []
        self.profile = tempfile.mkdtemp(prefix="check-report-")
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()

        def descriptors() -> None:  # in the child: the browser reads commands on 3 and writes replies on 4
            # copy both ends out of the way first: a pipe's own descriptor may already be 3 or 4
            read, write = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(read, 3)
            os.dup2(write, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"]
        # the pipes are not inheritable (PEP 446); only the copies made on 3 and 4 reach the browser
        self.process = subprocess.Popen(
            command, preexec_fn=descriptors, close_fds=False, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        os.close(to_browser_r)
        os.close(from_browser_w)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and wait for its reply (collecting the events that arrive meanwhile)."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str) -> dict:
        """Wait for the event ``method`` of ``session`` (or take it from those already collected)."""
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._receive())

    def _receive(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.from_browser], [], [], max(left, 0))
            if not ready:
                raise BrowserError(f"no answer from the browser in {self.timeout:g} s")
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                err = (
                    self.process.stderr.read().decode(errors="replace")[-2000:] if self.process.stderr else ""
                )
                raise BrowserError(f"the browser closed its pipe (exit {self.process.poll()}): {err}")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                self.send("Browser.close")
        except (BrowserError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self.to_browser, self.from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.process.stderr:
            self.process.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _errors(events: list[dict], session: str) -> list[str]:
    """The console errors and uncaught exceptions among ``events`` of ``session``."""
    found = []
    for event in events:
        if event.get("sessionId") != session:
            continue
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = params.get("args", [])
            found.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in args))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            found.append(
                "exception: " + str(details.get("exception", {}).get("description", details.get("text")))
            )
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            found.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
    return found


def check_width(browser: Chromium, url: str, width: int, phone: bool, screenshots: Path | None) -> dict:
    """Render ``url`` at ``width`` CSS pixels (as a phone or a desktop window) and measure it."""
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    try:
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable", session=session)
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": HEIGHT, "deviceScaleFactor": 2 if phone else 1, "mobile": phone},
            session=session,
        )
        browser.events.clear()
        browser.send("Page.navigate", {"url": url}, session=session)
        browser.wait_for("Page.loadEventFired", session)
        measured = browser.send(
            "Runtime.evaluate",
            {"expression": MEASURE, "awaitPromise": True, "returnByValue": True},
            session=session,
        )
        if "exceptionDetails" in measured:
            raise BrowserError(f"the measuring script failed: {measured['exceptionDetails']}")
        result = measured["result"]["value"]
        if screenshots is not None:
            screenshots.mkdir(parents=True, exist_ok=True)
            shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)
            name = f"{width}-{'phone' if phone else 'desktop'}.png"
            (screenshots / name).write_bytes(base64.b64decode(shot["data"]))
        result["errors"] = _errors(browser.events, session)
    finally:
        browser.send("Target.closeTarget", {"targetId": target})
    result |= {"width": width, "device": "phone" if phone else "desktop"}
    result["problems"] = problems(result)
    return result


def problems(result: dict) -> list[str]:
    """What fails at one width, in words (empty when it passes)."""
    found = []
    # on a phone a page wider than the screen also widens window.innerWidth (the browser zooms out to
    # fit it), so the page is held to the width asked for, which is also its layout viewport's
    allowed = min(result["innerWidth"], result["clientWidth"], result["width"])
    if result["scrollWidth"] > allowed:
        found.append(
            f"the page is {result['scrollWidth']} px wide in a {allowed} px viewport"
            + (f" (sticking out: {', '.join(result['sticking'])})" if result["sticking"] else "")
        )
    if result["hidden"]:
        found.append(f"content hidden in boxes that scroll or clip sideways: {', '.join(result['hidden'])}")
    if result["broken"]:
        found.append(
            f"{len(result['broken'])} of {result['images']} images did not load: {result['broken'][:5]}"
        )
    if result["unrenderedMaths"]:
        found.append(f"{result['unrenderedMaths']} of {result['maths']} equations have no size")
    found += result["errors"]
    return found


def parse_width(text: str) -> tuple[int, bool]:
    width, _, kind = text.partition(":")
    if kind not in ("", "phone", "desktop"):
        raise argparse.ArgumentTypeError(f"a width is N, N:phone or N:desktop, got {text!r}")
    return int(width), kind == "phone"


def check_report(
    path: str | Path,
    widths: list[tuple[int, bool]] | None = None,
    chromium: str | None = None,
    screenshots: Path | None = None,
    timeout: float = 60.0,
) -> list[dict]:
    """Check ``path`` at each of ``widths`` (default ``DEFAULT_WIDTHS``); one result per width."""
    binary = find_chromium(chromium)
    if binary is None:
        raise BrowserError("no Chromium found: install Debian's chromium, or pass --chromium PATH")
    widths = widths or [parse_width(w) for w in DEFAULT_WIDTHS]
    url = Path(path).resolve().as_uri()
    with Chromium(binary, timeout=timeout) as browser:
        return [check_width(browser, url, width, phone, screenshots) for width, phone in widths]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", type=Path, help="the HTML file to check")
    parser.add_argument(
        "--width",
        action="append",
        type=parse_width,
        dest="widths",
        help="N, N:phone or N:desktop (repeatable; default 1280:desktop, 400:phone, 400:desktop)",
    )
    parser.add_argument("--chromium", help="the browser binary (default: chromium on the PATH)")
    parser.add_argument(
        "--screenshots", type=Path, help="save a screenshot of the top of the page per width here"
    )
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for any one answer")
    args = parser.parse_args(argv)
    if not args.page.is_file():
        print(f"check_report: no such file: {args.page}", file=sys.stderr)
        return 2
    try:
        results = check_report(args.page, args.widths, args.chromium, args.screenshots, args.timeout)
    except BrowserError as error:
        print(f"check_report: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results, indent=2))
    failed = False
    for r in results:
        status = "ok" if not r["problems"] else "FAIL"
        failed |= bool(r["problems"])
        print(
            f"{status}: {r['width']} px {r['device']}: page {r['scrollWidth']} px wide (viewport {r['innerWidth']} px), "
            f"{r['images'] - len(r['broken'])}/{r['images']} images loaded, "
            f"{r['maths'] - r['unrenderedMaths']}/{r['maths']} equations rendered, {len(r['errors'])} console errors"
        )
        for problem in r["problems"]:
            print(f"  - {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
