"""report.html: one self-contained page per report (figures inlined as SVG, nothing fetched),
checked as a browser renders it when headless Chromium is installed."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from alb.html import browser, screenshot
from alb.reporting import write_report

from test_report import fake_results


@pytest.fixture
def report(tmp_path):
    fake_results(tmp_path / "exp", ["random", "entropy", "noris"], offset={"noris": 0.05, "random": -0.03})
    return write_report(tmp_path / "exp")


def test_report_html_holds_every_part_and_fetches_nothing(report):
    page = (report / "report.html").read_text()
    assert page.count("<svg") == 2 and page.count('class="alb-figure"') == 2  # curves and PPM, inlined
    assert "accuracy against labelled images" in page and "pairwise penalty matrix" in page
    for heading in ("Pairwise penalty matrix", "Area under the learning curve", "Labels needed to reach"):
        assert f"<h2>{heading}" in page, heading
    assert page.count("<table>") >= 4  # per-cycle means, PPM, AULC, savings
    for strategy in ("random", "entropy", "noris"):
        assert re.search(rf"<t[dh][^>]*>{strategy}</t[dh]>", page), strategy
    # nothing outside the file: no stylesheet, script or image by URL, no external reference
    assert not re.search(r"<(link|script|img|iframe)\b", page)
    assert not re.search(r"""(src|href)=["'](?!#|data:)""", page), re.findall(r"""(?:src|href)=["'][^"']*""", page)[:5]
    assert not re.search(r"url\((?!#)", page)


@pytest.mark.skipif(browser() is None, reason="needs a headless Chromium (apt install chromium)")
def test_report_html_renders_its_figures_in_a_browser(report, tmp_path):
    png = screenshot(report / "report.html", tmp_path / "report.png", width=1280, height=1600)
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (1600, 1280)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)    # random's curve: red
    purple = (abs(pixels[..., 0] - 0x44) < 20) & (pixels[..., 1] < 30) & (abs(pixels[..., 2] - 0x54) < 25)  # PPM's 0 cells
    drawn = (pixels.sum(axis=2) < 600).mean()
    assert red.sum() > 200, "the learning curves did not render"
    assert purple.sum() > 2000, "the PPM heatmap did not render"
    assert 0.02 < drawn < 0.9
