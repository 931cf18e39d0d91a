"""cst_parse.parse_module: the same tree as LibCST's, without per-node validation during the parse
only, and the ordinary parse where LibCST's hook is not the one it relies on."""

from __future__ import annotations

from pathlib import Path

import libcst as cst
import pytest

from placement_lint import cst_parse

SOURCE = (Path(__file__).parent.parent / "fixtures" / "tp_expert_matmul.py").read_text()


@pytest.fixture(autouse=True)
def libcst_only(monkeypatch):
    """These tests are about LibCST's own parse (the fast front end has its tests/test_fast_parse.py)."""
    monkeypatch.setattr(cst_parse, "FAST", False)


@pytest.fixture
def validations(monkeypatch):
    """Counts the Name nodes that validate themselves."""
    calls = []
    original = cst.Name._validate

    def counting(self):
        calls.append(self.value)
        return original(self)

    monkeypatch.setattr(cst.Name, "_validate", counting)
    return calls


def test_same_tree_as_libcst():
    ours, theirs = cst_parse.parse_module(SOURCE), cst.parse_module(SOURCE)
    assert ours.code == SOURCE
    assert ours.deep_equals(theirs)


def test_nodes_are_not_validated_during_the_parse_only(validations):
    cst.parse_module(SOURCE)
    assert validations, "LibCST's own parse validates (the spy works)"
    validations.clear()
    cst_parse.parse_module(SOURCE)
    assert validations == []
    with pytest.raises(cst.CSTValidationError):
        cst.Name("")  # validation is back once the parse is done


def test_validation_comes_back_after_a_syntax_error():
    with pytest.raises(cst.ParserSyntaxError):
        cst_parse.parse_module("def f(:\n")
    with pytest.raises(cst.CSTValidationError):
        cst.Name("")


def test_a_changed_hook_is_parsed_the_ordinary_way(monkeypatch, validations):
    monkeypatch.setattr(cst_parse, "_SKIPPABLE", False)
    cst_parse.parse_module(SOURCE)
    assert validations


def test_the_installed_libcst_has_the_hook_relied_on():
    # if this fails, a LibCST upgrade changed CSTNode.__post_init__: parsing still works (validated,
    # slower); check that skipping the new hook is still safe before updating cst_parse
    assert cst_parse._SKIPPABLE
