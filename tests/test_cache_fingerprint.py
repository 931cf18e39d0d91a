"""The cache's code fingerprint covers every module that computing facts imports: a module left
out would let an edited analyzer read facts the old code computed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from placement_lint import cache

REPO = Path(__file__).resolve().parent.parent
#: imported while facts are computed, but decide nothing about them
NOT_FACTS = {"__init__.py", "errors.py"}

PROBE = """
import json, sys
from pathlib import Path
from placement_lint.facts import MODES, file_facts
for path in sys.argv[1:]:
    data = Path(path).read_bytes()
    for mode in MODES:
        file_facts(data, mode)
        file_facts(data, mode, (1, 2))  # a part of a file split across the pool
print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items()
                        if n.startswith("placement_lint") and getattr(m, "__file__", None))))
"""


def test_every_module_facts_import_is_in_the_fingerprint():
    fixtures = [str(p) for p in sorted((REPO / "fixtures").rglob("*.py"))]
    out = subprocess.run([sys.executable, "-c", PROBE, *fixtures], capture_output=True, text=True, check=True, cwd=REPO)
    package = Path(cache.__file__).resolve().parent
    used = {Path(f).resolve().relative_to(package).as_posix() for f in json.loads(out.stdout)}
    covered = set(cache._FACT_MODULES) | {p.relative_to(package).as_posix() for p in (package / "analysis").glob("*.py")}
    assert used - covered - NOT_FACTS == set()
    assert len(used) > len(NOT_FACTS) + 5  # the probe really computed facts


def test_the_fingerprint_changes_with_a_listed_module(monkeypatch, tmp_path):
    before = cache.code_fingerprint()
    package = Path(cache.__file__).resolve().parent
    original = Path.read_bytes

    def edited(self):
        data = original(self)
        return data + b"\n# edited\n" if self.resolve() == package / "rank_flow.py" else data

    monkeypatch.setattr(Path, "read_bytes", edited)
    assert cache.code_fingerprint() != before
