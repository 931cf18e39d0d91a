"""What the analyzer knows about torch's APIs, as data (TorchFix-style), not code.

Names are *canonical keys*: the last component of a qualified name under `torch` (or of an
unresolved name, since projects re-export these). Private and public module paths map to the same
key, so `torch.distributed._tensor.Replicate` and `torch.distributed.tensor.Replicate` agree.
"""

from __future__ import annotations

# --- Placements -------------------------------------------------------------------------------
#: constructor -> placement letter (R = Replicate, S = Shard, P = Partial)
PLACEMENT_CONSTRUCTORS = {
    "Replicate": "R",
    "Shard": "S",
    "_StridedShard": "S",
    "Partial": "P",
    "_Partial": "P",
    "_NormPartial": "P",
    "MaskPartial": "P",
    "_MaskPartial": "P",
}

# --- Entering DTensor: (positional index of placements, keyword) and the default placement ------
DTENSOR_CONSTRUCTORS = {
    "distribute_tensor": (2, "placements"),
    "from_local": (2, "placements"),  # DTensor.from_local(local, mesh, placements)
}
#: DTensor method -> (positional index of placements among the call's args, keyword)
DTENSOR_REDISTRIBUTE = {"redistribute": (1, "placements")}

# --- Leaving DTensor ---------------------------------------------------------------------------
EXIT_METHODS = ("to_local", "full_tensor")

# --- ParallelStyles: flag keyword -> (layout keyword, default layout, default flag) ------------
# Defaults checked against torch 2.13 torch/distributed/tensor/parallel/style.py.
# A layout of None means "required argument / no default".
STYLES: dict[str, dict[str, tuple[str, str | None, bool]]] = {
    "ColwiseParallel": {"use_local_output": ("output_layouts", "S", True)},
    "RowwiseParallel": {"use_local_output": ("output_layouts", "R", True)},
    "SequenceParallel": {"use_local_output": ("", "S", False)},
    "PrepareModuleInput": {"use_local_output": ("desired_input_layouts", None, False)},
    "PrepareModuleOutput": {"use_local_output": ("desired_output_layouts", None, True)},
    "PrepareModuleInputOutput": {
        "use_local_input": ("desired_input_layouts", None, False),
        "use_local_output": ("desired_output_layouts", None, True),
    },
}
#: float8 / other libraries' subclasses of the torch styles behave like their parent
STYLE_ALIASES = {
    "Float8ColwiseParallel": "ColwiseParallel",
    "Float8RowwiseParallel": "RowwiseParallel",
    "PrepareFloat8ModuleInput": "PrepareModuleInput",
}
STYLE_BASES = {"ParallelStyle", *STYLES, *STYLE_ALIASES}
#: the layout a torch style's input arrives in by default (`input_layouts`), which a project
#: subclass inherits: a bare `to_local()` of an input that arrives Shard labels it rightly
STYLE_DEFAULT_INPUT_LAYOUT = {"ColwiseParallel": "R", "RowwiseParallel": "S"}
#: the hook methods a style converts its *inputs* in (torch's names, kept by subclasses)
STYLE_INPUT_HOOKS = ("_prepare_input_fn",)

# --- local_map ---------------------------------------------------------------------------------
#: positional order of local_map's parameters
LOCAL_MAP_PARAMS = ("func", "out_placements", "in_placements", "in_grad_placements", "device_mesh")
LOCAL_MAP_NAMES = {"local_map", "LocalMapConfig"}
#: top-level packages whose `local_map`/`LocalMapConfig` are torch's local_map or a wrapper of it
#: with the same in_grad_placements contract (torchtitan's module protocol)
LOCAL_MAP_PACKAGES = {"torch", "torchtitan"}

# --- Rank values ---------------------------------------------------------------------------------
#: functions returning this process's rank (resolved through imports: dist.get_rank, ...)
RANK_FUNCTIONS = {"get_rank", "get_local_rank", "get_node_local_rank", "get_global_rank", "get_group_rank"}
#: methods returning a rank when called without arguments (mesh.get_local_rank(), group.rank(),
#: mesh.get_coordinate())
RANK_METHODS = {"get_local_rank", "get_rank", "rank", "get_coordinate", "get_group_rank"}
#: of those, the ones returning a sequence of ranks, one per mesh dim (`mesh.get_coordinate()[d]`)
RANK_SEQUENCE_METHODS = {"get_coordinate"}
#: methods returning a rank whatever their arguments (`mesh.get_local_rank("tp")`,
#: `dist.get_rank(group)`, `mesh._sym_get_coordinate(d)`, `dist.get_group_rank(group, r)`)
RANK_METHODS_WITH_ARGS = {"get_local_rank", "get_rank", "_sym_get_coordinate", "get_group_rank", "get_global_rank"}
#: environment variables that hold a rank
RANK_ENV_VARS = {"RANK", "LOCAL_RANK", "GROUP_RANK", "NODE_RANK"}
#: a parameter or attribute named like this probably holds a rank (lower confidence: name only)
RANK_NAME_SUFFIXES = ("rank",)

# --- Rank-dependent data -------------------------------------------------------------------------
#: calls whose result differs across ranks (token dispatch, all-to-all)
RANKDEP_CALL_SUBSTRINGS = ("all_to_all", "dispatch", "alltoall")
#: iterating over an attribute/name containing one of these yields per-rank modules (EP experts)
PER_RANK_ITERABLE_SUBSTRINGS = ("local_expert", "experts")

# --- Values that carry no gradient ----------------------------------------------------------------
#: attributes that read metadata only (no data flows into autograd)
METADATA_ATTRS = {
    "shape", "dtype", "device", "ndim", "is_cuda", "is_meta", "layout", "requires_grad", "grad_fn",
    "placements", "device_mesh", "is_leaf", "names", "itemsize", "nbytes", "is_sparse",
}
#: methods that return metadata or plain Python numbers
METADATA_METHODS = {
    "size", "dim", "numel", "stride", "element_size", "is_contiguous", "data_ptr", "storage_offset",
    "nelement", "item", "tolist", "get_device", "untyped_storage", "is_floating_point", "ndimension",
}
#: methods that cut the autograd graph
DETACH_METHODS = {"detach", "detach_", "numpy", "cpu_numpy"}
#: calls / methods producing integer or boolean tensors (indices, ids, masks)
INT_TENSOR_FUNCTIONS = {
    "randint", "randint_like", "argsort", "argmax", "argmin", "bincount", "searchsorted", "bucketize",
    "nonzero", "randperm", "multinomial", "histc", "isin", "isnan", "isinf", "isfinite", "unique",
    "unique_consecutive", "arange", "logical_and", "logical_or", "logical_not", "eq", "ne", "lt",
    "le", "gt", "ge", "cumsum_int",
}
INT_TENSOR_METHODS = {
    "long", "int", "short", "bool", "byte", "char", "argsort", "argmax", "argmin", "nonzero",
    "bincount", "eq", "ne", "lt", "le", "gt", "ge", "logical_not", "logical_and", "logical_or",
}
INT_DTYPES = {"long", "int64", "int32", "int", "int16", "int8", "uint8", "bool", "short"}
#: variable-name suffixes that mark integer id / index / mask tensors in practice
INT_NAME_SUFFIXES = (
    "ids", "idx", "indices", "index", "mask", "_id", "offsets", "counts", "labels", "hashes",
    "cu_seqlens", "_splits", "_sizes", "tokens_per_expert",
)

#: substrings that mark integer data anywhere in a name (`counts_sde`, `expert_offsets_per_rank`)
INT_NAME_PARTS = ("count", "offset")
#: name suffixes of Python sequences (datasets, file lists), never tensors
LIST_NAME_SUFFIXES = ("dataset", "_list", "files", "paths", "names", "keys")

#: Python sequence producers
LIST_FUNCTIONS = {"list", "range", "tuple", "sorted", "enumerate", "zip", "reversed", "dict", "set"}
LIST_METHODS = {"tolist", "keys", "values", "items"}

#: tensor splitting functions/methods whose result is indexed per rank
SPLIT_FUNCTIONS = {"chunk", "split", "tensor_split", "unbind", "hsplit", "vsplit", "split_with_sizes"}

#: grad-mode contexts / decorators that make a region non-differentiable
NO_GRAD_CONTEXTS = {"no_grad", "inference_mode"}
#: base classes whose forward/backward run outside autograd's recording
AUTOGRAD_FUNCTION_BASES = {"Function", "InplaceFunction"}

#: calls that only observe values (no gradient leaves through them)
OBSERVER_CALLS = {
    "print", "len", "isinstance", "issubclass", "repr", "str", "hasattr", "getattr", "id", "type",
    "assert_close", "allclose", "equal", "format", "debug", "info", "warning", "error", "log",
    "range", "enumerate", "zip", "super", "iter", "next", "bool", "float", "int",
}

#: functions whose tensors carry no gradient (checkpoint conversion, optimizer and grad-norm code,
#: saved-tensor hooks): matched against the function's or its class's name
NO_GRAD_FUNCTION_SUBSTRINGS = (
    "state_dict", "from_hf", "to_hf", "grad_norm", "clip_grad", "pack_hook", "save_pretrained",
)
NO_GRAD_CLASS_SUBSTRINGS = ("StateDictAdapter", "Optimizer", "Checkpointer")
#: decorators whose function runs below autograd (custom op kernels, fake impls)
BELOW_AUTOGRAD_DECORATORS = {"impl", "custom_op", "register_fake", "register_kernel", "register_autograd"}
#: grad-mode predicates: `if not torch.is_grad_enabled()` / `if not x.requires_grad` guard no-grad code
GRAD_PREDICATES = {"is_grad_enabled", "requires_grad"}
#: observers: a value used only here feeds no gradient
OBSERVER_TORCH_FUNCTIONS = {"equal", "allclose", "isclose", "assert_close", "is_nonzero", "is_same_size"}
#: loss functions: their scalar result is the same on every rank when their inputs are
LOSS_FUNCTIONS = {
    "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "kl_div", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "smooth_l1_loss", "huber_loss", "cosine_embedding_loss",
}
#: differentiable collectives: their backward already reduces, so slicing their output by rank
#: is the correct hand-written redistribute
SYNCED_CALL_SUBSTRINGS = ("_autograd",)
SYNCED_MODULES = ("torch.distributed.nn.functional",)
SYNCED_FUNCTION_CLASS_SUBSTRINGS = ("gather", "allreduce", "all_reduce", "alltoall", "all_to_all", "reducescatter", "reduce_scatter")
#: names of mesh dims / groups / variables that shard the *data* (batch, sequence): a slice of
#: activations by such a rank is the intended per-rank share, reduced later by FSDP/DDP
DATA_PARALLEL_MARKERS = ("cp", "sp", "dp", "context", "sequence", "seq", "data", "fsdp", "batch")

#: modules whose functions compute tensors (`torch.matmul`, `F.linear`, ...); other torch modules'
#: helpers (torch.testing, torch.utils) return whatever they return
TENSOR_NAMESPACES = {
    "torch", "torch.nn.functional", "torch.special", "torch.linalg", "torch.fft", "torch.nn.init",
    "torch.distributed._functional_collectives", "torch.distributed.nn.functional", "F",
}
#: first components of dotted names that are never a project's ParallelStyle (unresolved aliases
#: of torch modules, the standard library's typing helpers)
NOT_PROJECT_ROOTS = {"nn", "F", "typing", "collections", "dataclasses", "functools", "enum"}

#: what marks a file as data-parallel code (each rank sees its own batch): wrappers, and mesh
#: dims / meshes named for data parallelism. Matched as whole words against the source text.
DATA_PARALLEL_CONTEXT = (
    "fully_shard", "FullyShardedDataParallel", "DistributedDataParallel", "FSDP", "DDP", "dp_mesh",
    "dp_shard", "dp_replicate", "data_parallel", "replicate",
)

#: names of model inputs and targets: slicing them by rank is data-parallel batch splitting
BATCH_NAMES = {"input", "inputs", "target", "targets", "batch", "labels", "input_ids", "data"}

#: "test code" for rank slices: a function whose own name starts with one of these. DTP201 reports
#: its rank slices at low (splitting data per rank is what tests do), and regions.py skips such
#: functions when a run cannot report low findings.
TEST_FUNCTION_PREFIXES = ("test_", "_test_")
