"""The bench report in a real headless Chromium: every section renders, every figure decodes, nothing breaks."""

import re

from browser import chromium

SECTIONS = {
    "overview": "Overview",
    "zeroshot": "Zero-shot classification",
    "adapt": "Few-shot adaptation",
    "retrieval": "Retrieval and caption scoring",
    "ood": "OOD detection",
    "calibration": "Calibration and selective classification",
    "estimate": "Label-free accuracy estimation",
}

# Per figure: (loaded and decoded, natural width, rendered width); rendered width 0 means not laid out.
FIGURES_JS = """
return [...document.querySelectorAll('figure img')].map(
  i => [i.complete && i.naturalWidth > 0, i.naturalWidth, i.getBoundingClientRect().width]);
"""


def _check_report(driver, path):
    driver.get(path.as_uri())
    assert driver.title == "cliplab bench report"
    for anchor, title in SECTIONS.items():
        section = driver.find_element("id", anchor)
        heading = section.find_element("tag name", "h2")
        assert heading.text == title and heading.is_displayed(), anchor
        assert section.size["height"] > 60, anchor
    nav = [a.get_attribute("href").split("#")[1] for a in driver.find_elements("css selector", "nav a")]
    assert nav == list(SECTIONS)
    figures = driver.execute_script(FIGURES_JS)
    assert len(figures) >= 9  # samples, confusions, few-shot, base-to-new, 2 ROC, reliability, risk-coverage, estimate
    for ok, natural, shown in figures:
        assert ok and natural > 100 and shown > 200, figures
    for table in driver.find_elements("css selector", "section table"):
        assert table.find_elements("css selector", "tbody tr"), table.text
    cards = driver.find_elements("css selector", "#overview .card")
    assert len(cards) >= 5 and all(re.search(r"\d", c.text) for c in cards)
    # nothing wider than the window (no horizontal scrolling)
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors


def test_report_renders_in_chromium(bench_run):
    out, _ = bench_run
    with chromium() as driver:
        _check_report(driver, out / "report.html")


def test_a_broken_figure_is_detected(bench_run, tmp_path):
    """The check above is not vacuous: a report with one corrupt embedded PNG fails it."""
    import pytest

    out, _ = bench_run
    html = (out / "report.html").read_text()
    broken = tmp_path / "report.html"
    broken.write_text(html.replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAAA", 1))
    with chromium() as driver, pytest.raises(AssertionError, match=r"\[False, 0"):
        _check_report(driver, broken)
