"""What the ``cliplab serve`` API returns, for its OpenAPI schema: response models, error responses, media types.

The models describe the JSON the routes produce (FastAPI validates every response against them), and
:func:`complete_openapi` removes what FastAPI would otherwise claim: the app answers invalid parameters with
400 ``{"error": ...}``, never with FastAPI's 422 validation body.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from cliplab.serve.service import MAX_K, MAX_QUERY_CHARS, WHITESPACE

# The media type of each image file extension the index may hold (cliplab.data.folders.IMAGE_EXTENSIONS).
IMAGE_MEDIA_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".bmp": "image/bmp",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}
OTHER_FILE = "application/octet-stream"  # an indexed file with any other extension

# Limits the app enforces on every request (here, so that the schema's descriptions state them).
MAX_FORM_PARTS = 16  # parts of a multipart upload (fields and files together)
MAX_URL_BYTES = 32 * 1024  # path + query string; a 1000-character query is at most 12 KB percent-encoded
MAX_HEADER_BYTES = 64 * 1024  # all header names and values together


class ErrorBody(BaseModel):
    error: str = Field(description="what was wrong, meant for the user")


class Info(BaseModel):
    count: int = Field(description="indexed images")
    kind: str = Field(description="index kind, e.g. flat")
    backend: str = Field(description="faiss or numpy")
    dim: int = Field(description="embedding dimension")
    model: str | None = Field(description="the model spec recorded in the index")
    root: str = Field(description="the indexed image folder")
    max_k: int = Field(description="the largest k a search accepts")


class HitBody(BaseModel):
    id: int = Field(description="the image's id in the index")
    path: str = Field(description="the file, relative to the indexed folder")
    score: float = Field(description="cosine similarity to the query")
    url: str = Field(description="where the file is served: /image/{id}")


class _Results(BaseModel):
    k: int
    ms: float = Field(description="search time in milliseconds")
    results: list[HitBody] = Field(description="at most k hits, best first")


class TextResults(_Results):
    query: str


class ImageQuery(BaseModel):
    image_bytes: int = Field(description="size of the uploaded image")


class ImageResults(_Results):
    query: ImageQuery


class SimilarQuery(BaseModel):
    similar_to: int = Field(description="the indexed image searched with")


class SimilarResults(_Results):
    query: SimilarQuery


# Constraints the service enforces itself (its messages say what is wrong), stated for the schema.
K_SCHEMA = {"minimum": 1, "maximum": MAX_K}
# Not ``\S``: JSON Schema's (ECMA-262) whitespace is not Python's (U+001C..U+001F), so the characters are listed.
QUERY_SCHEMA = {
    "minLength": 1,
    "maxLength": MAX_QUERY_CHARS,
    "pattern": "[^" + "".join(f"\\u{ord(c):04x}" for c in WHITESPACE) + "]",  # a character that is not whitespace
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses, each a JSON :class:`ErrorBody`."""
    what = {
        400: (
            "bad query: empty or too long text, a bad k, a body that is not an image, a malformed form, a form "
            f"without a file or of more than {MAX_FORM_PARTS} parts"
        ),
        404: "unknown id (or its file is gone)",
        413: (
            "upload over the server's --max-upload-mb, or an image whose declared width x height is over its "
            "--max-image-pixels (refused from the image's header, before decoding)"
        ),
        414: f"URL (path and query string) over {MAX_URL_BYTES:,} bytes",
        431: f"request headers over {MAX_HEADER_BYTES:,} bytes in all",
    }
    return {status: {"model": ErrorBody, "description": what[status]} for status in statuses}


_BINARY = {"type": "string", "format": "binary"}
IMAGE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the image file",
        "content": {media_type: {"schema": _BINARY} for media_type in [*IMAGE_MEDIA_TYPES.values(), OTHER_FILE]},
    }
}
IMAGE_UPLOAD = {
    "requestBody": {
        "required": True,
        "description": "the image file: the raw bytes as the body, or a multipart/form-data field `file`",
        "content": {
            "image/*": {"schema": _BINARY},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": _BINARY}, "required": ["file"]},
                "encoding": {"file": {"contentType": "image/*"}},
            },
        },
    }
}


def complete_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (as FastAPI generates it) without the 422 responses this app never sends, with the 414 and 431
    that any request may get."""
    error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    every_request = {
        str(status): {"description": e["description"], "content": error_body} for status, e in errors(414, 431).items()
    }
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            operation.get("responses", {}).pop("422", None)
            operation.setdefault("responses", {}).update(every_request)
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema
