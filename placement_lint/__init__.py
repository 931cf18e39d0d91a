"""placement-lint: find PyTorch DTensor placement bugs that silently drop gradient collectives."""

__version__ = "0.1.0"
