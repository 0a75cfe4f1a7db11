"""The built-in data sources, one module per scheme; each registers itself with ``register_data_source``.

Every module of this package is imported the first time the registry is used, so adding a built-in scheme
is adding one module here (see docs/architecture.md, "Adding a dataset format").
"""
