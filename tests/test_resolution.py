"""Module resolution as Python does it (placement_lint.resolution), on files written here."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from placement_lint.resolution import Resolver, scan_module


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, src in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(src).lstrip("\n"))
    return root


def resolve(root: Path, ref: str, from_file: str, analysed: list[str] | None = None):
    files = [str(root / f) for f in (analysed or [from_file])]
    found = Resolver(files).resolve(ref, str(root / from_file))
    if found is None:
        return None
    path, qual = found
    return os.path.relpath(path, root).replace(os.sep, "/"), qual


def test_package_init_definition_and_reexport_chain(tmp_path):
    tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "class Direct:\n    pass\n",
        "pkg/par/__init__.py": 'from .impl import Style\n\n__all__ = ["Style"]\n',
        "pkg/par/impl.py": "class Style:\n    pass\n",
        "pkg/use.py": "",
    })
    assert resolve(tmp_path, "pkg.sub.Direct", "pkg/use.py") == ("pkg/sub/__init__.py", "Direct")
    assert resolve(tmp_path, "pkg.par.Style", "pkg/use.py") == ("pkg/par/impl.py", "Style")
    # `import pkg.par as d; d.Style()` is written down as pkg.par.Style by the analyzer
    assert resolve(tmp_path, "pkg.par.impl.Style", "pkg/use.py") == ("pkg/par/impl.py", "Style")


def test_relative_imports_at_any_depth_and_methods(tmp_path):
    tree(tmp_path, {
        "a/__init__.py": "",
        "a/par/__init__.py": "from .impl import Style as Renamed\n",
        "a/par/impl.py": "class Style:\n    def hook(self):\n        pass\n",
        "a/models/__init__.py": "",
        "a/models/deep/__init__.py": "",
        "a/models/deep/m.py": "",
    })
    assert resolve(tmp_path, "...par.Renamed", "a/models/deep/m.py") == ("a/par/impl.py", "Style")
    assert resolve(tmp_path, "..par.impl.Style.hook", "a/models/m.py") == ("a/par/impl.py", "Style.hook")
    assert resolve(tmp_path, ".impl.Style", "a/par/__init__.py") == ("a/par/impl.py", "Style")


def test_src_layout_and_several_roots(tmp_path):
    tree(tmp_path, {
        "proj/src/mypkg/__init__.py": "",
        "proj/src/mypkg/styles.py": "class S:\n    pass\n",
        "proj/src/mypkg/model.py": "",
        "other/lib/libpkg/__init__.py": "from libpkg.core import helper\n",
        "other/lib/libpkg/core.py": "def helper(x):\n    return x\n",
    })
    # src/ has no __init__.py: it is the import root of mypkg
    assert resolve(tmp_path, "mypkg.styles.S", "proj/src/mypkg/model.py") == ("proj/src/mypkg/styles.py", "S")
    # a second root given on the command line: its packages are importable from the first
    both = ["proj/src/mypkg/model.py", "other/lib/libpkg/core.py"]
    assert resolve(tmp_path, "libpkg.helper", "proj/src/mypkg/model.py", both) == ("other/lib/libpkg/core.py", "helper")
    assert resolve(tmp_path, "libpkg.helper", "proj/src/mypkg/model.py") is None  # that root not given


def test_star_imports_guarded_imports_and_cycles_end(tmp_path):
    tree(tmp_path, {
        "p/__init__.py": "from p.impl import *\ntry:\n    from p.fast import Fast\nexcept ImportError:\n    Fast = None\n",
        "p/impl.py": "class Star:\n    pass\n",
        "p/fast.py": "class Fast:\n    pass\n",
        "p/a.py": "from p.b import Loop\n",
        "p/b.py": "from p.a import Loop\n",
        "p/u.py": "",
    })
    assert resolve(tmp_path, "p.Star", "p/u.py") == ("p/impl.py", "Star")
    # the guarded import is seen; the fallback assignment also defines the name: either is the name
    assert resolve(tmp_path, "p.Fast", "p/u.py") in {("p/fast.py", "Fast"), ("p/__init__.py", "Fast")}
    assert resolve(tmp_path, "p.a.Loop", "p/u.py") is None  # a re-export cycle ends


def test_scan_reads_the_top_level_only_and_skips_strings(tmp_path):
    tree(tmp_path, {"m.py": '''
        """Usage:

        from elsewhere import Fake
        class Fake2: pass
        """
        from real import (
            One,
            Two as Deux,
        )
        import a.b as ab, c.d

        class Style(Base, metaclass=Meta):
            from inner import NotTopLevel

        def f():
            from inside import Hidden

        X: int = 3
    '''})
    s = scan_module(str(tmp_path / "m.py"))
    assert s.imports == {"One": "real.One", "Deux": "real.Two", "ab": "a.b", "c": "c"}
    assert s.defs == {"Style", "f", "X"}
    assert s.bases == {"Style": ["Base"]}


def test_scans_are_kept_between_runs_and_dropped_when_a_file_changes(tmp_path):
    """A warm run reads no module to resolve a name (the scan store serves it while the file's
    stat is unchanged), and an edited module is scanned again."""
    from placement_lint.cache import ScanStore

    tree(tmp_path, {"p/__init__.py": "from .impl import A\n", "p/impl.py": "class A:\n    pass\n", "p/u.py": ""})
    store = ScanStore(tmp_path / "cache", b"salt")
    first = Resolver([str(tmp_path / "p/u.py")], store.entries)
    assert first.resolve("p.A", str(tmp_path / "p/u.py"))[1] == "A"
    assert first.stored_changed
    store.save()

    again = ScanStore(tmp_path / "cache", b"salt")
    assert set(again.entries) == {str(tmp_path / "p/__init__.py"), str(tmp_path / "p/impl.py")}
    import placement_lint.resolution as resolution

    real, calls = resolution.scan_module, []
    resolution.scan_module = lambda path: calls.append(path) or real(path)
    try:
        warm = Resolver([str(tmp_path / "p/u.py")], again.entries)
        assert warm.resolve("p.A", str(tmp_path / "p/u.py"))[1] == "A" and calls == []
        (tmp_path / "p/__init__.py").write_text("from .impl import A as B\n")
        os.utime(tmp_path / "p/__init__.py", ns=(1, 1))
        edited = Resolver([str(tmp_path / "p/u.py")], again.entries)
        assert edited.resolve("p.B", str(tmp_path / "p/u.py"))[1] == "A"
        assert calls == [str(tmp_path / "p/__init__.py")]
    finally:
        resolution.scan_module = real
