"""Calls into the project: the index follows a value into the functions it is passed to, through
the per-function summaries in each file's facts (placement_lint/analysis/summaries.py): which
parameters meet rank-dependent data (or the local tensor of another parameter), and which project
calls they are passed on to. Methods are looked up in the caller's class and its bases, plain
names in the enclosing scopes (nested functions) and then through imports. Recursion and cycles
end: a (function, parameter) pair is visited once per path, MAX_CALL_DEPTH calls deep at most."""

from __future__ import annotations

from typing import Any


#: how many calls deep a local tensor is followed into the project's functions
MAX_CALL_DEPTH = 5


class CallGraphMixin:
    """Mixin of placement_lint.index.ProjectIndex (which provides files, functions, classes,
    locate, resolve, class_fqn and want)."""

    def function(self, ref: str, from_path: str, call: dict[str, Any]) -> tuple[str, str, dict[str, Any]] | None:
        """(path, symbol, summary) of the project function a call names: a method of the
        caller's class or its bases (`self.m`), a nested or module-level function of the same
        file, or one imported from another module."""
        if ref.startswith("self."):
            cls = call.get("cls")
            return self.method(from_path, cls, ref[5:]) if cls else None
        if "." not in ref:
            scope = call.get("from") or ""
            while True:  # nested functions first, innermost scope outwards
                sym = f"{scope}.{ref}" if scope else ref
                if (from_path, sym) in self.functions:
                    return from_path, sym, self.functions[(from_path, sym)]
                if not scope:
                    break
                scope = scope.rpartition(".")[0]
        located = self.locate(ref, from_path)
        if located is None:
            return None
        path, qual = located
        info = self.functions.get((path, qual))
        if info is None:
            self.want(path)
            return None
        return path, qual, info

    def method(self, path: str, cls: str, name: str, _seen: frozenset = frozenset()) -> tuple[str, str, dict[str, Any]] | None:
        sym = f"{cls}.{name}"
        if (path, sym) in self.functions:
            return path, sym, self.functions[(path, sym)]
        fqn = self.class_fqn(path, cls)
        entry = self.classes.get(fqn)
        if entry is None or fqn in _seen:
            return None
        self.want(path)  # the method may sit in a region the first pass dropped
        for base in entry[1].get("bases", ()):
            target = self.resolve(base, path)
            if target is not None:
                bpath, bc = self.classes[target]
                found = self.method(bpath, bc["qualname"], name, _seen | {fqn})
                if found is not None:
                    return found
                continue
            located = self.locate(base, path)
            if located is not None:  # a project base class whose file (or region) is not analysed
                bpath, bqual = located
                if (bpath, f"{bqual}.{name}") in self.functions:
                    return bpath, f"{bqual}.{name}", self.functions[(bpath, f"{bqual}.{name}")]
                self.want(bpath)
        return None

    def target(self, call: dict[str, Any], from_path: str) -> tuple[str, str, dict[str, Any], int] | None:
        """(path, symbol, summary, parameter index) a call's argument lands in, or None when the
        callee is not a project function or the argument goes into *args / **kwargs."""
        fn = self.function(call["ref"], from_path, call)
        if fn is None:
            return None
        path, sym, info = fn
        arg, params = call["arg"], info.get("params", [])
        if isinstance(arg, str):
            index = params.index(arg) if arg in params else -1
        else:
            # a method called on self: its first parameter is the instance
            index = arg + (1 if info.get("method") and call["ref"].startswith("self.") else 0)
        if not 0 <= index < len(params):
            return None
        return path, sym, info, index

    def call_evidence(self, calls: list[dict[str, Any]], from_path: str, depth: int = 0,
                      _seen: frozenset = frozenset()) -> tuple[str, str, int, str] | None:
        """(why, path, line, function) of the first rank-dependent use a value meets inside the
        project functions it is passed to, followed transitively (recursion and cycles end)."""
        if depth >= MAX_CALL_DEPTH:
            return None
        for call in calls:
            found = self.target(call, from_path)
            if found is None:
                continue
            path, sym, info, index = found
            key = (path, sym, index)
            slot = info.get("slots", {}).get(str(index))
            if key in _seen or not slot:
                continue
            lines = slot.get("lines") or {}
            if slot.get("meets"):
                return slot["meets"][0], path, (lines.get("meets") or [0])[0], sym
            # the local tensor of another parameter, which this call passes a Shard DTensor to (by
            # position, or by keyword)
            shard = call.get("shard_args", ())
            instance = 1 if info.get("method") and call["ref"].startswith("self.") else 0
            for j, k in enumerate(slot.get("meets_local_of", ())):
                name = info["params"][k]
                if name in shard or (k - instance) in shard:
                    where = lines.get("meets_local_of") or [0]
                    return (f"meets the local shard of the Shard DTensor passed as `{name}`", path,
                            where[min(j, len(where) - 1)], sym)
            if slot.get("calls"):
                deeper = self.call_evidence(slot["calls"], path, depth + 1, _seen | {key})
                if deeper is not None:
                    return deeper
        return None

    def calls_clean(self, calls: list[dict[str, Any]], from_path: str, depth: int = 0,
                    _seen: frozenset = frozenset()) -> bool:
        """Every call resolves to a project function in which the value meets nothing
        rank-dependent, followed transitively: its consumers are all seen, and replicated."""
        if depth >= MAX_CALL_DEPTH:
            return False
        for call in calls:
            if call["ref"].startswith("torch."):
                continue  # a torch module or function: the same computation on every rank
            found = self.target(call, from_path)
            if found is None:
                return False  # not a project function we can see into (or into *args/**kwargs)
            path, sym, info, index = found
            key = (path, sym, index)
            if key in _seen:
                continue  # recursion: this path is being checked already
            slot = info.get("slots", {}).get(str(index)) or {}
            if slot.get("meets") or slot.get("meets_local_of"):
                return False
            if slot.get("calls") and not self.calls_clean(slot["calls"], path, depth + 1, _seen | {key}):
                return False
        return True
