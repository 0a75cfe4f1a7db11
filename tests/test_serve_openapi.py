"""cliplab serve's OpenAPI schema says what the API does: a schema-based fuzzer (schemathesis) finds no failure.

The fuzzer runs in process (ASGI transport: nothing listens on any port) with a bounded, derandomised number of
examples, positive (schema-valid requests) and negative (schema-invalid ones).
"""

import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from cliplab.serve import SearchService, create_app

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

EXPECTED_OPERATIONS = {
    "GET /",
    "GET /api/info",
    "GET /api/search",
    "POST /api/search/image",
    "GET /api/similar/{item_id}",
    "GET /image/{item_id}",
}


def _image_bytes(fmt: str, size: tuple[int, int], mode: str, seed: int) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, fmt)
    return out.getvalue()


def _images():
    """A hypothesis strategy of real image files (the formats the index reads), for ``image/*`` bodies and parts."""
    from hypothesis import strategies as st

    return st.builds(
        _image_bytes,
        st.sampled_from(["PNG", "JPEG", "GIF", "WEBP", "BMP"]),
        st.tuples(st.integers(1, 24), st.integers(1, 24)),
        st.sampled_from(["RGB", "L"]),
        st.integers(0, 2**16),
    )


@pytest.fixture
def app(served):
    return create_app(SearchService(served[0]), max_upload=200_000)


@pytest.fixture
def api_schema(app):
    schemathesis = pytest.importorskip("schemathesis")
    # A body the schema calls `image/*` is meant to be an image file: generate real ones (random bytes are
    # schema-valid but rightly refused with 400, which the positive-data check would count as a failure).
    schemathesis.openapi.media_type("image/*", _images())
    return schemathesis.openapi.from_asgi("/api/openapi.json", app)


def test_schema_declares_every_response(api_schema):
    raw = api_schema.raw_schema
    operations = {f"{method.upper()} {path}": op for path, item in raw["paths"].items() for method, op in item.items()}
    assert set(operations) == EXPECTED_OPERATIONS
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    assert raw["components"]["schemas"]["ErrorBody"]["required"] == ["error"]
    every_request = {"414", "431"}  # a URL or headers over the app's limits
    expected_errors = {
        "GET /": every_request,
        "GET /api/info": every_request,
        "GET /api/search": {"400"} | every_request,
        "POST /api/search/image": {"400", "413"} | every_request,
        "GET /api/similar/{item_id}": {"400", "404"} | every_request,
        "GET /image/{item_id}": {"404"} | every_request,
    }
    for name, op in operations.items():
        assert set(op["responses"]) == {"200"} | expected_errors[name], name  # no 422: the app never sends one
        for status in expected_errors[name]:
            assert op["responses"][status]["content"] == {"application/json": {"schema": error_ref}}, (name, status)
    image_types = set(operations["GET /image/{item_id}"]["responses"]["200"]["content"])
    assert {"image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "image/tiff"} <= image_types
    assert "--max-image-pixels" in operations["POST /api/search/image"]["responses"]["413"]["description"]
    upload = operations["POST /api/search/image"]["requestBody"]
    assert upload["required"] is True
    assert set(upload["content"]) == {"image/*", "multipart/form-data"}
    assert upload["content"]["multipart/form-data"]["schema"]["required"] == ["file"]


def test_query_pattern_refuses_exactly_what_the_service_calls_empty():
    from cliplab.serve.schema import QUERY_SCHEMA

    pattern = re.compile(QUERY_SCHEMA["pattern"])
    for c in map(chr, range(0x3100)):
        assert bool(pattern.search(f" {c}\t")) == bool(f" {c}\t".strip()), repr(c)


def test_image_media_types_cover_every_indexed_extension():
    from cliplab.data.folders import IMAGE_EXTENSIONS
    from cliplab.serve.schema import IMAGE_MEDIA_TYPES

    assert set(IMAGE_MEDIA_TYPES) == set(IMAGE_EXTENSIONS)
    assert all(t.startswith("image/") for t in IMAGE_MEDIA_TYPES.values())


def test_fuzzed_requests_conform_to_the_schema(api_schema):
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode, checks

    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} == EXPECTED_OPERATIONS
    strategy = st.one_of(
        [op.as_strategy(mode) for op in operations for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    )
    standard = [
        checks.not_a_server_error,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_headers_conformance,
        checks.response_schema_conformance,
        checks.negative_data_rejection,
        checks.positive_data_acceptance,
    ]
    seen: dict[str, set[int]] = {}

    @given(case=strategy)
    @settings(
        max_examples=150,
        derandomize=True,  # the same cases on every run
        database=None,
        deadline=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        response = case.call_and_validate(checks=standard)
        seen.setdefault(f"{case.operation.method.upper()} {case.operation.path}", set()).add(response.status_code)

    check()
    # the run reached every operation, and both accepted and refused requests
    assert set(seen) == EXPECTED_OPERATIONS
    statuses = set().union(*seen.values())
    assert 200 in statuses and statuses & {400, 404}


def test_undeclared_methods_get_405_with_allow(app):
    from fastapi.testclient import TestClient

    client = TestClient(app)
    for method, url, allowed in [
        ("TRACE", "/", {"GET"}),
        ("DELETE", "/api/info", {"GET"}),
        ("PUT", "/api/search?q=red", {"GET"}),
        ("GET", "/api/search/image", {"POST"}),
        ("POST", "/api/similar/0", {"GET"}),
        ("PATCH", "/image/0", {"GET"}),
    ]:
        r = client.request(method, url)
        assert r.status_code == 405, (method, url)
        assert set(re.split(r",\s*", r.headers["allow"])) == allowed, (method, url)
        assert r.json() == {"error": "Method Not Allowed"}


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [value for name, value in attrs if name in ("src", "href") and value]


def test_docs_page_needs_nothing_from_outside(app):
    """/api/docs is Swagger UI with its script, style and icon served by the app itself (it works offline)."""
    from fastapi.testclient import TestClient

    client = TestClient(app)
    r = client.get("/api/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "SwaggerUIBundle(" in r.text and "url: '/api/openapi.json'" in r.text
    assert not re.search(r"https?:|//[a-z]", r.text, re.IGNORECASE)  # no absolute or protocol-relative URL at all
    assert '"validatorUrl": null' in r.text  # Swagger UI would otherwise load a badge from validator.swagger.io
    parser = _Links()
    parser.feed(r.text)
    kinds = {}
    for link in parser.links:
        assert link.startswith("/") and not link.startswith("//"), link
        asset = client.get(link)
        assert asset.status_code == 200 and asset.content, link
        kinds[asset.headers["content-type"].split(";")[0]] = len(asset.content)
    assert set(kinds) == {"text/javascript", "text/css", "image/png"}
    assert kinds["text/javascript"] > 100_000  # the whole Swagger UI bundle, not a stub
    # the page's own CSP (the same as the search page's) lets it run: scripts and styles from this origin plus
    # its inline bootstrap script; the schema it fetches comes from this origin too
    csp = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
    assert csp["script-src"] == "'self' 'unsafe-inline'" and "'self'" in csp["style-src"]
    assert csp["default-src"] == "'self'" and "connect-src" not in csp
    assert client.get("/api/openapi.json").status_code == 200
    assert client.get("/api/docs/static/missing.js").status_code == 404
