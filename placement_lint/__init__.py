"""placement-lint: find PyTorch DTensor placement bugs that silently drop gradient collectives.

Python API: `lint_paths(paths, **options)` and `lint_source(text, path, **options)` return
`Finding`s (see placement_lint.python_api); imported on first use, so `import placement_lint`
stays cheap for the CLI and the pre-commit hook."""

__version__ = "0.1.0"


def lint_paths(paths, **kwargs):
    from placement_lint.python_api import lint_paths as run

    return run(paths, **kwargs)


def lint_source(text, path, **kwargs):
    from placement_lint.python_api import lint_source as run

    return run(text, path, **kwargs)
