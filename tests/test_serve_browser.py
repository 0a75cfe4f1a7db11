"""cliplab serve in a real headless Chromium: type a query, see the result grid; upload an image; errors shown."""

import socket
import threading
import time

import pytest

from browser import chromium

pytest.importorskip("uvicorn")


@pytest.fixture
def server(served):
    """The app on a free loopback port, in a background thread of this process."""
    import uvicorn

    from cliplab.serve import SearchService, create_app

    service = SearchService(served[0])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", service, served
    srv.should_exit = True
    thread.join(timeout=10)


def _wait(driver, condition, timeout=30):
    """Poll ``condition`` until true; the grid may be re-rendered between two reads of it (stale elements)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def _cards(driver):
    return driver.find_elements("css selector", "#results .result")


def _loaded_images(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('#results .result img')].map(i => i.complete && i.naturalWidth > 0)"
    )


def test_type_a_query_and_see_results(server):
    from selenium.webdriver.common.keys import Keys

    url, service, (_, root, names, _) = server
    expected, _ = service.search_text("a red circle", k=24)
    with chromium() as driver:
        driver.get(url + "/")
        _wait(driver, lambda d: "10 images" in d.find_element("id", "info").text)
        box = driver.find_element("id", "q")
        box.send_keys("a red circle", Keys.ENTER)
        _wait(driver, lambda d: len(_cards(d)) == len(names))
        cards = _cards(driver)
        assert [c.get_attribute("data-id") for c in cards] == [str(h.id) for h in expected]
        assert cards[0].find_element("css selector", ".score").text == f"{expected[0].score:.3f}"
        assert cards[0].find_element("css selector", ".path").text == expected[0].path
        _wait(driver, lambda d: all(_loaded_images(d)) and len(_loaded_images(d)) == len(names))
        assert "10 results" in driver.find_element("id", "status").text
        assert driver.current_url.endswith("?q=a%20red%20circle")  # shareable address

        # "More like this": the clicked image comes first, with cosine 1
        target = cards[4].get_attribute("data-id")
        cards[4].find_element("css selector", "button.similar").click()
        _wait(driver, lambda d: _cards(d) and _cards(d)[0].get_attribute("data-id") == target)
        assert _cards(driver)[0].find_element("css selector", ".score").text == "1.000"


def test_upload_an_image_and_errors_are_shown(server):
    url, service, (_, root, names, _) = server
    with chromium() as driver:
        driver.get(url + "/")
        driver.find_element("id", "file").send_keys(str(root / names[2]))
        _wait(driver, lambda d: len(_cards(d)) == len(names))
        first = _cards(driver)[0]
        assert first.find_element("css selector", ".path").text == names[2]
        assert first.find_element("css selector", ".score").text == "1.000"
        assert names[2].split("/")[-1] in driver.find_element("id", "status").text

        error = driver.find_element("id", "error")
        assert not error.is_displayed()
        driver.find_element("id", "q").send_keys("x" * 1001)
        driver.find_element("id", "go").click()
        _wait(driver, lambda d: error.is_displayed())
        assert "query too long" in error.text  # the server's message, shown to the user

        driver.find_element("id", "q").clear()
        driver.find_element("id", "go").click()
        _wait(driver, lambda d: "Type a description" in error.text)


def test_query_in_the_address_runs_on_load(server):
    url, _, (_, _, names, _) = server
    with chromium() as driver:
        driver.get(url + "/?q=blue%20square")
        _wait(driver, lambda d: len(_cards(d)) == len(names))
        assert driver.find_element("id", "q").get_attribute("value") == "blue square"


def test_a_vanished_file_shows_a_placeholder(server):
    from selenium.webdriver.common.keys import Keys

    url, service, (_, root, names, _) = server
    hits, _ = service.search_text("green", k=24)
    (root / hits[0].path).unlink()
    with chromium() as driver:
        driver.get(url + "/")
        driver.find_element("id", "q").send_keys("green", Keys.ENTER)
        _wait(driver, lambda d: len(_cards(d)) == len(names))
        _wait(driver, lambda d: _cards(d)[0].find_elements("css selector", ".gone"))
        assert _cards(driver)[0].find_element("css selector", ".gone").text == "file no longer available"
        assert not _cards(driver)[1].find_elements("css selector", ".gone")
