"""The built-in bench stages, one module each; each registers its ``Stage``, whose ``order`` places it.

Every module of this package is imported the first time ``cliplab.bench.STAGES`` is used, so a built-in stage
is one file (``docs/architecture.md``, "Adding a bench stage").
"""
