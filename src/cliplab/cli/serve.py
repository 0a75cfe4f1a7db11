"""``cliplab serve INDEX``: the local search web app for an index built by ``cliplab index``."""

from __future__ import annotations

import argparse
import ipaddress
import logging

from cliplab.cli.common import UsageError, bounded_int, nonnegative_int, positive_float
from cliplab.imaging.limits import DEFAULT_MAX_IMAGE_PIXELS

log = logging.getLogger(__name__)

# The longest request head (request line + headers) uvicorn reads before answering it: a URL up to this size
# reaches the app, which answers 414 with a JSON error (uvicorn's own limit, 16 KiB, made it close the
# connection mid-request, which a client sees as a reset). The app bounds the headers to 64 KiB (431).
MAX_REQUEST_HEAD = 2 * 1024 * 1024


def add_serve(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``cliplab serve`` parser (its handler is ``run_serve``, wired in ``cliplab.cli.commands``)."""
    p = sub.add_parser(
        "serve",
        help="local web app: search an index by text or image",
        description=(
            "Serve a search page for INDEX (built by `cliplab index`) on http://127.0.0.1:PORT: a text box, image "
            "upload, a result grid with scores, and a JSON API (/api/search?q=..., /api/docs). Only the indexed "
            "files are served."
        ),
    )
    p.add_argument("index", help="index directory written by `cliplab index`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=bounded_int(0, 65535), default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--model", default=None, help="model spec, if not the one recorded in the index")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument(
        "--max-upload-mb", type=positive_float, default=16.0, help="largest image upload in MiB (default 16)"
    )
    p.add_argument(
        "--max-image-pixels",
        type=nonnegative_int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help=(
            "largest uploaded image, in pixels (width x height), checked from its header before decoding: larger "
            f"ones get 413 (default {DEFAULT_MAX_IMAGE_PIXELS:,}; 0: no limit)"
        ),
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no request log")
    return p


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_serve(args: argparse.Namespace) -> int:
    from cliplab.serve import SearchService, create_app

    if args.max_upload_mb <= 0:
        raise UsageError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    if args.max_image_pixels < 0:
        raise UsageError(f"--max-image-pixels must be 0 (no limit) or positive, got {args.max_image_pixels}")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    try:
        import uvicorn
    except ImportError as err:  # pragma: no cover - a dependency
        raise ImportError("cliplab serve needs uvicorn and fastapi: pip install fastapi uvicorn") from err
    service = SearchService(args.index, model=args.model, device=args.device, max_image_pixels=args.max_image_pixels)
    app = create_app(service, max_upload=int(args.max_upload_mb * 2**20))
    if not _is_loopback(args.host):
        log.warning("serving on %s: anyone who can reach it can search the index and see its images", args.host)
    info = service.info()
    if not args.quiet:
        print(f"cliplab serve: {info['count']} images ({info['kind']} index) from {info['root']}", flush=True)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="warning" if args.quiet else "info",
        http="h11",  # bounds the request head (httptools has no such limit)
        h11_max_incomplete_event_size=MAX_REQUEST_HEAD,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0
