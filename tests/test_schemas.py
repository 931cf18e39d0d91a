"""placement-lint's SARIF and rdjson output, validated against the official schemas.

The schemas are vendored unchanged under tests/data/schemas (see its README for their source
and commit): SARIF 2.1.0 from oasis-tcs/sarif-spec and reviewdog's rdjson (DiagnosticResult).
The output is the real CLI's, on the fixtures (findings, exit 1) and on a clean file (an empty
report, exit 0). A deliberately broken copy of each must fail, so these checks can fail. Every
`$ref` resolves from the local files: the registries refuse any retrieval (no network).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from placement_lint.cli import cli

jsonschema = pytest.importorskip("jsonschema")
referencing = pytest.importorskip("referencing")  # jsonschema >= 4.18 resolves $refs through it
from referencing import Registry, Resource  # noqa: E402
from referencing.exceptions import NoSuchResource  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "tests" / "data" / "schemas"
SARIF_SCHEMA = SCHEMAS / "sarif-schema-2.1.0.json"
RDJSON_DIR = SCHEMAS / "rdjson"
RDJSON_TOP = "DiagnosticResult.json"
CLEAN_FILE = "fixtures/negatives/plain_mlp.py"


def _offline(uri: str):
    """The registries' retrieve: nothing is fetched, an unknown reference is an error."""
    raise NoSuchResource(ref=uri)


def _load(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def _schema_id(contents) -> str | None:
    """The document's own id: `$id` (draft 6 and later) or `id` (draft 4, as both files declare)."""
    for key in ("$id", "id"):
        if isinstance(contents.get(key), str):
            return contents[key]
    return None


def _validator(schema, registry: Registry):
    cls = jsonschema.validators.validator_for(schema)  # from the schema's own "$schema"
    cls.check_schema(schema)
    return cls(schema, registry=registry, format_checker=cls.FORMAT_CHECKER)


def sarif_validator():
    schema = _load(SARIF_SCHEMA)
    resource = Resource.from_contents(schema)
    registry = Registry(retrieve=_offline).with_resource(_schema_id(schema), resource)
    return _validator(schema, registry)


def rdjson_registry() -> Registry:
    """Every file of the rdjson folder, keyed by its own id where it has one and always by its
    file name: the form a relative `$ref` to a sibling file ("Diagnostic.json") takes."""
    pairs = []
    for path in sorted(RDJSON_DIR.glob("*.json")):
        resource = Resource.from_contents(_load(path))
        pairs.append((path.name, resource))
        if resource.id():
            pairs.append((resource.id(), resource))
    return Registry(retrieve=_offline).with_resources(pairs)


def rdjson_validator():
    return _validator(_load(RDJSON_DIR / RDJSON_TOP), rdjson_registry())


def _refs(node):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _errors(validator, instance) -> list[str]:
    out = []
    for e in validator.iter_errors(instance):
        where = "/".join(map(str, e.absolute_path)) or "<root>"
        out.append(f"{where}: {e.message[:300]} (schema: {'/'.join(map(str, e.absolute_schema_path))})")
    return sorted(out)


def _assert_valid(validator, instance):
    errors = _errors(validator, instance)
    assert not errors, f"{len(errors)} schema violation(s):\n" + "\n".join(errors[:25])


@pytest.fixture
def check(monkeypatch):
    """Run `placement-lint check` in-process from the repository root; the parsed JSON stdout."""
    monkeypatch.chdir(REPO)

    def run(fmt: str, target: str = "fixtures", exit_code: int = 1):
        res = CliRunner().invoke(
            cli, ["check", "--no-cache", "--format", fmt, "--min-confidence", "low", target]
        )
        assert res.exit_code == exit_code, (res.exit_code, res.stderr, res.exception)
        return json.loads(res.stdout)

    return run


# the vendored schemas themselves ---------------------------------------------------------------
def test_vendored_schemas_are_valid_and_offline():
    sarif = _load(SARIF_SCHEMA)
    assert sarif["$schema"] == "http://json-schema.org/draft-04/schema#"
    assert sarif_validator().schema is not None  # check_schema against its metaschema
    local = {ref for ref in _refs(sarif) if not ref.startswith("#/definitions/")}
    assert not local, local  # the SARIF schema is self-contained

    files = sorted(RDJSON_DIR.glob("*.json"))
    assert RDJSON_TOP in [p.name for p in files]
    registry = rdjson_registry()
    for path in files:
        contents = _load(path)
        jsonschema.validators.validator_for(contents).check_schema(contents)
        resolver = registry.resolver(base_uri=_schema_id(contents) or path.name)
        for ref in _refs(contents):  # each resolves from the local files, nothing is retrieved
            resolved = resolver.lookup(ref)
            assert isinstance(resolved.contents, dict), (path.name, ref)


# SARIF -----------------------------------------------------------------------------------------
def test_sarif_output_matches_the_official_schema(check):
    sarif = check("sarif")
    _assert_valid(sarif_validator(), sarif)

    results = sarif["runs"][0]["results"]
    assert len(results) >= 10
    for result in results:
        assert result["partialFingerprints"] and all(result["partialFingerprints"].values())
        assert result["locations"]
        for loc in result["locations"]:
            region = loc["physicalLocation"]["region"]
            assert region["startLine"] >= 1
    assert sarif["runs"][0]["tool"]["driver"]["rules"]
    assert any(r.get("fixes") for r in results)  # the fix objects are validated too


def test_sarif_broken_copies_fail(check):
    sarif = check("sarif")
    validator = sarif_validator()
    assert validator.is_valid(sarif)

    no_runs = copy.deepcopy(sarif)
    del no_runs["runs"]
    assert not validator.is_valid(no_runs)

    bad_region = copy.deepcopy(sarif)
    bad_region["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] = 0
    assert not validator.is_valid(bad_region)

    bad_level = copy.deepcopy(sarif)
    bad_level["runs"][0]["results"][0]["level"] = "fatal"
    assert not validator.is_valid(bad_level)


# rdjson ----------------------------------------------------------------------------------------
def test_rdjson_output_matches_the_official_schema(check):
    rd = check("rdjson")
    _assert_valid(rdjson_validator(), rd)

    diagnostics = rd["diagnostics"]
    assert len(diagnostics) >= 10
    for d in diagnostics:
        assert d["message"] and d["code"]["value"].startswith("DTP")
        assert d["location"]["path"] and d["location"]["range"]["start"]["line"] >= 1
    assert any(d.get("suggestions") for d in diagnostics)  # the suggestions are validated too


def test_rdjson_broken_copies_fail(check):
    rd = check("rdjson")
    validator = rdjson_validator()
    assert validator.is_valid(rd)

    bad_location = copy.deepcopy(rd)
    bad_location["diagnostics"][0]["location"] = "fixtures/ep_full_tensor.py:40"
    assert not validator.is_valid(bad_location)

    bad_severity = copy.deepcopy(rd)
    bad_severity["diagnostics"][0]["severity"] = "FATAL"
    assert not validator.is_valid(bad_severity)

    bad_line = copy.deepcopy(rd)
    bad_line["diagnostics"][0]["location"]["range"]["start"]["line"] = "40"
    assert not validator.is_valid(bad_line)


# an empty report -------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["sarif", "rdjson"])
def test_empty_report_matches_the_official_schema(check, fmt):
    out = check(fmt, CLEAN_FILE, exit_code=0)
    if fmt == "sarif":
        _assert_valid(sarif_validator(), out)
        assert out["runs"][0]["results"] == []
    else:
        _assert_valid(rdjson_validator(), out)
        assert not out.get("diagnostics")


def test_the_registries_fetch_nothing():
    """A reference to a file that is not vendored is an error, not a download."""
    for registry in (rdjson_registry(), Registry(retrieve=_offline)):
        with pytest.raises(referencing.exceptions.Unresolvable):
            registry.resolver(base_uri="").lookup("https://example.invalid/not-vendored.json")
    schema = {"$schema": "http://json-schema.org/draft-04/schema#", "$ref": "NotVendored.json"}
    validator = jsonschema.Draft4Validator(schema, registry=rdjson_registry())
    with pytest.raises(referencing.exceptions.Unresolvable):
        validator.validate({})
