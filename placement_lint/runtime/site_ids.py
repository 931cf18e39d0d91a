"""Runtime site ids: one string per site, the same on every rank (the verdicts group the ranks'
records by it; --verify-fix addresses sites by it). Torch-free: merge reads them too."""

from __future__ import annotations


def site_id(api: str, path: str, line: int, module: str, hook: str, local_map: str = "") -> str:
    """A site's id: the same on every rank (the verdicts group the ranks' records by it)."""
    return f"{api}|{path}|{line}|{module}|{hook}" + (f"|local_map={local_map}" if local_map else "")


def split_site_id(sid: str) -> tuple[str, str, str, str, str, str]:
    """(api, path, line, module, hook, local_map) of a site id."""
    parts = sid.split("|", 5)
    parts += [""] * (6 - len(parts))
    lm = parts[5]
    return parts[0], parts[1], parts[2], parts[3], parts[4], lm[len("local_map="):] if lm.startswith("local_map=") else lm


def module_suffix(fqn: str, rel: str) -> bool:
    """Is module path `rel` (relative to some module) a dotted suffix of `fqn` (or equal)?"""
    if fqn == rel or not rel:
        return True
    return fqn.endswith("." + rel)
