"""The ``cliplab serve`` web app (FastAPI): a search page, a JSON API, and the indexed images.

Routes:
    ``GET /``                         the search page (text box, image upload, result grid)
    ``GET /api/info``                 the index: count, kind, model
    ``GET /api/search?q=TEXT&k=24``   text → images, JSON ``{"query", "k", "ms", "results": [{id, path, score, url}]}``
    ``POST /api/search/image?k=24``   image → images; body: the image file (raw bytes, or multipart field ``file``)
    ``GET /api/similar/{id}?k=24``    images like an indexed one
    ``GET /image/{id}``               the file of an indexed image (nothing else on disk is reachable)

Errors are JSON ``{"error": message}`` with status 400 (bad query, a malformed upload or one of more than
``MAX_FORM_PARTS`` multipart parts), 404 (unknown id / route), 413 (an upload over ``max_upload`` bytes, or an
image declaring more than the service's ``max_image_pixels``: refused from its header, before decoding), 414
(a URL over ``MAX_URL_BYTES``), 431 (request headers over ``MAX_HEADER_BYTES``), 405 (with ``Allow``) for a
method a route does not take. Multipart parsing and decoding run in the threadpool, never on the event loop.
The OpenAPI schema (``/api/openapi.json``) declares all of them; ``/api/docs`` shows it with Swagger UI served
from this app (the assets of the ``fastapi-offline`` package), so the docs work offline.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from cliplab.imaging.decoding import ImageTooLarge
from cliplab.serve import schema
from cliplab.serve.service import QueryError, SearchService, UnknownId

DEFAULT_MAX_UPLOAD = 16 * 1024 * 1024
MAX_FORM_PARTS = schema.MAX_FORM_PARTS  # a search form has one file; anything near 10,000 parts is an attack
MAX_PART_HEAD = 8 * 1024  # the header lines of one multipart part
MAX_URL_BYTES = schema.MAX_URL_BYTES
MAX_HEADER_BYTES = schema.MAX_HEADER_BYTES
# RFC 2046 §5.1.1: 1-70 characters; the Content-Type header itself is bounded before any regex sees it.
_BOUNDARY = re.compile(r';\s*boundary\s*=\s*(?:"([^"]{1,70})"|([^\s;"]{1,70}))', re.IGNORECASE)
_DISPOSITION_PARAM = re.compile(r';\s*(name|filename\*?)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))', re.IGNORECASE)

# Images and scripts only from this origin; the page's own inline script and style are allowed.
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

# Parameters (module level: the route signatures' annotations are strings, resolved in this module's globals).
K = Annotated[int, Query(description="how many results", json_schema_extra=schema.K_SCHEMA)]
# Routes take ``{item_id:int}``, which matches digits only: any other id is an unknown route (404), like an unknown
# number.
ItemId = Annotated[int, Path(ge=0, description="an id from a search result")]


def _page() -> str:
    return resources.files("cliplab.serve").joinpath("page.html").read_text(encoding="utf-8")


class UploadTooLarge(Exception):
    pass


async def _read_limited(request: Request, limit: int) -> bytes:
    """The request body, refusing (before and while reading) anything over ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadTooLarge()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise UploadTooLarge()
    return bytes(body)


def _boundary(content_type: str) -> bytes:
    if len(content_type) > 1024:
        raise QueryError("malformed multipart upload: the Content-Type header is over 1024 characters")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise QueryError("malformed multipart upload: no boundary (1-70 characters) in its Content-Type")
    return (match.group(1) or match.group(2)).encode("latin-1")


def _disposition(head: bytes) -> dict[str, str]:
    """The ``name`` and ``filename`` parameters of a part's Content-Disposition header (lower-cased keys)."""
    for line in head.decode("utf-8", "replace").split("\r\n"):
        field, _, value = line.partition(":")
        if field.strip().lower() == "content-disposition":
            if len(value) > 1024:  # bounds the parameter regex's work
                raise QueryError("malformed multipart upload: a Content-Disposition header is over 1024 characters")
            return {m[1].lower().rstrip("*"): m[2] or m[3] for m in _DISPOSITION_PARAM.finditer(";" + value)}
    return {}


def _multipart_file(content_type: str, body: bytes) -> bytes:
    """The first file part (preferably the field ``file``) of a multipart/form-data body (RFC 7578).

    Bounded work: one linear scan that stops at the (``MAX_FORM_PARTS`` + 1)-th part (400), part headers of at
    most ``MAX_PART_HEAD`` bytes. Runs in the threadpool.
    """
    delimiter = b"--" + _boundary(content_type)
    separator = b"\r\n" + delimiter
    start = body.find(delimiter)
    if start < 0 or (start > 0 and body[start - 2 : start] != b"\r\n"):
        raise QueryError("malformed multipart upload: the body does not start with its boundary")
    pos = start + len(delimiter)
    parts: list[tuple[int, int]] = []
    while not body.startswith(b"--", pos):  # "--boundary--" closes the body
        line_end = body.find(b"\r\n", pos, pos + 1024)
        if line_end < 0 or body[pos:line_end].strip(b" \t"):
            raise QueryError("malformed multipart upload: a boundary line is not followed by a line break")
        end = body.find(separator, line_end + 2)
        if end < 0:
            raise QueryError("malformed multipart upload: no closing boundary")
        if len(parts) == MAX_FORM_PARTS:
            raise QueryError(
                f"the multipart upload has more than {MAX_FORM_PARTS} parts: send the image as one field `file`"
            )
        parts.append((line_end + 2, end))
        pos = end + len(separator)
    first_file = named_file = None
    for part_start, part_end in parts:
        if body.startswith(b"\r\n", part_start):  # a part without header lines
            head, content = b"", part_start + 2
        else:
            head_end = body.find(b"\r\n\r\n", part_start, min(part_end, part_start + MAX_PART_HEAD))
            if head_end < 0:
                raise QueryError(f"malformed multipart upload: a part's headers are over {MAX_PART_HEAD} bytes")
            head, content = body[part_start:head_end], head_end + 4
        params = _disposition(head)
        if params.get("name") == "file":
            named_file = (content, part_end)
            break
        if "filename" in params and first_file is None:
            first_file = (content, part_end)
    chosen = named_file or first_file
    if chosen is None:
        raise QueryError("the multipart upload has no file field")
    return body[chosen[0] : chosen[1]]


def create_app(service: SearchService, *, max_upload: int = DEFAULT_MAX_UPLOAD) -> Any:
    """The FastAPI application serving ``service``."""
    app = FastAPIOffline(
        title="cliplab search",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
        static_url="/api/docs/static",
        swagger_ui_oauth2_redirect_url="/api/docs/oauth2-redirect",
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
    )
    app.state.service = service

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            generated = get_openapi(title=app.title, version=app.version, routes=app.routes)
            app.openapi_schema = schema.complete_openapi(generated)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.middleware("http")
    async def bounded_request_and_security_headers(request: Request, call_next: Any) -> Any:
        url_bytes = len(request.scope.get("raw_path") or b"") + len(request.scope.get("query_string") or b"")
        header_bytes = sum(len(name) + len(value) for name, value in request.scope.get("headers") or ())
        if url_bytes > MAX_URL_BYTES:  # uvicorn reads request heads up to cliplab.cli.serve.MAX_REQUEST_HEAD
            response = error(414, f"URL too long: {url_bytes:,} bytes (at most {MAX_URL_BYTES:,})")
        elif header_bytes > MAX_HEADER_BYTES:
            response = error(431, f"request headers too large: {header_bytes:,} bytes (at most {MAX_HEADER_BYTES:,})")
        else:
            response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "not found" if exc.status_code == 404 else str(exc.detail)
        response = error(exc.status_code, message)
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        return response

    @app.exception_handler(QueryError)
    async def query_error(request: Request, exc: QueryError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(UnknownId)
    async def unknown_id(request: Request, exc: UnknownId) -> JSONResponse:
        return error(404, str(exc))

    @app.exception_handler(UploadTooLarge)
    async def too_large(request: Request, exc: UploadTooLarge) -> JSONResponse:
        return error(413, f"upload too large: the limit is {max_upload / 2**20:.1f} MiB")

    @app.exception_handler(ImageTooLarge)
    async def too_many_pixels(request: Request, exc: ImageTooLarge) -> JSONResponse:
        return error(
            413,
            f"image too large: {exc.name} is {exc.width}x{exc.height} = {exc.width * exc.height:,} pixels, above "
            f"this server's limit of {exc.max_pixels:,} pixels (--max-image-pixels)",
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return error(400, f"invalid request: {details}")

    def respond(query: Any, k: int, found: tuple[list[Any], float]) -> dict[str, Any]:
        hits, ms = found
        return {"query": query, "k": k, "ms": round(ms, 2), "results": [h.to_dict() for h in hits]}

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(_page())

    @app.get("/api/info", response_model=schema.Info)
    def info() -> dict[str, Any]:
        return service.info()

    @app.get("/api/search", response_model=schema.TextResults, responses=schema.errors(400))
    def search(
        q: Annotated[str, Query(description="what to look for", json_schema_extra=schema.QUERY_SCHEMA)], k: K = 24
    ) -> dict[str, Any]:
        return respond(q, k, service.search_text(q, k))

    @app.post(
        "/api/search/image",
        response_model=schema.ImageResults,
        responses=schema.errors(400, 413),
        openapi_extra=schema.IMAGE_UPLOAD,
    )
    async def search_image(request: Request, k: K = 24) -> dict[str, Any]:
        service.check_k(k)
        body = await _read_limited(request, max_upload)
        content_type = request.headers.get("content-type", "")
        if content_type.lower().startswith("multipart/form-data"):
            body = await run_in_threadpool(_multipart_file, content_type, body)
        return respond({"image_bytes": len(body)}, k, await run_in_threadpool(service.search_image, body, k))

    @app.get("/api/similar/{item_id:int}", response_model=schema.SimilarResults, responses=schema.errors(400, 404))
    def similar(item_id: ItemId, k: K = 24) -> dict[str, Any]:
        return respond({"similar_to": item_id}, k, service.similar(item_id, k))

    @app.get(
        "/image/{item_id:int}",
        response_class=FileResponse,
        responses={**schema.IMAGE_RESPONSE, **schema.errors(404)},
    )
    def image(item_id: ItemId) -> Any:
        path = service.file_for(item_id)
        if path is None:
            return error(404, f"no indexed image with id {item_id} (or its file is gone)")
        media_type = schema.IMAGE_MEDIA_TYPES.get(FilePath(path).suffix.lower(), schema.OTHER_FILE)
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})

    return app
