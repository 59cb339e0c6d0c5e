"""`report.html`: one self-contained page per report, for a browser or an e-mail.

The page is the report's summary.md rendered to HTML (Python-Markdown, tables extension)
with the report's figures inlined as SVG (matplotlib draws text as paths, so no font is
needed either): nothing is fetched from the network or from another file."""

from __future__ import annotations

import html
import re
from pathlib import Path

import markdown
from jinja2 import Template

from alb.results import atomic_write_text

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="alb {{ version }}">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5rem 1rem 1rem 0; vertical-align: top; }
figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.85rem; color: #555; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<section id="figures">
{% for caption, svg in figures %}<figure class="alb-figure">{{ svg }}<figcaption>{{ caption }}</figcaption></figure>
{% endfor %}</section>
<section id="report">
{{ body }}
</section>
</body>
</html>
""")


def inline_svg(path: Path) -> str:
    """An SVG file's <svg> element, without its XML prolog and DOCTYPE (for inlining)."""
    text = path.read_text()
    return text[text.index("<svg"):]


def write_html(out: Path, title: str, summary_markdown: str, figures: list[tuple[str, Path]]) -> Path:
    """`out/report.html` from the summary's Markdown and the (caption, svg path) figures."""
    from alb._version import __version__
    # the summary's own first heading is the page title
    body_markdown = re.sub(r"\A# .*\n", "", summary_markdown)
    body = markdown.markdown(body_markdown, extensions=["tables"], output_format="html")
    page = PAGE.render(title=html.escape(title), version=__version__, body=body,
                       figures=[(html.escape(caption), inline_svg(path)) for caption, path in figures if path.is_file()])
    path = out / "report.html"
    atomic_write_text(path, page)
    return path


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser() -> str | None:
    """A headless-capable Chromium on PATH, or None."""
    import shutil
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 2400, timeout: float = 120.0) -> Path:
    """A PNG of `page` rendered by headless Chromium (Debian's `chromium` package), e.g. to
    check that a report's figures render: `python -m alb.html results/x/report/report.html`."""
    import subprocess
    import tempfile
    binary = browser()
    if binary is None:
        raise FileNotFoundError(f"no Chromium on PATH (looked for {', '.join(BROWSERS)}); e.g. apt install chromium")
    with tempfile.TemporaryDirectory() as profile:  # a throw-away profile: nothing of the user's is read
        subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={Path(png).resolve()}", Path(page).resolve().as_uri()],
                       check=True, capture_output=True, timeout=timeout)
    return Path(png)


if __name__ == "__main__":
    import sys
    target = Path(sys.argv[1])
    print(screenshot(target, Path(sys.argv[2]) if len(sys.argv) > 2 else target.with_name("report_screenshot.png")))
