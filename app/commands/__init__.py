"""CLI command groups beyond the core ones, one module per concept. Each module exposes
``register(app, packs_app, filter_app)``; :mod:`app.cli` calls them all."""

MODULES = ("packs_cmd", "filter_cmd", "eval_cmd", "adapt_cmd")
