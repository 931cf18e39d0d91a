"""Attribution: which user code a DTensor conversion, or a parameter, belongs to.

A call belongs to the first frame of user code on the stack (not torch, not placement-lint, not
the standard library; site-packages is user code), plus the path of the module being called,
relative to the outermost module that runs, and the part of that module's call (forward, pre or
post hook) that made it: inside a hook, torch converts on the user's behalf (a ParallelStyle).
`param_location` finds the user line that defines a parameter.
"""

from __future__ import annotations

import os
import sysconfig
from typing import Any

import torch

import placement_lint

_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
_PKG_DIR = os.path.dirname(os.path.abspath(placement_lint.__file__)) + os.sep
_STDLIB_DIR = os.path.abspath(sysconfig.get_paths()["stdlib"]) + os.sep
_CALL_IMPL_CODE = torch.nn.Module._call_impl.__code__
_MODULE_PY = _CALL_IMPL_CODE.co_filename


def _is_user_file(filename: str) -> bool:
    if not filename or filename.startswith("<"):
        return False
    fn = os.path.abspath(filename)
    if fn.startswith(_TORCH_DIR) or fn.startswith(_PKG_DIR):
        return False
    if fn.startswith(_STDLIB_DIR) and "-packages" + os.sep not in fn:
        return False  # contextlib, functools... but not site-packages (torchtitan is user code)
    return True


def _in_backward() -> bool:
    # from_local is called by _ToTorchTensor.backward; that is torch's plumbing, not a site.
    node = getattr(torch._C, "_current_autograd_node", None)
    return node is not None and node() is not None


def _code_of(fn: Any):
    seen = 0
    while fn is not None and seen < 8:
        seen += 1
        code = getattr(fn, "__code__", None)
        if code is not None:
            return code
        fn = getattr(fn, "func", None) or getattr(fn, "__func__", None) or getattr(fn, "__wrapped__", None)
    return None


def locate(frame, name_cache: dict) -> tuple[str, int, str, str, str, str, Any]:
    """(path, line, function, module_path, hook_kind, torch_frame, outermost module) for the
    current call; module_path is relative to the outermost module being called."""
    user = None
    torch_frame = ""
    chain: list[Any] = []  # modules being called, innermost first
    hook = ""
    prev_code = None
    hook_caller = None  # code object called by Module._call_impl (or its nested `inner`)
    f = frame
    while f is not None:
        code = f.f_code
        if code.co_filename == _MODULE_PY and code.co_name == "inner" and hook_caller is None:
            # torch >= 2.x runs hooks from a closure nested in _call_impl
            hook_caller = prev_code
        if code is _CALL_IMPL_CODE:
            mod = f.f_locals.get("self")
            if mod is not None:
                if not chain:
                    # the innermost module call: did it reach us through a hook or forward?
                    hook = _hook_kind(mod, hook_caller or prev_code)
                chain.append(mod)
        elif user is None:
            fn = code.co_filename
            if _is_user_file(fn):
                user = (os.path.abspath(fn), f.f_lineno, code.co_qualname if hasattr(code, "co_qualname") else code.co_name)
            elif not torch_frame and os.path.abspath(fn).startswith(_TORCH_DIR):
                torch_frame = f"{os.path.relpath(os.path.abspath(fn), os.path.dirname(_TORCH_DIR.rstrip(os.sep)))}:{f.f_lineno} {code.co_name}"
        prev_code = code
        f = f.f_back
    if user is None:
        user = ("<torch>", 0, "")
    module = _module_path(chain, name_cache)
    return user[0], user[1], user[2], module, hook, torch_frame, (chain[-1] if chain else None)


def _hook_kind(mod, called_code) -> str:
    """Which part of the module call invoked us: 'pre' hook, 'post' hook or 'forward'."""
    if called_code is None:
        return ""
    fwd = _code_of(getattr(type(mod), "forward", None))
    if called_code is fwd:
        return "forward"
    for h in getattr(mod, "_forward_pre_hooks", {}).values():
        if _code_of(h) is called_code:
            return "pre"
    for h in getattr(mod, "_forward_hooks", {}).values():
        if _code_of(h) is called_code:
            return "post"
    try:
        from torch.nn.modules import module as _m

        for h in _m._global_forward_pre_hooks.values():
            if _code_of(h) is called_code:
                return "pre"
        for h in _m._global_forward_hooks.values():
            if _code_of(h) is called_code:
                return "post"
    except (ImportError, AttributeError):
        pass
    name = called_code.co_name
    if "input" in name or name.startswith("pre"):
        return "pre"
    if "output" in name or "out" in name:
        return "post"
    return "forward"


def _module_path(chain: list[Any], name_cache: dict) -> str:
    if not chain:
        return ""
    # names relative to the outermost module being called (the model the harness runs):
    # stable across ranks, unlike object ids, so it can be part of a site id
    parts = [_child_name(parent, child, name_cache) for child, parent in zip(chain, chain[1:])]
    parts.reverse()
    return ".".join(parts)


def _child_name(parent, child, name_cache: dict) -> str:
    key = (id(parent), id(child))
    hit = name_cache.get(key)
    if hit is not None and hit[0] is parent and hit[1] is child:
        return hit[2]
    name = ""
    for n, m in getattr(parent, "_modules", {}).items():
        if m is child:
            name = n
            break
    if not name:
        for n, m in parent.named_modules():
            if m is child and n:
                name = n
                break
    if not name:
        name = f"<{type(child).__name__}>"
    name_cache[key] = (parent, child, name)  # holds refs: ids cannot be reused
    return name


def param_location(model: torch.nn.Module, name: str) -> dict:
    """Where a parameter is defined: the `self.<attr> =` line in the nearest user-defined
    module's __init__ (walking up from torch's own modules such as nn.Linear)."""
    import inspect
    import re

    parts = name.split(".")
    chain = [model]
    for p in parts[:-1]:
        chain.append(getattr(chain[-1], p, None) if chain[-1] is not None else None)
    attrs = parts[-1:]
    for depth in range(len(chain) - 1, -1, -1):
        mod = chain[depth]
        attr = attrs[0]
        if mod is None:
            break
        cls = type(mod)
        try:
            src_file = inspect.getsourcefile(cls)
        except TypeError:
            src_file = None
        if src_file and _is_user_file(src_file):
            try:
                lines, start = inspect.getsourcelines(cls)
            except (OSError, TypeError):
                lines, start = [], 1
            pat = re.compile(rf"self\.{re.escape(attr)}\s*(:[^=]*)?=(?!=)")
            for i, text in enumerate(lines):
                if pat.search(text):
                    return {"path": os.path.abspath(src_file), "line": start + i}
            return {"path": os.path.abspath(src_file), "line": start}
        if depth > 0:
            attrs = [parts[depth - 1]]
    return {}
