"""The harness protocol.

A harness is a callable `harness(ctx) -> nn.Module`. It builds the model (identically on every
rank: call `ctx.seed()` first), applies its parallelism on meshes from `ctx.mesh(...)`, runs one
forward and backward with data from `ctx.randn(...)` (identical global data on every rank, so any
rank-dependence comes from the parallelism, never from the data), and returns the module whose
parameters are checked. It must not call `optimizer.step()`/`zero_grad()` after backward: the
gradients are what is checked. Full example in docs/runtime.md.

For `--reference`, the same harness runs on one rank: `ctx.mesh((2, 2))` then returns a (1, 1)
mesh, so sizes must come from constants, not from `ctx.world_size`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from placement_lint.errors import UsageError


@dataclass
class HarnessContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    reference: bool = False  # True in the one-rank reference run of --reference
    base_seed: int = 1234
    meshes: list = field(default_factory=list)

    def mesh(self, shape, names=None):
        """`init_device_mesh(device.type, shape, mesh_dim_names=names)`; all-ones shape in a
        reference run so the same harness code runs on one rank."""
        from placement_lint.runtime._compat import init_device_mesh

        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if self.reference:
            shape = tuple(1 for _ in shape)
        names = tuple(names) if names is not None else None
        m = init_device_mesh(self.device.type, shape, mesh_dim_names=names)
        self.meshes.append(m)
        return m

    def seed(self, offset: int = 0) -> None:
        """Seed every RNG identically on every rank (model init must not depend on the rank)."""
        torch.manual_seed(self.base_seed + offset)
        if self.device.type == "cuda":
            torch.cuda.manual_seed_all(self.base_seed + offset)

    def randn(self, *shape, dtype=None, requires_grad: bool = False, offset: int = 0) -> torch.Tensor:
        """Global random data, the same on every rank (and in the reference run)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
            shape = tuple(shape[0])
        g = torch.Generator(device="cpu")
        g.manual_seed(self.base_seed * 7919 + 17 + offset + _shape_salt(shape))
        # drawn on the CPU generator so CPU and CUDA runs (and every rank) see the same numbers
        t = torch.randn(*shape, generator=g, dtype=torch.float32).to(self.device)
        if dtype is not None:
            t = t.to(dtype)
        return t.requires_grad_(requires_grad)

    def randint(self, high: int, *shape, offset: int = 0) -> torch.Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
            shape = tuple(shape[0])
        g = torch.Generator(device="cpu")
        g.manual_seed(self.base_seed * 104729 + 3 + offset + _shape_salt(shape))
        return torch.randint(high, shape, generator=g).to(self.device)


def _shape_salt(shape) -> int:
    s = 0
    for d in shape:
        s = s * 131 + int(d)
    return s % 100003


def split_spec(spec: str) -> tuple[str, str, bool]:
    """(target, function, is a file path) of `path/to/file.py:func` or `package.module:func`;
    the function defaults to `harness`."""
    target, _, func = spec.rpartition(":")
    if not target or "/" in func or func.endswith(".py"):
        target, func = spec, "harness"
    return target, func, target.endswith(".py") or os.sep in target or "/" in target


def load_harness(spec: str, cwd: str | os.PathLike | None = None) -> Callable[[HarnessContext], Any]:
    """Resolve `path/to/file.py:func` or `package.module:func` (func defaults to `harness`)."""
    cwd = Path(cwd or os.getcwd())
    target, func, is_file = split_spec(spec)
    if str(cwd) not in sys.path:
        sys.path.insert(0, str(cwd))
    if is_file:
        path = Path(target)
        if not path.is_absolute():
            path = cwd / path
        if not path.is_file():
            raise UsageError(f"harness file not found: {target}")
        # the harness's own folder first, so `from model import Net` next to it works
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        name = f"_placement_lint_harness_{abs(hash(str(path.resolve())))}"
        sp = importlib.util.spec_from_file_location(name, path)
        if sp is None or sp.loader is None:
            raise UsageError(f"cannot load harness file {target}")
        mod = importlib.util.module_from_spec(sp)
        sys.modules[name] = mod
        sp.loader.exec_module(mod)
    else:
        try:
            mod = importlib.import_module(target)
        except ImportError as exc:
            raise UsageError(f"cannot import harness module {target!r}: {exc}") from exc
    fn = getattr(mod, func, None)
    if fn is None or not callable(fn):
        raise UsageError(f"harness {spec!r}: {target} has no callable {func!r}")
    return fn


def harness_source_path(spec: str, cwd: str | os.PathLike | None = None) -> Path | None:
    """The file a harness spec points to, without importing it (for static checks)."""
    cwd = Path(cwd or os.getcwd())
    target, _func, is_file = split_spec(spec)  # as load_harness reads it
    if is_file:
        p = Path(target)
        return p if p.is_absolute() else cwd / p
    try:
        found = _module_spec(target, cwd) if target else None
    except (ImportError, ValueError):
        return None
    if found is not None and found.origin and found.origin.endswith(".py"):
        return Path(found.origin)
    return None


def require_module(model, spec: str) -> None:
    """A harness returns the module whose gradients are checked: anything else (None from a
    forgotten `return`, the loss tensor) would check nothing and report "0 parameters checked"."""
    if not isinstance(model, torch.nn.Module):
        got = "None" if model is None else f"a {type(model).__qualname__}"
        raise UsageError(f"harness {spec} returned {got}, not an nn.Module: it must return the model "
                         "whose parameter gradients are checked (after one backward)")


def _module_spec(target: str, cwd: Path):
    """The import spec of module `target`, found on the path the ranks will search (cwd first)
    without importing anything: importlib.util.find_spec would execute the parent packages. Falls
    back to find_spec for modules only an import hook knows (e.g. editable installs)."""
    from importlib.machinery import PathFinder

    search = [str(cwd)] + sys.path
    parts = target.split(".")
    found = PathFinder.find_spec(parts[0], search)
    if found is not None:  # on the path: its submodules are too (or nowhere)
        for i in range(1, len(parts)):
            search = list(found.submodule_search_locations or [])
            found = PathFinder.find_spec(".".join(parts[:i + 1]), search) if search else None
            if found is None:
                return None
        return found
    if str(cwd) not in sys.path:
        sys.path.insert(0, str(cwd))
    return importlib.util.find_spec(target)


def _top_level_names(tree) -> set[str] | None:
    """Names the module binds outside its functions and classes, under `if`/`try`/`with` too;
    None where that cannot be known statically (`import *`, `globals()`, a module `__getattr__`)."""
    import ast

    names: set[str] = set()
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue  # their bodies bind local names
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(a.name == "*" for a in node.names):
                return None
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif node.id == "globals":
                return None
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
        todo.extend(ast.iter_child_nodes(node))
    return None if "__getattr__" in names else names


def check_harness(spec: str, cwd: str | os.PathLike | None = None) -> None:
    """Refuse a harness that cannot load, before any rank starts (UsageError, one line): a missing
    file or module, a syntax error (file:line), a function the module never binds at top level.
    Static: neither the harness nor its packages are imported here (the ranks do that)."""
    import ast

    cwd = Path(cwd or os.getcwd())
    target, func, is_file = split_spec(spec)
    if is_file:
        path = Path(target) if Path(target).is_absolute() else cwd / target
        if not path.is_file():
            raise UsageError(f"harness file not found: {target}")
    else:
        try:
            found = _module_spec(target, cwd)
        except (ImportError, ValueError) as exc:
            raise UsageError(f"cannot import harness module {target!r}: {exc}") from None
        if found is None:
            raise UsageError(f"cannot import harness module {target!r}: no such module")
        if not (found.origin and found.origin.endswith(".py")):
            return  # a compiled or namespace module: the ranks will tell
        path = Path(found.origin)
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        raise UsageError(f"harness {spec!r}: syntax error at {path}:{exc.lineno}: {exc.msg}") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"harness {spec!r}: cannot read {path}: {exc}") from None
    names = _top_level_names(tree)
    if names is not None and func not in names:
        raise UsageError(f"harness {spec!r}: {path.name} defines no top-level {func!r}")
