"""The built-in data sources, one module per scheme; each registers itself with ``register_data_source``.

Every module of this package is imported the first time the registry (``cliplab.data.schemes.DATA_SOURCES``)
is used, so adding a built-in scheme is adding one module here (see docs/architecture.md, "Adding a dataset
format").
"""

# Importing one of these modules directly (``from cliplab.data.sources.wds import ...``) imports this package
# first: register every built-in now, in the registry's order, so that the order in which bare paths are
# matched (``detect``) never depends on which module some code happened to import first.
from cliplab.data.schemes import DATA_SOURCES

DATA_SOURCES.load_builtins()
