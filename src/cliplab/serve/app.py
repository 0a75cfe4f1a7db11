"""The ``cliplab serve`` web app (FastAPI): a search page, a JSON API, and the indexed images.

Routes:
    ``GET /``                         the search page (text box, image upload, result grid)
    ``GET /api/info``                 the index: count, kind, model
    ``GET /api/search?q=TEXT&k=24``   text → images, JSON ``{"query", "k", "ms", "results": [{id, path, score, url}]}``
    ``POST /api/search/image?k=24``   image → images; body: the image file (raw bytes, or multipart field ``file``)
    ``GET /api/similar/{id}?k=24``    images like an indexed one
    ``GET /image/{id}``               the file of an indexed image (nothing else on disk is reachable)

Errors are JSON ``{"error": message}`` with status 400 (bad query), 404 (unknown id / route), 413 (upload
over the limit), 405 (with ``Allow``) for a method a route does not take. The OpenAPI schema
(``/api/openapi.json``) declares all of them; ``/api/docs`` shows it with Swagger UI served from this app
(the assets of the ``fastapi-offline`` package), so the docs work offline.
"""

from __future__ import annotations

import email.parser
import email.policy
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

from cliplab.serve import schema
from cliplab.serve.service import QueryError, SearchService, UnknownId

DEFAULT_MAX_UPLOAD = 16 * 1024 * 1024

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


def _multipart_file(content_type: str, body: bytes) -> bytes:
    """The first file part (preferably the field ``file``) of a multipart/form-data body."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise QueryError("malformed multipart upload")
    parts = list(message.iter_parts())
    named = [p for p in parts if p.get_param("name", header="content-disposition") == "file"]
    parts = [p for p in parts if p.get_filename() is not None]
    if not named and not parts:
        raise QueryError("the multipart upload has no file field")
    payload = (named or parts)[0].get_payload(decode=True)
    return payload or b""


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

    app.openapi = openapi

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Any:
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
            body = _multipart_file(content_type, body)
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
