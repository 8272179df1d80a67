"""slmrag: private, offline question answering over your own documents with small language models."""

from app import env as _env

_env.apply_offline_defaults()

__version__ = "0.1.0"
