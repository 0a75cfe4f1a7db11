"""cliplab serve under attack: bounded multipart parsing off the event loop, pixel bombs refused from the header,
long URLs and headers answered with JSON 414/431; against the ASGI app and a real uvicorn server on 127.0.0.1.

Every request here is bounded (timeouts, fixed counts); nothing but 127.0.0.1 is reached.
"""

import asyncio
import io
import socket
import struct
import threading
import time
import warnings
import zlib

import pytest
from PIL import Image

from cliplab.cli.commands import main
from cliplab.serve import SearchService, create_app

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

BOUNDARY = "cliplab-test-boundary"


@pytest.fixture
def service(served):
    return SearchService(served[0])


@pytest.fixture
def client(service):
    from fastapi.testclient import TestClient

    return TestClient(create_app(service))


def _form(parts, boundary=BOUNDARY):
    """A multipart/form-data body of ``parts`` ``(name, filename or None, content)``; ``(body, content type)``."""
    out = bytearray()
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        out += (b"Content-Type: image/png\r\n" if filename else b"") + b"\r\n" + content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def _many_parts(n):
    """The attack: ``n`` tiny fields (10,000 are ~600 KB, well under the upload limit)."""
    return _form([("a", None, b"1")] * n)


def _png(size):
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def _declaring(png, width, height):
    """``png`` with its IHDR claiming ``width`` × ``height`` (CRC recomputed): a tiny file, a huge image."""
    assert png[12:16] == b"IHDR"
    ihdr = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:8] + png[8:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def _bomb():
    small = io.BytesIO()
    Image.new("1", (8, 8)).save(small, "PNG")
    bomb = _declaring(small.getvalue(), 12000, 12000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        assert len(bomb) < 1000 and Image.open(io.BytesIO(bomb)).size == (12000, 12000)
    return bomb


def test_many_part_upload_is_refused_at_once(client):
    for n in (10_000, 20_000):  # 21 s and 66 s on the event loop before
        body, content_type = _many_parts(n)
        t0 = time.perf_counter()
        r = client.post("/api/search/image", content=body, headers={"Content-Type": content_type})
        elapsed = time.perf_counter() - t0
        assert r.status_code == 400 and r.json() == {
            "error": "the multipart upload has more than 16 parts: send the image as one field `file`"
        }
        assert elapsed < 1.0, f"{n} parts took {elapsed:.2f} s"


def test_multipart_part_limit_and_parsing(served, client):
    _, root, names, _ = served
    image = (root / names[3]).read_bytes()

    def post(body, content_type):
        return client.post("/api/search/image?k=1", content=body, headers={"Content-Type": content_type})

    def found(r):
        assert r.status_code == 200, r.text
        return r.json()["results"][0]["path"]

    # 16 parts (the limit) with the file last is searched; a 17th part is refused
    assert found(post(*_form([("a", None, b"1")] * 15 + [("file", "q.png", image)]))) == names[3]
    r = post(*_form([("a", None, b"1")] * 16 + [("file", "q.png", image)]))
    assert r.status_code == 400 and "more than 16 parts" in r.json()["error"]
    # the field `file` wins over an earlier file part; without it, the first part with a filename
    other = (root / names[5]).read_bytes()
    assert found(post(*_form([("x", "x.png", other), ("file", "q.png", image)]))) == names[3]
    assert found(post(*_form([("x", None, b"1"), ("y", "y.png", other), ("z", "q.png", image)]))) == names[5]
    # a quoted boundary, a preamble and an epilogue (RFC 2046)
    body, _ = _form([("file", "q.png", image)], boundary="a b:c")
    assert found(post(b"preamble\r\n" + body + b"epilogue", 'multipart/form-data; boundary="a b:c"')) == names[3]
    for body, content_type, message in [
        (_form([("file", "q.png", image)])[0][:-20], _form([])[1], "no closing boundary"),
        (b"--other\r\n\r\nx\r\n--other--", _form([])[1], "does not start with its boundary"),
        (_form([("file", "q.png", image)])[0], "multipart/form-data", "no boundary"),
        (_form([("file", "q.png", b"")])[0], _form([])[1], "empty upload"),
        (_form([("a", None, b"1")])[0], _form([])[1], "no file field"),
    ]:
        r = post(body, content_type)
        assert r.status_code == 400 and message in r.json()["error"], (message, r.text)


def test_multipart_parsing_runs_off_the_event_loop(served, service, monkeypatch):
    """While one upload is being parsed (held here until released), another request is answered."""
    from cliplab.serve import app as app_module

    entered, release, parsed = threading.Event(), threading.Event(), threading.Event()
    parse = app_module._multipart_file

    def held_parse(content_type, body):
        entered.set()
        release.wait(timeout=3)  # on the event loop (the old code) this blocks every request for 3 s
        parsed.set()
        return parse(content_type, body)

    monkeypatch.setattr(app_module, "_multipart_file", held_parse)
    body, content_type = _form([("file", "q.png", (served[1] / served[2][0]).read_bytes())])

    async def scenario():
        transport = httpx.ASGITransport(app=create_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            upload = asyncio.create_task(
                client.post("/api/search/image?k=1", content=body, headers={"Content-Type": content_type})
            )
            for _ in range(500):
                if entered.is_set():
                    break
                await asyncio.sleep(0.01)
            assert entered.is_set(), "the upload never reached the parser"
            info = await asyncio.wait_for(client.get("/api/info"), timeout=10)
            answered_while_parsing = not parsed.is_set()
            release.set()
            return info, answered_while_parsing, await asyncio.wait_for(upload, timeout=30)

    info, answered_while_parsing, upload = asyncio.run(scenario())
    assert info.status_code == 200 and info.json()["count"] == 10
    assert answered_while_parsing, "GET /api/info waited for the multipart parser: it runs on the event loop"
    assert upload.status_code == 200 and upload.json()["results"][0]["path"] == served[2][0]


def test_pixel_bomb_is_refused_from_its_header(served, client):
    bomb = _bomb()
    expected = (
        "image too large: the uploaded file is 12000x12000 = 144,000,000 pixels, above this server's limit of "
        "50,000,000 pixels (--max-image-pixels)"
    )
    for request in (
        dict(content=bomb, headers={"Content-Type": "image/png"}),
        dict(files={"file": ("bomb.png", bomb, "image/png")}),
    ):
        t0 = time.perf_counter()
        r = client.post("/api/search/image", **request)
        assert r.status_code == 413 and r.json() == {"error": expected}
        assert time.perf_counter() - t0 < 1.0


def test_the_service_pixel_limit_covers_uploads_and_indexed_files(served):
    from fastapi.testclient import TestClient

    idx, root, names, _ = served
    client = TestClient(create_app(SearchService(idx, max_image_pixels=400)))  # every indexed image is >= 20x20
    w, h = Image.open(root / names[0]).size
    r = client.post("/api/search/image", content=(root / names[0]).read_bytes(), headers={"Content-Type": "image/png"})
    assert r.status_code == 413 and f"is {w}x{h} = {w * h:,} pixels, above this server's limit of 400" in r.text
    r = client.get("/api/similar/0")  # an indexed file over the limit: a refused query, not the client's upload
    assert r.status_code == 400 and f"the indexed image 0 is {w}x{h}" in r.json()["error"]
    unlimited = TestClient(create_app(SearchService(idx, max_image_pixels=0)))
    assert unlimited.get("/api/similar/0").status_code == 200


@pytest.fixture
def live(served, monkeypatch):
    """``cliplab serve`` itself (its option parsing and uvicorn settings) on a free 127.0.0.1 port, in a thread."""
    import uvicorn

    servers = []
    run = uvicorn.Server.run

    def recorded_run(self, *args, **kwargs):
        servers.append(self)
        return run(self, *args, **kwargs)

    monkeypatch.setattr(uvicorn.Server, "run", recorded_run)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["serve", str(served[0]), "--port", str(port), "-q", "--max-image-pixels", "1000000"]
    thread = threading.Thread(target=main, args=(argv,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not (servers and servers[0].started):
        assert thread.is_alive() and time.monotonic() < deadline, "cliplab serve did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    servers[0].should_exit = True
    thread.join(timeout=10)


def test_long_urls_and_headers_get_json_errors_not_a_reset(live):
    import http.client
    import json

    connection = http.client.HTTPConnection(live.removeprefix("http://"), timeout=30)  # httpx refuses such URLs
    try:
        connection.request("GET", "/api/search?q=" + "x" * 1_000_000)  # was: the connection reset mid-request
        r = connection.getresponse()
        assert r.status == 414 and r.getheader("content-type") == "application/json"
        url_bytes = len("/api/search?q=") - 1 + 1_000_000  # path and query string, without the "?"
        assert json.loads(r.read()) == {"error": f"URL too long: {url_bytes:,} bytes (at most 32,768)"}
    finally:
        connection.close()
    with httpx.Client(base_url=live, timeout=30) as client:
        r = client.get("/api/info", headers={"X-Padding": "x" * 100_000})
        assert r.status_code == 431 and "request headers too large" in r.json()["error"]
        q = "\U0001f600" * 1000  # the longest query the API takes, percent-encoded: 12 KB
        assert client.get("/api/search", params={"q": q}).status_code == 200
        assert client.get("/api/info").json()["count"] == 10


def test_many_part_upload_holds_up_no_other_request(live):
    body, content_type = _many_parts(10_000)
    started, results = threading.Event(), {}

    def attack():
        with httpx.Client(base_url=live, timeout=30) as client:
            started.set()
            t0 = time.perf_counter()
            r = client.post("/api/search/image", content=body, headers={"Content-Type": content_type})
            results["post"] = (r.status_code, time.perf_counter() - t0)

    thread = threading.Thread(target=attack)
    thread.start()
    assert started.wait(timeout=10)
    with httpx.Client(base_url=live, timeout=30) as client:
        t0 = time.perf_counter()
        r = client.get("/api/info")
        get_seconds = time.perf_counter() - t0
    thread.join(timeout=60)
    assert r.status_code == 200 and get_seconds < 1.0, f"GET took {get_seconds:.2f} s"
    status, post_seconds = results["post"]
    assert status == 400 and post_seconds < 1.0, f"the 10,000-part POST took {post_seconds:.2f} s"


def test_cli_max_image_pixels(live, tmp_path):
    with httpx.Client(base_url=live, timeout=30) as client:
        r = client.post("/api/search/image?k=1", content=_png((1000, 1000)), headers={"Content-Type": "image/png"})
        assert r.status_code == 200
        r = client.post("/api/search/image", content=_png((1001, 1000)), headers={"Content-Type": "image/png"})
        assert r.status_code == 413 and "1001x1000 = 1,001,000 pixels" in r.json()["error"]
        assert "limit of 1,000,000 pixels" in r.json()["error"]
    with pytest.raises(SystemExit) as exit_info:  # refused by the parser, before anything loads
        main(["serve", str(tmp_path), "--max-image-pixels", "-1"])
    assert exit_info.value.code == 2
