"""cliplab serve: search results == brute force, clear errors, only indexed files served; JSON API via HTTP."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cliplab.cli.commands import main
from cliplab.serve import QueryError, SearchService, create_app
from helpers import make_tiny_model

pytest.importorskip("fastapi")
pytest.importorskip("httpx")


@pytest.fixture
def client(served):
    from fastapi.testclient import TestClient

    service = SearchService(served[0])
    return TestClient(create_app(service, max_upload=200_000))


def _unit(x):
    return torch.nn.functional.normalize(x, dim=-1).numpy()


def _brute(model, root, names, query_vec, k):
    db = _unit(model.encode_images([root / n for n in names]))
    s = (query_vec @ db.T)[0]
    order = np.argsort(-s, kind="stable")[:k]
    return [names[i] for i in order], s[order]


def test_text_search_equals_brute_force(served, client):
    _, root, names, model = served
    r = client.get("/api/search", params={"q": "a red circle", "k": 5})
    assert r.status_code == 200
    data = r.json()
    paths, scores = _brute(model, root, names, _unit(model.encode_texts(["a red circle"])), 5)
    assert [h["path"] for h in data["results"]] == paths
    np.testing.assert_allclose([h["score"] for h in data["results"]], scores, atol=1e-5)
    assert data["query"] == "a red circle" and data["k"] == 5 and data["ms"] >= 0
    assert all(h["url"] == f"/image/{h['id']}" for h in data["results"])


def test_image_search_raw_and_multipart(served, client):
    _, root, names, model = served
    raw = (root / names[3]).read_bytes()
    r = client.post("/api/search/image?k=3", content=raw, headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    hits = r.json()["results"]
    assert hits[0]["path"] == names[3] and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    paths, _ = _brute(model, root, names, _unit(model.encode_images([root / names[3]])), 3)
    assert [h["path"] for h in hits] == paths
    r = client.post("/api/search/image?k=3", files={"file": ("q.png", raw, "image/png")})
    assert r.status_code == 200, r.text
    assert [h["path"] for h in r.json()["results"]] == paths
    r = client.get(f"/api/similar/{hits[1]['id']}", params={"k": 2})
    assert r.json()["results"][0]["path"] == hits[1]["path"]


@pytest.mark.parametrize(
    "params, message",
    [
        ({"q": ""}, "empty query"),
        ({"q": "   "}, "empty query"),
        ({"q": "\x1e\u3000\n"}, "empty query"),  # Python's whitespace, which the schema's pattern spells out
        ({"q": "x" * 1001}, "query too long"),
        ({"q": " " + "x" * 1000}, "query too long"),  # counted before stripping, as the schema's maxLength says
        ({"q": "red", "k": 0}, "k must be an integer between 1 and 200"),
        ({"q": "red", "k": 201}, "k must be an integer between 1 and 200"),
        ({"q": "red", "k": "many"}, "invalid request"),
    ],
)
def test_bad_text_queries_get_clear_400s(client, params, message):
    r = client.get("/api/search", params=params)
    assert r.status_code == 400
    assert message in r.json()["error"]


def test_bad_uploads(client):
    r = client.post("/api/search/image", content=b"", headers={"Content-Type": "image/png"})
    assert r.status_code == 400 and "empty upload" in r.json()["error"]
    r = client.post("/api/search/image", content=b"GIF89a not really", headers={"Content-Type": "image/gif"})
    assert r.status_code == 400  # named as the user knows it, not as a file object's repr
    assert r.json() == {"error": "cannot read image file the uploaded file: not a recognised image format"}
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)).save(big, "PNG")
    assert len(big.getvalue()) > 200_000
    r = client.post("/api/search/image", content=big.getvalue(), headers={"Content-Type": "image/png"})
    assert r.status_code == 413 and "upload too large" in r.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        data = big.getvalue()
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]

    r = client.post("/api/search/image", content=chunks(), headers={"Content-Type": "image/png"})
    assert r.status_code == 413
    r = client.post("/api/search/image", files={"x": (None, "1")})  # a form without any file in it
    assert r.status_code == 400 and "no file field" in r.json()["error"]
    r = client.post("/api/search/image", files={"other": ("a.txt", b"x", "text/plain")})  # a file, but not an image
    assert r.status_code == 400 and "cannot read image file the uploaded file" in r.json()["error"]


def test_only_indexed_files_are_served(served, client, tmp_path):
    idx, root, names, _ = served
    r = client.get("/image/0")
    assert r.status_code == 200 and r.content == (root / names[0]).read_bytes()
    assert r.headers["content-type"] == "image/png"
    urls = [
        "/image/10",
        "/image/-1",
        "/image/99999999999",
        "/image/..%2F..%2Fetc%2Fpasswd",
        "/image/%2e%2e",
        "/image/1%2F..%2F..%2Fmanifest.json",
        "/photos/img01.png",
        "/idx/manifest.json",
        "/image/sub/img00.png",
    ]
    for url in urls:
        r = client.get(url)
        assert r.status_code == 404, url
        assert r.headers["content-type"].startswith("application/json") and r.json()["error"], url
    (root / names[0]).unlink()
    assert client.get("/image/0").status_code == 404  # indexed but gone


@pytest.mark.parametrize("item_id", ["10", "99999999999999999999", "-1", "abc", "1.5", "1e3", "%201", "0x1", "1_0"])
def test_unknown_or_malformed_ids_are_404(client, item_id):
    for url in (f"/api/similar/{item_id}", f"/image/{item_id}"):
        r = client.get(url)
        assert r.status_code == 404, url
        assert r.headers["content-type"].startswith("application/json") and r.json()["error"], url


def test_similar_unknown_id_and_bad_k(served, client):
    r = client.get("/api/similar/10")
    assert r.status_code == 404 and "no indexed image with id 10" in r.json()["error"]
    r = client.get("/api/similar/0", params={"k": 0})
    assert r.status_code == 400 and "k must be an integer between 1 and 200" in r.json()["error"]
    (served[1] / served[2][0]).unlink()  # indexed, but the file is gone
    r = client.get("/api/similar/0")
    assert r.status_code == 404 and "gone" in r.json()["error"]


def test_image_media_type_follows_the_extension(tmp_path):
    from fastapi.testclient import TestClient

    from cliplab.serve.schema import IMAGE_MEDIA_TYPES

    class Files:  # all that /image/{id} asks of the service
        def __init__(self, paths):
            self.paths = paths

        def file_for(self, item_id):
            return self.paths[item_id] if item_id < len(self.paths) else None

    names = [f"f{ext}" for ext in IMAGE_MEDIA_TYPES] + ["upper.PNG", "other.xyz", "none"]
    for name in names:
        (tmp_path / name).write_bytes(b"bytes")
    client = TestClient(create_app(Files([tmp_path / n for n in names])))
    expected = [*IMAGE_MEDIA_TYPES.values(), "image/png", "application/octet-stream", "application/octet-stream"]
    for i, media_type in enumerate(expected):
        r = client.get(f"/image/{i}")
        assert r.status_code == 200 and r.headers["content-type"] == media_type, names[i]
        assert r.content == b"bytes"


def test_method_not_allowed_says_what_is(client):
    r = client.post("/api/info")
    assert r.status_code == 405 and r.headers["allow"] == "GET" and r.json() == {"error": "Method Not Allowed"}
    r = client.get("/api/search/image")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


def test_metadata_pointing_outside_the_root_is_never_served(served, tmp_path):
    idx, root, names, _ = served
    (tmp_path / "secret.png").write_bytes((root / names[0]).read_bytes())
    service = SearchService(idx)
    service.index._store._conn.execute(
        "UPDATE items SET path = ?, data = ? WHERE id = 1", ("../secret.png", json.dumps({"path": "../secret.png"}))
    )
    assert service.index.get_metadata([1])[0]["path"] == "../secret.png"
    assert service.file_for(1) is None
    (root / "sub" / "evil.png").symlink_to(tmp_path / "secret.png")
    service.index._store._conn.execute(
        "UPDATE items SET path = ?, data = ? WHERE id = 2", ("sub/evil.png", json.dumps({"path": "sub/evil.png"}))
    )
    assert service.file_for(2) is None
    assert service.file_for(3) == (root / names[3]).resolve()


def test_page_info_and_headers(client):
    r = client.get("/")
    assert r.status_code == 200 and 'id="q"' in r.text and 'id="file"' in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    info = client.get("/api/info").json()
    assert info["count"] == 10 and info["kind"] == "flat"
    assert client.get("/api/openapi.json").status_code == 200


def test_service_errors(served, tmp_path):
    idx, _, _, model = served
    with pytest.raises(FileNotFoundError, match="no index at"):
        SearchService(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="not the one that built"):
        SearchService(idx, model=make_tiny_model(seed=3))
    service = SearchService(idx, model=model)
    with pytest.raises(QueryError, match="empty query"):
        service.search_text("")
    hits, ms = service.search_text("blue", k=200)
    assert len(hits) == 10  # k larger than the collection: every image once


def test_cli_serve_reports_missing_index(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "no index at" in err and "cliplab index" in err
    with pytest.raises(SystemExit) as stop:  # refused by argparse, naming the option
        main(["serve", str(tmp_path), "--max-upload-mb", "0"])
    assert stop.value.code == 2 and "argument --max-upload-mb" in capsys.readouterr().err
