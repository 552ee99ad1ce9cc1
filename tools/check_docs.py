"""Check the built site (site/) in a real browser: headless Chromium, opened from file://, no server.

    .venv/bin/python tools/check_docs.py [--site site] [--screenshots DIR] [--chromium PATH]

For each page in ``PAGES`` and each width in ``WIDTHS`` it loads the page, waits for the theme's
script, and checks that nothing overflows horizontally (no element reaches past the window's right edge
unless a scrolling box holds it) and that every MathML formula was laid out. It then types
``ScoreDensityEstimator`` into the search box of the home page and checks that the results link to
its API page, that ``langevin`` finds ``scorefield.langevin`` among its first five results and no page of
the application (the demo, figures, command line) among them, and that no page asked for anything
outside the file system. Screenshots of every page
and width go to ``--screenshots``. Exit status 0 when every check passes, 1 otherwise.

Chromium is driven through its DevTools protocol over a pipe (``--remote-debugging-pipe``), with
``check_report``'s client, so no port is opened and nothing beyond the standard library is needed. On
Debian: ``apt-get install chromium``.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

from check_report import BrowserError, Chromium, find_chromium  # this folder is sys.path[0]

ROOT = Path(__file__).resolve().parent.parent
PAGES = (
    "index.html",
    "tutorial.html",
    "guides/command-line.html",
    "api/scorefield.estimators.density.html",
    "math.html",
    "troubleshooting.html",
)
WIDTHS = (1280, 400)
HEIGHT = 900
# query: the part of a URL that one of its first results must hold, and how many results may come before it
QUERIES = {"ScoreDensityEstimator": ("scorefield.estimator", 10), "langevin": ("scorefield.langevin", 5)}
APPLICATION = (
    "scorefield.demo",
    "scorefield.viz",
    "scorefield.cli",
    "scorefield.report",
)  # rank below the library
LOCAL = ("file:", "data:", "about:", "blob:")  # URL schemes that reach nothing outside the machine

# elements reaching past the right edge of the window, unless a box that scrolls or clips holds them
OVERFLOW_JS = """
(() => {
  const width = document.documentElement.clientWidth;
  const clipped = (el) => {
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      const o = getComputedStyle(a).overflowX;
      if ((o === "auto" || o === "scroll" || o === "hidden" || o === "clip")
          && a.getBoundingClientRect().right <= width + 1) return true;
    }
    return false;
  };
  const out = [];
  for (const el of document.querySelectorAll("body *")) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0 || r.right <= width + 1) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || style.position === "fixed") continue;
    if (clipped(el)) continue;
    out.push(`${el.tagName.toLowerCase()}.${el.getAttribute("class") || ""} right=${Math.round(r.right)}: `
             + (el.textContent || "").trim().slice(0, 60));
  }
  const maths = [...document.querySelectorAll("math")];
  const empty = maths.filter((m) => m.getBoundingClientRect().width === 0 && m.offsetParent !== null);
  return {width, scrollWidth: document.documentElement.scrollWidth, overflowing: out.slice(0, 8),
          count: out.length, maths: maths.length, emptyMaths: empty.length};
})()
"""

SEARCH_JS = """
new Promise((resolve) => {
  const input = document.querySelector("[data-md-component=search-query]");
  if (!input) return resolve({error: "no search box"});
  input.focus();
  input.value = "";
  for (const type of ["focus", "input", "keyup"]) input.dispatchEvent(new Event(type, {bubbles: true}));
  input.value = QUERY;
  for (const type of ["focus", "input", "keyup"]) input.dispatchEvent(new Event(type, {bubbles: true}));
  const start = Date.now();
  const poll = () => {
    const items = [...document.querySelectorAll(".md-search-result__item a, .md-search-result__link")];
    if (items.length || Date.now() - start > 15000) {
      resolve({results: items.slice(0, 10).map((a) => [a.getAttribute("href"), a.textContent.trim().slice(0, 80)]),
               meta: (document.querySelector(".md-search-result__meta") || {}).textContent || ""});
    } else setTimeout(poll, 200);
  };
  poll();
})
"""


class Page(Chromium):
    """One page in the headless Chromium of ``check_report`` (the DevTools pipe is shared with it)."""

    def __init__(self, binary: str):
        super().__init__(binary, timeout=30.0)
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Network"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params) -> dict:
        """A command to the page."""
        return self.send(method, params, self.session)

    def open(self, url: str, width: int) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width, height=HEIGHT, deviceScaleFactor=1, mobile=width < 600,
        )  # fmt: skip
        self.events.clear()
        if self.call("Page.navigate", url=url).get("loaderId"):  # none within one page
            self.wait_for("Page.loadEventFired", self.session)
        self.evaluate("new Promise((r) => setTimeout(r, 500))")  # the theme's script settles the layout

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(result["exceptionDetails"].get("text", "script error"))
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def requests(self) -> list[str]:
        """URLs outside the file system that the page asked for since the last call."""
        sent = [e for e in self.events if e.get("method") == "Network.requestWillBeSent"]
        self.events = [e for e in self.events if e not in sent]
        urls = [e["params"]["request"]["url"] for e in sent]
        return [url for url in urls if not url.startswith(LOCAL)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=ROOT / "site")
    parser.add_argument("--screenshots", type=Path, help="folder for a screenshot of every page and width")
    parser.add_argument("--chromium", default=find_chromium())
    args = parser.parse_args(argv)
    if not args.chromium:
        print("check-docs: no chromium on PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    if not (args.site / "index.html").is_file():
        print(f"check-docs: no {args.site}/index.html; build the site first (make docs)", file=sys.stderr)
        return 2
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)

    failures: list[str] = []
    outside: set[str] = set()
    browser = Page(args.chromium)
    try:
        for page in PAGES:
            url = (args.site / page).resolve().as_uri()
            for width in WIDTHS:
                browser.open(url, width)
                layout = browser.evaluate(OVERFLOW_JS)
                ok = layout["count"] == 0 and layout["emptyMaths"] == 0
                print(
                    f"{'ok  ' if ok else 'FAIL'} {page} at {width}px: scroll width {layout['scrollWidth']} "
                    f"for {layout['width']}, {layout['count']} overflowing, "
                    f"{layout['maths']} formulas ({layout['emptyMaths']} not laid out)"
                )
                for line in layout["overflowing"]:
                    print(f"       {line}")
                if not ok:
                    failures.append(f"{page} at {width}px")
                if args.screenshots:
                    browser.screenshot(args.screenshots / f"{page.replace('/', '_')}-{width}.png")
                outside.update(browser.requests())

        for query, (expected, within) in QUERIES.items():
            browser.open((args.site / "index.html").resolve().as_uri(), 1280)
            found = browser.evaluate(SEARCH_JS.replace("QUERY", json.dumps(query)))
            if args.screenshots:
                browser.screenshot(args.screenshots / f"search-{query}-1280.png")
            outside.update(browser.requests())
            first = [href or "" for href, _ in found.get("results", [])[:within]]
            hits = [href for href in first if expected in href]
            application = [href for href in first if any(f"api/{name}" in href for name in APPLICATION)]
            meta = found.get("meta", "").strip()
            print(
                f"{'ok  ' if hits else 'FAIL'} search for {query} from file://, {expected} in the first {within}: {meta}"
            )
            for href, text in found.get("results", [])[:5]:
                print(f"       {href}  {text}")
            if not hits:
                failures.append(
                    f"search for {query}: {found.get('error') or f'{expected} not in the first {within}'}"
                )
            if application:
                failures.append(f"search for {query}: the application's pages rank first: {application}")
    finally:
        browser.close()

    print(f"{'ok  ' if not outside else 'FAIL'} requests outside the file system: {len(outside)}")
    for url in sorted(outside):
        print(f"       {url}")
    if outside:
        failures.append("requests outside the file system")
    if failures:
        print("check-docs failed: " + "; ".join(failures), file=sys.stderr)
        return 1
    print("check-docs: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
