"""Every rule's VALID/INVALID examples are its unit tests (the same examples feed `explain`)."""

from __future__ import annotations

import pytest

from placement_lint.rule import all_rules, expected_markers

CASES = [
    pytest.param(rule, kind, i, ex, id=f"{rule.CODE}-{kind}-{i}")
    for rule in all_rules()
    if not rule.RUNTIME_ONLY
    for kind in ("INVALID", "VALID")
    for i, ex in enumerate(getattr(rule, kind))
]


def test_every_rule_has_examples_and_docs():
    for rule in all_rules():
        assert rule.RUNTIME_ONLY or (rule.INVALID and rule.VALID), rule.CODE
        doc = rule.doc()
        for section in ("What it does", "Why it breaks the gradient", "Example", "Use instead", "Fix safety"):
            assert section in doc, (rule.CODE, section)
        assert rule.CODE.startswith("DTP") and rule.SLUG == rule.SLUG.lower()


@pytest.mark.parametrize("rule,kind,i,example", CASES)
def test_example(rule, kind, i, example, lint_files):
    files = example.files()
    report = lint_files(files, min_confidence="low")
    got = [(f.path, f.line, f.code, str(f.confidence)) for f in report.findings if f.code == rule.CODE]
    if kind == "INVALID":
        want = [
            (name, line, code, conf)
            for name, src in files.items()
            for line, code, conf in expected_markers(src)
        ]
        assert want, "an INVALID example must mark its findings"
        assert sorted((p, ln, c) for p, ln, c, _ in got) == sorted((p, ln, c) for p, ln, c, _ in want)
        for (p, ln, c, conf), (_, _, _, wconf) in zip(sorted(got), sorted(want)):
            if wconf is not None:
                assert conf == wconf, (p, ln, c)
    else:
        # VALID: nothing at the default threshold (low findings are allowed: they are not shown)
        shown = [g for g in got if g[3] in ("high", "medium")]
        assert shown == []


def test_local_map_config_of_other_libraries_is_not_torch(lint_files):
    """`torchaudio_like` starts with "torch" but is not torch: its LocalMapConfig is not local_map's
    (a VALID example may still carry low findings, so this checks every confidence)."""
    src = "from {pkg}.configs import LocalMapConfig\n\ncfg = LocalMapConfig(in_grad_placements=None)\n"
    for pkg, flagged in (("torchaudio_like", False), ("torchtitan.protocols", True)):
        report = lint_files({"m.py": src.format(pkg=pkg)}, min_confidence="low")
        assert any(f.code == "DTP103" for f in report.findings) is flagged, pkg
