"""The bench report in a real headless Chromium: every section renders, every image decodes, nothing breaks."""

import re

import pytest

from browser import chromium

SECTIONS = {
    "overview": "Overview",
    "zeroshot": "Zero-shot classification",
    "adapt": "Few-shot adaptation",
    "linear_probe": "Linear probe",
    "retrieval": "Retrieval and caption scoring",
    "probes": "Compositional probes",
    "geometry": "Embedding geometry",
    "ood": "OOD detection",
    "calibration": "Calibration and selective classification",
    "estimate": "Label-free accuracy estimation",
}

# Per image: [kind, decoded, natural width, rendered width]; kind is "figure" (a plot) or "sample" (a thumbnail).
IMAGES_JS = """
return [...document.images].map(i => [
  i.closest('figure') ? 'figure' : (i.closest('.sample') ? 'sample' : 'other'),
  i.complete && i.naturalWidth > 0, i.naturalWidth, Math.round(i.getBoundingClientRect().width)]);
"""


def _check_report(driver, path, *, min_figures, skipped=()):
    """Open ``path`` and check it as a reader would see it; ``skipped``: anchors of stages that did not run."""
    driver.get(path.as_uri())
    assert driver.title == "cliplab bench report"
    for anchor, title in SECTIONS.items():
        section = driver.find_element("id", anchor)
        heading = section.find_element("tag name", "h2")
        assert heading.text == title and heading.is_displayed(), anchor
        if anchor in skipped:
            note = section.find_element("css selector", ".note")
            assert note.is_displayed() and note.text.startswith("Not run: "), anchor
        else:
            assert section.size["height"] > 150, anchor
    nav = [a.get_attribute("href").split("#")[1] for a in driver.find_elements("css selector", "nav a")]
    assert nav == list(SECTIONS)

    images = driver.execute_script(IMAGES_JS)
    for kind, decoded, natural, shown in images:
        assert decoded, ("broken image", kind, natural, images)
        assert kind in ("figure", "sample"), images
        assert shown >= (300 if kind == "figure" else 80), ("too small on screen", kind, shown)
    assert sum(kind == "figure" for kind, *_ in images) >= min_figures
    samples = driver.find_elements("css selector", "#zeroshot .sample")
    grids = driver.find_elements("css selector", "#zeroshot .samples")
    assert grids and all(len(g.find_elements("css selector", ".sample")) == 24 for g in grids)
    assert len(samples) == 24 * len(grids)
    for s in samples:  # every thumbnail says what was predicted; the wrong ones also say the true class
        predicted, detail = s.find_element("class name", "p").text, s.find_element("class name", "t").text
        assert predicted and (detail == "correct" or detail.startswith("true: "))
        assert ("wrong" in s.get_attribute("class")) == (detail != "correct")

    tables = driver.find_elements("css selector", "section table")
    assert len(tables) >= 6
    for table in tables:
        assert table.find_elements("css selector", "tbody tr"), table.text
        assert not re.search(r"\b(nan|None|inf)\b", table.text), table.text
    cards = driver.find_elements("css selector", "#overview .card")
    assert len(cards) >= 4 and all(c.is_displayed() and re.search(r"\d", c.text) for c in cards)
    # nothing wider than the window (no horizontal scrolling)
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors


def test_report_renders_in_chromium(bench_run):
    out, _ = bench_run
    with chromium() as driver:
        # 3 confusions, few-shot, base-to-new, 2 ROC, reliability, risk-coverage, estimation
        _check_report(driver, out / "report.html", min_figures=10)
        # the navigation scrolls to a section
        driver.find_element("css selector", 'nav a[href="#estimate"]').click()
        assert driver.execute_script("return window.scrollY") > 1000


def test_report_on_an_image_folder_renders(bench_folder_run):
    """--model DIR --data DIR --ood-data DIR: retrieval is skipped with a visible note; the rest is complete."""
    out, results = bench_folder_run
    assert results["stages"]["retrieval"] == {"skipped": "dataset 'images' has no captions"}
    with chromium() as driver:
        # confusion, few-shot, base-to-new, ROC, reliability, risk-coverage, estimation
        skipped = tuple(name for name, r in results["stages"].items() if "skipped" in r)
        assert "retrieval" in skipped and "probes" in skipped  # both need captions
        _check_report(driver, out / "report.html", min_figures=7, skipped=skipped)
        ood = driver.find_element("id", "ood").text
        assert "OOD = novel" in ood


@pytest.mark.parametrize("where", ["figure", "sample"])
def test_a_broken_image_is_detected(bench_run, tmp_path, where):
    """The check above is not vacuous: a report with one corrupt plot, or one corrupt thumbnail, fails it."""
    out, _ = bench_run
    html = (out / "report.html").read_text()
    start = html.index("<figure" if where == "figure" else '<div class="sample')
    at = html.index("base64,", start) + len("base64,")
    broken = tmp_path / "report.html"
    broken.write_text(html[:at] + "AAAA" + html[at + 4 :])
    with chromium() as driver, pytest.raises(AssertionError, match=f"broken image', '{where}'"):
        _check_report(driver, broken, min_figures=10)
