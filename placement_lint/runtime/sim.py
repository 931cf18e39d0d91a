"""`--backend sim`: all N ranks in one process, on torch's local-tensor simulation.

torch.distributed._local_tensor (late 2025 onward) simulates SPMD ranks in one process: under a
`LocalTensorMode(N)`, every tensor is a `LocalTensor` that holds one plain tensor per simulated
rank, every op runs once per rank, and collectives issued on a fake process group are done on
the per-rank tensors (an all-reduce sums them). DTensor code runs unchanged on top of it.

What the check needs on top of that, and what this module provides:

* **Per-rank fingerprints.** The monitor's backward hooks receive a LocalTensor gradient. The
  adapter installed as `fingerprints._SIM` fingerprints each rank's tensor separately (with
  Python dispatch off, so those are plain tensor ops) and keeps the result as a LocalTensor of
  fingerprints; `collect()` turns it into one list per rank (`PerRank`). Mesh coordinates
  (per-rank SymInts under the mode) and reference differences are handled the same way.
* **No collective at report time.** The payload is split into N per-rank payloads
  (`split_payload`) and `verdicts.compute` decides exactly as on gloo.
* **Identical data where real ranks would have it.** A `torch.Generator` is one object here but
  N objects (with the same seed) in a real job; the simulation would draw N different tensors
  from it, one per rank, and the fixtures' inputs (and `ctx.randn`) would differ per rank.
  `_SameDrawsPerRank` replays the generator's state for every rank.
* **Refusal of code that asks for its rank.** The CLI refuses it statically (file:line); at run
  time `torch.distributed.get_rank`, `DeviceMesh.get_rank/get_local_rank/get_coordinate` and
  `ctx.rank`/`ctx.local_rank` called from user code stop the run with the same refusal (the code
  may live outside PATHS, e.g. a fixture imported by a harness).

Every private name is looked up in `load()`; a missing one refuses the backend with its name
and `--backend gloo` as the way out.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from types import SimpleNamespace
from typing import Any, Callable

REFUSAL = ("--backend sim cannot run code that asks for its rank (every simulated rank would see "
           "rank 0); use --backend gloo or nccl. Rank queries:")
_HINT = "use --backend gloo (CPU) or --backend nccl"


class SimUnavailable(RuntimeError):
    """This torch lacks a piece of the local-tensor simulation the check needs."""


class SimRankQuery(RuntimeError):
    """User code asked for its rank under the simulation (raised at the call)."""


class PerRank(dict):
    """A value that differs per simulated rank ({rank: value}); resolved by `split_payload`."""


# ---- feature detection -----------------------------------------------------------------------

_API: SimpleNamespace | None = None


def load() -> SimpleNamespace:
    """Every private torch name the simulation uses, or SimUnavailable naming what is missing."""
    global _API
    if _API is not None:
        return _API
    import torch

    ver = torch.__version__
    try:
        lt = importlib.import_module("torch.distributed._local_tensor")
    except ImportError as exc:
        raise SimUnavailable(f"torch {ver} has no torch.distributed._local_tensor (local-tensor "
                             f"simulation: {exc}); {_HINT}") from None
    missing = [n for n in ("LocalTensorMode", "LocalTensor", "maybe_disable_local_tensor_mode")
               if not hasattr(lt, n)]
    enabled = getattr(lt, "enabled_local_tensor_mode", None) or getattr(lt, "local_tensor_mode", None)
    if enabled is None:
        missing.append("enabled_local_tensor_mode")
    LT = getattr(lt, "LocalTensor", None)
    if LT is not None and "_local_tensors" not in getattr(LT, "__annotations__", {}) \
            and "_local_tensors" not in getattr(LT, "__slots__", ()):
        missing.append("LocalTensor._local_tensors")
    local_mesh = getattr(lt, "_LocalDeviceMesh", None)
    if local_mesh is None:
        missing.append("_LocalDeviceMesh")
    if missing:
        raise SimUnavailable(f"torch {ver}'s torch.distributed._local_tensor lacks {', '.join(missing)}; {_HINT}")
    try:
        from torch.testing._internal.distributed.fake_pg import FakeStore  # registers the "fake" backend
    except ImportError:
        raise SimUnavailable(f"torch {ver} has no fake process group "
                             f"(torch.testing._internal.distributed.fake_pg.FakeStore); {_HINT}") from None
    try:
        from torch.utils._mode_utils import no_dispatch
        from torch.utils import _pytree as pytree
        from torch.overrides import TorchFunctionMode
    except ImportError as exc:
        raise SimUnavailable(f"torch {ver} lacks {exc.name or exc} (needed by the simulation); {_HINT}") from None
    _API = SimpleNamespace(module=lt, LocalTensorMode=lt.LocalTensorMode, LocalTensor=LT,
                           maybe_disable=lt.maybe_disable_local_tensor_mode, enabled_mode=enabled,
                           local_mesh=local_mesh, FakeStore=FakeStore, no_dispatch=no_dispatch,
                           pytree=pytree, TorchFunctionMode=TorchFunctionMode)
    return _API


def unsupported_reason() -> str:
    """'' when the simulation can run here, else why not (one line, with the way out)."""
    try:
        load()
    except SimUnavailable as exc:
        return str(exc)
    return ""


# ---- the monitor's adapter -------------------------------------------------------------------

class _Adapter:
    """Installed as `fingerprints._SIM` during a sim run: per-rank numbers from LocalTensors."""

    def __init__(self, api: SimpleNamespace, world: int):
        self.api = api
        self.ranks = list(range(world))

    def shards(self, t) -> dict | None:
        if isinstance(t, self.api.LocalTensor):
            return t._local_tensors
        return None

    def fingerprint(self, t, plain: Callable):
        per = self.shards(t)
        with self.api.no_dispatch():
            if per is None:
                return plain(t)  # a plain tensor: the same on every simulated rank
            fps = {r: plain(x) for r, x in per.items()}
            return self.api.LocalTensor(fps)

    def per_rank(self, t, fn: Callable):
        per = self.shards(t)
        with self.api.no_dispatch():
            if per is None:
                return fn(t)
            return PerRank({r: fn(x) for r, x in per.items()})

    def host_rows(self, fps: list) -> list:
        """collect(): the stacked fingerprints as host lists, per simulated rank."""
        import torch

        with self.api.no_dispatch():
            if not any(self.shards(f) is not None for f in fps):
                return torch.stack(fps).tolist()
            per = [self.shards(f) for f in fps]
            rows = {r: torch.stack([f if s is None else s[r] for f, s in zip(fps, per)]).tolist()
                    for r in self.ranks}
        return [PerRank({r: rows[r][i] for r in self.ranks}) for i in range(len(fps))]

    def coord(self, coord):
        """Mesh coordinate(s): per-rank SymInts (LocalIntNode) under the mode -> PerRank lists."""
        if coord is None:
            return None
        out = {}
        for r in self.ranks:
            out[r] = [_int_on_rank(c, r) for c in coord]
        return PerRank(out)


def _int_on_rank(c, r: int) -> int:
    if isinstance(c, int):
        return c
    node = getattr(c, "node", None)
    local = getattr(node, "_local_ints", None)
    if local is not None:
        return int(local[r])
    val = getattr(node, "val", None)  # ConstantIntNode: every rank has the same value
    if isinstance(val, int):
        return val
    maybe = getattr(node, "maybe_as_int", None)
    if maybe is not None and maybe() is not None:
        return int(maybe())
    return int(c)


def split_payload(payload: dict, world: int) -> list[dict]:
    """One payload per simulated rank, as the ranks of a real job would have sent them."""
    out = []
    for r in range(world):
        p = _resolve(payload, r)
        p["rank"] = r
        p["world_size"] = world
        out.append(p)
    return out


def _resolve(obj, r: int):
    if isinstance(obj, PerRank):
        return _resolve(obj[r], r)
    if isinstance(obj, dict):
        return {k: _resolve(v, r) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v, r) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v, r) for v in obj)
    return obj


# ---- identical random draws per rank ---------------------------------------------------------

def _same_draws_mode(api: SimpleNamespace):
    import torch

    class _SameDrawsPerRank(api.TorchFunctionMode):
        """A call that draws from an explicit torch.Generator runs once per simulated rank from
        the same generator state, as N processes seeding N generators alike would."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            leaves = api.pytree.tree_leaves((args, kwargs))
            gens = [a for a in leaves if isinstance(a, torch.Generator)]
            lm = api.enabled_mode()
            LT = api.LocalTensor
            if not gens or lm is None or any(
                    isinstance(a, torch.Tensor) and not isinstance(a, LT)
                    and type(a) not in (torch.Tensor, torch.nn.Parameter) for a in leaves):
                # no generator, or a DTensor/other subclass: its own dispatch handles the draw
                return func(*args, **kwargs)
            states = [g.get_state() for g in gens]
            rank_out: dict[int, Any] = {}
            want_grad = bool(kwargs.get("requires_grad"))
            kw = {k: v for k, v in kwargs.items() if k != "requires_grad"}
            for r in sorted(lm.ranks):
                for g, st in zip(gens, states):
                    g.set_state(st)
                ra, rk = api.pytree.tree_map(lambda v: v._local_tensors[r] if isinstance(v, LT) else v, (args, kw))
                with api.no_dispatch():
                    rank_out[r] = func(*ra, **rk)
            first = rank_out[min(rank_out)]
            if not isinstance(first, torch.Tensor):
                return first
            for a in leaves:  # an in-place draw (x.normal_(generator=g)) returns its input
                if isinstance(a, LT) and first is a._local_tensors.get(min(rank_out)):
                    return a
            out = LT({r: t.detach() for r, t in rank_out.items()})
            if want_grad:
                out.requires_grad_(True)
            return out

    return _SameDrawsPerRank()


# ---- refusing rank queries at run time -------------------------------------------------------

class _RankGuard:
    """Wraps the rank queries while a harness runs; a call from user code is recorded and stops
    the run (every simulated rank would get rank 0, or a per-rank symbol the check cannot
    attribute)."""

    def __init__(self, api: SimpleNamespace):
        self.api = api
        self.hits: list[str] = []
        self._saved: list[tuple[Any, str, Any]] = []

    def _hit(self, what: str, frame) -> None:
        from placement_lint.runtime.attribution import _is_user_file

        if frame is None or not _is_user_file(frame.f_code.co_filename):
            return
        import linecache

        path = os.path.abspath(frame.f_code.co_filename)
        if path.startswith(os.getcwd() + os.sep):
            path = os.path.relpath(path)  # as the CLI's static refusal shows it
        code = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip() or what
        hit = f"{path}:{frame.f_lineno}: {code}"
        if hit not in self.hits:
            self.hits.append(hit)
        raise SimRankQuery(f"{REFUSAL}\n  {hit}")

    def _wrap(self, owner, name: str, label: str) -> None:
        orig = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
        if orig is None:
            return
        fn = orig.__func__ if isinstance(orig, staticmethod) else orig
        guard = self

        def wrapper(*args, **kwargs):
            guard._hit(label, sys._getframe(1))
            return fn(*args, **kwargs)

        wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
        self._saved.append((owner, name, orig))
        setattr(owner, name, staticmethod(wrapper) if isinstance(orig, staticmethod) else wrapper)

    def __enter__(self):
        import torch.distributed as dist

        for name in ("get_rank", "get_node_local_rank"):
            self._wrap(dist, name, f"torch.distributed.{name}()")
        # LocalTensorMode installs these on DeviceMesh while enabled (and again after every
        # disable/enable), so they are wrapped at the source
        for name in ("get_rank", "get_local_rank", "get_coordinate"):
            self._wrap(self.api.local_mesh, name, f"DeviceMesh.{name}()")
        return self

    def __exit__(self, *exc):
        for owner, name, orig in reversed(self._saved):
            setattr(owner, name, orig)
        self._saved.clear()

    def message(self) -> str:
        return REFUSAL + "\n  " + "\n  ".join(self.hits[:5]) + ("\n  ..." if len(self.hits) > 5 else "")


def _sim_context_class():
    from placement_lint.runtime.harness import HarnessContext

    class SimContext(HarnessContext):
        """HarnessContext for the simulation: meshes are built as torch's own local-tensor tests
        build them (mode disabled), and reading ctx.rank / ctx.local_rank is a rank query."""

        guard: Any = None

        def mesh(self, shape, names=None):
            with load().maybe_disable():
                return super().mesh(shape, names)

        def __getattribute__(self, name):
            if name in ("rank", "local_rank"):
                g = object.__getattribute__(self, "guard")
                if g is not None:
                    g._hit(f"ctx.{name}", sys._getframe(1))
            return object.__getattribute__(self, name)

    return SimContext


# ---- the run ---------------------------------------------------------------------------------

def run_sim(spec: dict) -> int:
    """The `--backend sim` counterpart of worker.run: same spec, same result file."""
    from placement_lint.runtime import worker as w

    world = int(os.environ.get("PLACEMENT_LINT_SIM_WORLD") or spec.get("sim_world") or 1)
    progress = w._Progress(spec.get("progress"), 0)
    current = {"harness": None}
    if spec.get("timeout"):
        w._watchdog(float(spec["timeout"]) + 15.0, progress)
    try:
        progress("importing torch")
        import torch
        import torch.distributed as dist

        api = load()
        mode = spec.get("mode", "check")
        if mode == "reference":
            results = _run_reference(spec, progress, current)
        else:
            progress("init_process_group (fake)")
            dist.init_process_group("fake", rank=0, world_size=world, store=api.FakeStore())
            try:
                results = _run_simulated(spec, api, world, progress, current)
            finally:
                dist.destroy_process_group()
        if isinstance(results, str):  # refused: code asked for its rank
            w._write_json_atomic(spec["result"], {"results": [], "world_size": world,
                                                  "torch": torch.__version__, "refused": results})
        else:
            w._write_json_atomic(spec["result"], {"results": results, "world_size": world,
                                                  "torch": torch.__version__, "simulated": True})
        progress("finished")
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the launcher
        w._report_failure(spec, 0, current["harness"], exc)
        progress(f"failed: {type(exc).__name__}")
        sys.stderr.flush()
        os._exit(1)


def _run_simulated(spec: dict, api: SimpleNamespace, world: int, progress, current) -> list | str:
    import torch

    from placement_lint.runtime import _compat
    from placement_lint.runtime import fingerprints
    from placement_lint.runtime.harness import load_harness
    from placement_lint.runtime.verdicts import compute
    from placement_lint.runtime.worker import _count_compile, finish_check, monitor_for, probe_for, probe_path

    mode = spec.get("mode", "check")
    SimContext = _sim_context_class()
    results = []
    compiled = {"n": 0}
    _count_compile(torch, compiled)
    record_fn = getattr(torch.autograd, "_enable_record_function", None)
    for h in spec["harnesses"]:
        current["harness"] = h
        progress(f"{h}: loading")
        fn = load_harness(h, spec.get("cwd"))
        compiled["n"] = 0
        guard = _RankGuard(api)
        ctx = SimContext(rank=0, world_size=world, local_rank=0, device=torch.device("cpu"), backend="sim")
        ctx.guard = guard
        adapter = _Adapter(api, world)
        ref = ref_probe = None  # loaded before the mode is entered: plain tensors, the same for every rank
        ref_path = (spec.get("reference") or {}).get(h)
        if mode == "check" and ref_path and getattr(fn, "supports_reference", True) and os.path.exists(ref_path):
            ref = torch.load(ref_path, map_location="cpu", weights_only=True)
            if os.path.exists(probe_path(ref_path)):
                ref_probe = torch.load(probe_path(ref_path), map_location="cpu", weights_only=True)
        t0 = time.perf_counter()
        payload = None
        model = None
        compile_mode = ""
        if record_fn is not None:
            record_fn(False)  # as torch's own local-tensor tests run
        fingerprints._SIM = adapter
        try:
            with guard, api.LocalTensorMode(world), _same_draws_mode(api):
                if mode == "check":
                    with (_compat.eager_compiled_regions() as compile_mode, monitor_for(spec, h) as mon,
                          probe_for(ref is not None) as probe):
                        progress(f"{h}: running the harness ({world} simulated ranks)")
                        model = fn(ctx)
                    run_s = time.perf_counter() - t0
                    progress(f"{h}: collecting")
                    module = model if isinstance(model, torch.nn.Module) else None
                    payload = mon.collect(module, reference=ref)
                    if probe is not None:
                        payload["probe"] = probe.collect(module)
                else:  # "plain": the harness without the monitor (benchmark baseline)
                    model = fn(ctx)
        except SimRankQuery:
            return guard.message()
        except BaseException:
            if guard.hits:  # the harness failed after asking for its rank: that is the reason
                return guard.message()
            raise
        finally:
            fingerprints._SIM = None
            ctx.guard = None
            if record_fn is not None:
                record_fn(True)
            _reset_dtensor_rng()
        if guard.hits:  # the harness swallowed the SimRankQuery
            return guard.message()
        if mode == "check":
            results.append(finish_check(compute(split_payload(payload, world), spec.get("reference_rtol"), ref_probe), spec,
                                        model, harness=h, backend="sim", t0=t0, run_s=run_s,
                                        compile_mode=compile_mode, compiled_regions=compiled["n"]))
        else:
            results.append({"harness": h, "seconds": round(time.perf_counter() - t0, 4)})
        progress(f"{h}: done")
    return results


def _run_reference(spec: dict, progress, current) -> list:
    """--reference under sim: the one-rank run needs no simulation; a real one-rank gloo group
    in this process (no torchrun, no port)."""
    import torch
    import torch.distributed as dist

    from placement_lint.runtime.harness import HarnessContext, load_harness
    from placement_lint.runtime.worker import reference_run

    progress("init_process_group (gloo, one rank)")
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    results = []
    try:
        for h in spec["harnesses"]:
            current["harness"] = h
            fn = load_harness(h, spec.get("cwd"))
            ctx = HarnessContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"),
                                 backend="gloo", reference=True)
            progress(f"{h}: reference run")
            results.append({"harness": h, "params": reference_run(fn, ctx, spec["reference_out"][h])})
    finally:
        dist.destroy_process_group()
    return results


def _reset_dtensor_rng() -> None:
    # as torch's local-tensor tests do between tests: the DTensor RNG tracker was built for the
    # simulated ranks and must not leak into the next harness
    try:
        from torch.distributed.tensor import _random

        _random._rng_tracker = None
    except (ImportError, AttributeError):
        pass
