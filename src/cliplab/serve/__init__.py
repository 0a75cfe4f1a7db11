"""``cliplab serve INDEX``: a local web app to search an image index by text or by image.

>>> from cliplab.serve import SearchService, create_app
>>> service = SearchService("my-index")           # loads the index and the model that built it
>>> hits, ms = service.search_text("a red circle", k=10)
>>> app = create_app(service)                     # FastAPI; run with uvicorn
"""

from cliplab.serve.app import create_app
from cliplab.serve.service import Hit, QueryError, SearchService

__all__ = ["SearchService", "QueryError", "Hit", "create_app"]
