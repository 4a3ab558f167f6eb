"""Read official StyleGAN2-ADA network pickles (``network-snapshot-*.pkl``) without running their code.

NVlabs' ``torch_utils.persistence`` pickles every network as ``_reconstruct_persistent_obj(meta)``,
where ``meta['module_src']`` is Python source that plain ``pickle.load`` would ``exec``. We unpickle
through an allowlist instead: that call yields an inert :class:`PersistentRecord`, tensors are rebuilt
by our own bounds-checked functions, and any other global is refused. The weights then load into our
:class:`~core.gan.stylegan2.StyleGAN2Generator`, whose parameter names mirror the official ones.
"""

from __future__ import annotations

import collections
import hashlib
import io
import logging
import math
import pickle
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from core.errors import ModelLoadError
from core.gan.base import Generator
from core.gan.stylegan2 import StyleGAN2Config, StyleGAN2Generator
from core.gan.stylegan3 import StyleGAN3Config, StyleGAN3Generator, layer_specs
from core.models.safe_load import refusal_reason

log = logging.getLogger(__name__)

MAX_MODULE_DEPTH = 16  # the official generator nests 4 deep; a cyclic or absurd tree stops here
# The official Generator.__init__ signature, in order.
INT_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
GENERATOR_ARGS = (*INT_ARGS, "mapping_kwargs", "synthesis_kwargs")
OUR_SUBMODULES = {"mapping": "mapping_net", "synthesis": "synthesis_net"}
# Options that change only training or float16 speed, not what the net computes in float32.
IGNORED_OPTIONS = {
    "w_avg_beta", "num_fp16_res", "fp16_channels_last", "channels_last",
    "fused_modconv_default",  # which of two equal ways to run the modulated conv
}  # fmt: skip
# Options our implementation supports only at the official default.
FIXED_OPTIONS = {
    "architecture": "skip",
    "activation": "lrelu",
    "kernel_size": 3,
    "use_noise": True,
    "resample_filter": (1, 3, 3, 1),
}
# Options we read, with the types they may have; a crafted file can put any value anywhere.
NONE = type(None)
MAPPING_OPTIONS = {
    "num_layers": int, "lr_multiplier": (int, float), "layer_features": (int, NONE),
    "embed_features": (int, NONE),
}  # fmt: skip
SYNTHESIS_OPTIONS = {"channel_base": int, "channel_max": int, "conv_clamp": (int, float, NONE)}
PLAIN = (NONE, bool, int, float, str)
# SHA-256 of the network module sources NVlabs' code embeds in its pickles (dnnlib persistence stores
# the defining module's source). Another source is code the official tools would run on loading.
OFFICIAL_SOURCES = {
    # As dnnlib embeds it: inspect.getsource drops the file's UTF-8 byte-order mark (the raw file's
    # sha256, df49fc78..., never appears in a pickle; it was listed here by mistake until a pickle made
    # by NVlabs' own code was loaded in bench/projector_speed.py and warned).
    "53b4e1ec457171d4e2c1454d48013765ab626141c35cdd383b020950effe11a5":
        "stylegan2-ada-pytorch training/networks.py (375a436)",
    "b6f14e8fa2a95de4d38218fef31380c6a70de770f585107e209ff83075c307ef":
        "stylegan3 training/networks_stylegan2.py (583f2bd)",
    "137a76d163766bad469acb7a0835a6598419fb17585e5e0a72e3f0008668811c":
        "stylegan3 training/networks_stylegan2.py (8fb5177)",
    "06082fb3e8929e477f58fb8bc78e7ecb9a9209eb01444272d1d153c85a6a89f7":
        "stylegan3 training/networks_stylegan3.py (583f2bd)",
    "739c91ff0995b5901ecaa5d1ccc89e1f0ec0d6999e2204828ce10410051a838c":
        "stylegan3 training/networks_stylegan3.py (8fb5177)",
}  # fmt: skip


class PersistentRecord(NamedTuple):
    """What we make of ``_reconstruct_persistent_obj(meta)``: the class name, the object's ``__dict__``
    and the SHA-256 of the module source the pickle embeds (hashed, never run; None when absent)."""

    class_name: str
    state: dict
    source_sha256: str | None = None


# Tensors and storages travel through the unpickler inside tuples: pickle's BUILD and SETITEM opcodes
# can mutate any object on its stack, and a torch tensor's __setstate__ would accept an unchecked view.
class _TensorRef(NamedTuple):
    tensor: torch.Tensor


class _StorageRef(NamedTuple):
    untyped: torch.UntypedStorage
    dtype: torch.dtype


class _EasyDict(dict):
    """Stands in for ``dnnlib.util.EasyDict``: the same items, without its attribute access."""


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    # meta['module_src'] is the code a plain unpickler would exec: it is only ever hashed, to tell the
    # person when it is not NVlabs' own (OFFICIAL_SOURCES).
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise pickle.UnpicklingError("malformed persistent object")
    class_name, state, src = meta.get("class_name"), meta.get("state"), meta.get("module_src")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise pickle.UnpicklingError("malformed persistent object")
    digest = hashlib.sha256(src.encode("utf-8")).hexdigest() if isinstance(src, str) else None
    return PersistentRecord(class_name, state, digest)


def _load_storage(data: Any) -> _StorageRef:
    # torch.storage._load_from_bytes would call torch.load without weights_only on these bytes.
    if not isinstance(data, bytes):
        raise pickle.UnpicklingError("malformed tensor storage")
    try:
        storage = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:  # torch's message would advise weights_only=False: never that
        raise pickle.UnpicklingError(f"a tensor storage holds Python code ({refusal_reason(e)})") from None
    if not isinstance(storage, torch.TypedStorage):
        raise pickle.UnpicklingError(f"expected a tensor storage, got {type(storage).__name__}")
    return _StorageRef(storage.untyped(), storage.dtype)


def _check_view(storage: _StorageRef, offset: Any, size: Any, stride: Any) -> None:
    # torch._utils._rebuild_tensor does not bounds-check: a crafted view would read past the storage.
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride) or not all(type(d) is int and d >= 0 for d in (offset, *size, *stride)):
        raise pickle.UnpicklingError("malformed tensor view")
    n_elem = storage.untyped.nbytes() // storage.dtype.itemsize
    if 0 not in size and offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) >= n_elem:
        raise pickle.UnpicklingError(f"tensor view {list(size)} at offset {offset} runs past its storage")


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    # Hooks and metadata are dropped: weights need neither, and hooks are meant to be callables.
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("malformed tensor")
    _check_view(storage, offset, size, stride)
    tensor = torch.empty(0, dtype=storage.dtype).set_(storage.untyped, offset, tuple(size), tuple(stride))
    return _TensorRef(tensor)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    # A parameter comes back as its plain tensor; load_state_dict wraps it again.
    if not isinstance(data, _TensorRef):
        raise pickle.UnpicklingError("malformed parameter")
    return data


def _numpy_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
    dtype = np.dtype(spec) if isinstance(spec, str) else None
    if dtype is None or dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"numpy dtype {spec!r} is not a plain number type")
    return dtype


class _NumpyArray:
    """Stands in for a pickled numpy array (StyleGAN3 nets keep layer sizes as arrays): ``__setstate__``
    accepts only a plain number dtype, an integer shape and raw bytes of that size (never an object
    array), and keeps ``np.frombuffer`` of them in ``value``."""

    value: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError("malformed numpy array")
        _version, shape, dtype, fortran, raw = state
        if (
            not isinstance(dtype, np.dtype)
            or not isinstance(shape, tuple)
            or not all(type(d) is int and 0 <= d < 2**31 for d in shape)
            or not isinstance(raw, bytes | bytearray)
            or len(raw) != math.prod(shape) * dtype.itemsize
        ):
            raise pickle.UnpicklingError("malformed numpy array")
        self.value = np.frombuffer(bytes(raw), dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _numpy_reconstruct(subtype: Any, shape: Any, dtype_code: Any) -> _NumpyArray:
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("only plain numpy arrays can be read")
    return _NumpyArray()


def _numpy_scalar(dtype: Any, data: Any) -> int | float | bool:
    # Official nets keep gains such as np.sqrt(2) as numpy scalars; a Python number does as well.
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or not isinstance(data, bytes):
        raise pickle.UnpicklingError("malformed numpy scalar")
    return np.frombuffer(data, dtype=dtype, count=1)[0].item()


# (module, name) as written in the pickle -> what we hand back instead.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,  # protocol 3 (Python 3.7, the official setup) has no set opcode
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): np.ndarray,  # only ever compared against, in _numpy_reconstruct
}


class _AllowlistUnpickler(pickle.Unpickler):
    def __init__(self, file, file_name: str):
        super().__init__(file)
        self.file_name = file_name

    def find_class(self, module: str, name: str) -> Any:
        target = ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise ModelLoadError(_refusal(self.file_name, module, name))
        return target


def _refusal(file_name: str, module: str, name: str) -> str:
    msg = f"{file_name}: refused to load: the pickle asks for {module}.{name}, which is not on the allowlist"
    if module.startswith("dnnlib.tflib"):
        msg += " (this is a TensorFlow StyleGAN pickle; only StyleGAN2-ADA PyTorch pickles are supported)"
    return msg


def _unpickle(path: Path) -> Any:
    try:
        with path.open("rb") as f, warnings.catch_warnings():
            # Pickled tensors arrive as TypedStorage (the only form old torch wrote); torch warns on it.
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            return _AllowlistUnpickler(f, path.name).load()
    except ModelLoadError:
        raise
    except Exception as e:  # untrusted bytes can fail in any opcode handler: report it, never crash
        raise ModelLoadError(f"{path.name} is not a readable StyleGAN2-ADA network pickle: {e}") from e


def _network_record(data: Any, key: str, name: str) -> PersistentRecord:
    if not isinstance(data, dict):
        raise ModelLoadError(f"{name} is not a StyleGAN2-ADA network pickle ({type(data).__name__})")
    if key not in data:
        raise ModelLoadError(f"{name} has no {key!r} network (it holds {sorted(map(str, data))})")
    record = data[key]
    if not isinstance(record, PersistentRecord) or record.class_name != "Generator":
        raise ModelLoadError(f"{name}: {key!r} is not a StyleGAN2-ADA Generator")
    return record


def _field(state: dict, key: str, kind: type | tuple[type, ...], name: str) -> Any:
    """``state[key]`` checked to be a ``kind``; an empty mapping when absent or None."""
    value = state.get(key)
    if value is None:
        return {}
    if not isinstance(value, kind):
        raise ModelLoadError(f"{name}: malformed network ({key} is a {type(value).__name__})")
    return value


def _check_layout(record: PersistentRecord, name: str) -> str:
    """ "stylegan2" or "stylegan3" (NVlabs' two generators share the class name ``Generator``)."""
    modules = _field(record.state, "_modules", dict, name)
    mapping, synthesis = modules.get("mapping"), modules.get("synthesis")
    if not (isinstance(mapping, PersistentRecord) and isinstance(synthesis, PersistentRecord)):
        raise ModelLoadError(f"{name}: the generator has no mapping and synthesis networks")
    blocks = _field(synthesis.state, "_modules", dict, name)
    if "b4" in blocks:
        return "stylegan2"
    if "input" in blocks and any(str(k).startswith("L0_") for k in blocks):
        return "stylegan3"
    raise ModelLoadError(f"{name}: neither a StyleGAN2 nor a StyleGAN3 generator")


# StyleGAN3's Generator(z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs, **synthesis):
# the synthesis options it reads (flat), with their types; num_fp16_res changes only float16 speed.
SG3_OPTIONS = {
    "channel_base": int, "channel_max": int, "num_layers": int, "num_critical": int, "margin_size": int,
    "conv_kernel": int, "filter_size": int, "lrelu_upsampling": int, "use_radial_filters": bool,
    "first_cutoff": (int, float), "first_stopband": (int, float), "last_stopband_rel": (int, float),
    "output_scale": (int, float), "magnitude_ema_beta": (int, float), "conv_clamp": (int, float, NONE),
}  # fmt: skip
SG3_IGNORED = {"num_fp16_res", "use_fp16"}


def _sg3_config(record: PersistentRecord, name: str) -> StyleGAN3Config:
    args, kwargs = record.state.get("_init_args", ()), record.state.get("_init_kwargs", {})
    if not isinstance(args, tuple | list) or len(args) > 6 or not isinstance(kwargs, dict):
        raise ModelLoadError(f"{name}: the generator's init arguments are malformed")
    merged = dict(zip((*INT_ARGS, "mapping_kwargs"), args, strict=False)) | dict(kwargs)
    for key in INT_ARGS:
        if type(merged.get(key)) is not int:
            raise ModelLoadError(f"{name}: generator argument {key}={merged.get(key)!r} is not an integer")
    if merged["img_channels"] != 3 or merged["c_dim"] < 0:
        raise ModelLoadError(f"{name}: only RGB generators with c_dim >= 0 are supported")
    mapping = _options(merged, "mapping_kwargs", MAPPING_OPTIONS, name)
    options = {k: v for k, v in merged.items() if k not in (*INT_ARGS, "mapping_kwargs")}
    for option, value in options.items():
        if option not in SG3_OPTIONS.keys() | SG3_IGNORED:
            raise ModelLoadError(f"{name}: unsupported StyleGAN3 option {option}={value!r}")
        if option in SG3_OPTIONS and not isinstance(value, SG3_OPTIONS[option]):
            raise ModelLoadError(f"{name}: StyleGAN3 option {option}={value!r} has the wrong type")
    # Defaults are those of NVlabs' StyleGAN3 MappingNetwork / SynthesisNetwork / SynthesisLayer.
    known = {k: v for k, v in options.items() if k in SG3_OPTIONS}
    try:
        return StyleGAN3Config(
            z_dim=merged["z_dim"], w_dim=merged["w_dim"], c_dim=merged["c_dim"],
            img_resolution=merged["img_resolution"], mapping_layers=mapping.get("num_layers", 2),
            mapping_lr_multiplier=mapping.get("lr_multiplier", 0.01), **known,
        )  # fmt: skip
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{name}: unusable StyleGAN3 options: {e}") from e


def _instantiate_sg3(cfg: StyleGAN3Config, weights: dict[str, torch.Tensor], name: str) -> StyleGAN3Generator:
    try:
        layer_specs(cfg)  # geometry from the options: refuse nonsense before building anything
        with torch.device("meta"):  # as _instantiate: nothing allocated that the file does not back
            G = StyleGAN3Generator(cfg, design_filters=False)
        G.load_state_dict(weights, strict=True, assign=True)
    except (RuntimeError, ValueError, TypeError, OverflowError, ZeroDivisionError) as e:
        raise ModelLoadError(f"{name}: the weights do not match the generator's init arguments: {e}") from e
    return G


def _warn_unofficial_source(record: PersistentRecord, name: str) -> None:
    if record.source_sha256 not in OFFICIAL_SOURCES:
        log.warning(
            "%s: its embedded network code is not NVlabs' official source (sha256 %s). Latent Canvas "
            "never runs it, but NVlabs' own tools would execute it on loading: open this file only here.",
            name, (record.source_sha256 or "none")[:12],
        )  # fmt: skip


def _init_kwargs(record: PersistentRecord, name: str) -> dict:
    args, kwargs = record.state.get("_init_args", ()), record.state.get("_init_kwargs", {})
    if not isinstance(args, tuple | list) or len(args) > len(GENERATOR_ARGS) or not isinstance(kwargs, dict):
        raise ModelLoadError(f"{name}: the generator's init arguments are malformed")
    merged = dict(zip(GENERATOR_ARGS, args, strict=False)) | dict(kwargs)
    merged = _nest_flat_synthesis_kwargs(merged, name)
    unknown = sorted(str(arg) for arg in set(merged) - set(GENERATOR_ARGS))
    if unknown:
        raise ModelLoadError(f"{name}: unsupported generator arguments {unknown}")
    for key in INT_ARGS:
        if type(merged.get(key)) is not int:
            raise ModelLoadError(f"{name}: generator argument {key}={merged.get(key)!r} is not an integer")
    return merged


def _nest_flat_synthesis_kwargs(merged: dict, name: str) -> dict:
    """NVlabs' stylegan3 repository trains ``--cfg=stylegan2`` with ``training/networks_stylegan2.py``,
    whose Generator takes the synthesis options flat (``**synthesis_kwargs``) and whose SynthesisBlock
    clamps at 256 by default (stylegan2-ada-pytorch nests them and defaults to no clamp). Nest them as
    stylegan2-ada does; the network computes the same."""
    flat = {
        k: v
        for k, v in merged.items()
        if k in SYNTHESIS_OPTIONS.keys() | IGNORED_OPTIONS | FIXED_OPTIONS.keys()
    }
    if not flat:
        return merged
    if "synthesis_kwargs" in merged:
        raise ModelLoadError(f"{name}: synthesis options both nested and flat ({sorted(flat)})")
    rest = {k: v for k, v in merged.items() if k not in flat}
    return rest | {"synthesis_kwargs": {"conv_clamp": 256, **flat}}


def _plain(value: Any) -> Any:
    """``value`` if it is a plain number, string or list of them (as a tuple), else None."""
    if isinstance(value, list | tuple) and all(isinstance(v, PLAIN) for v in value):
        return tuple(value)
    return value if isinstance(value, PLAIN) else None


def _options(kwargs: dict, key: str, known: dict[str, Any], name: str) -> dict:
    options = _field(kwargs, key, dict, name)
    for option, value in options.items():
        if option in FIXED_OPTIONS and _plain(value) != FIXED_OPTIONS[option]:
            raise ModelLoadError(f"{name}: unsupported {option}={value!r} (only {FIXED_OPTIONS[option]!r})")
        if option in known and not isinstance(value, known[option]):
            raise ModelLoadError(f"{name}: generator option {option}={value!r} has the wrong type")
        if option not in known.keys() | IGNORED_OPTIONS | FIXED_OPTIONS.keys():
            raise ModelLoadError(f"{name}: unsupported generator option {option}={value!r}")
    return options


def _config(kwargs: dict, name: str) -> StyleGAN2Config:
    if kwargs["c_dim"] < 0:
        raise ModelLoadError(f"{name}: c_dim={kwargs['c_dim']} is negative")
    if kwargs["img_channels"] != 3:
        raise ModelLoadError(
            f"{name}: only RGB generators are supported (img_channels={kwargs['img_channels']})"
        )
    mapping = _options(kwargs, "mapping_kwargs", MAPPING_OPTIONS, name)
    synthesis = _options(kwargs, "synthesis_kwargs", SYNTHESIS_OPTIONS, name)
    if mapping.get("layer_features") not in (None, kwargs["w_dim"]):
        raise ModelLoadError(f"{name}: mapping layer_features={mapping['layer_features']} differs from w_dim")
    # Defaults are those of the official MappingNetwork and SynthesisNetwork signatures.
    return StyleGAN2Config(
        z_dim=kwargs["z_dim"],
        w_dim=kwargs["w_dim"],
        img_resolution=kwargs["img_resolution"],
        img_channels=3,
        mapping_layers=mapping.get("num_layers", 8),
        mapping_lr_multiplier=mapping.get("lr_multiplier", 0.01),
        channel_base=synthesis.get("channel_base", 32768),
        channel_max=synthesis.get("channel_max", 512),
        conv_clamp=synthesis.get("conv_clamp"),
        c_dim=kwargs["c_dim"],
        embed_features=mapping.get("embed_features"),
    )


def _flatten(record: PersistentRecord, prefix: str, out: dict, name: str, depth: int = 0) -> dict:
    """Official names to tensors, as ``state_dict()`` would list them for the pickled module."""
    if depth > MAX_MODULE_DEPTH:
        raise ModelLoadError(f"{name}: the network's modules nest too deep")
    state = record.state
    transient = _field(state, "_non_persistent_buffers_set", (set, frozenset), name)
    for group in ("_parameters", "_buffers"):
        for key, ref in _field(state, group, dict, name).items():
            if ref is None or key in transient:
                continue
            if not isinstance(ref, _TensorRef) or not isinstance(key, str):
                raise ModelLoadError(f"{name}: {prefix}{key} is not a tensor")
            out[prefix + key] = ref.tensor
    for key, child in _field(state, "_modules", dict, name).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord) or not isinstance(key, str):
            raise ModelLoadError(f"{name}: submodule {prefix}{key} is not a StyleGAN2-ADA network")
        _flatten(child, f"{prefix}{key}.", out, name, depth + 1)
    return out


def _our_names(flat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, tensor in flat.items():
        head, _, rest = key.partition(".")
        renamed[f"{OUR_SUBMODULES.get(head, head)}.{rest}"] = tensor.float().contiguous()
    return renamed


def _instantiate(cfg: StyleGAN2Config, weights: dict[str, torch.Tensor], name: str) -> StyleGAN2Generator:
    try:
        # On the meta device nothing is allocated until the file's own tensors are assigned, so a
        # pickle cannot make us allocate a huge net its weights do not back.
        with torch.device("meta"):
            G = StyleGAN2Generator(cfg)
        G.load_state_dict(weights, strict=True, assign=True)
    except (RuntimeError, ValueError, TypeError, OverflowError) as e:
        raise ModelLoadError(f"{name}: the weights do not match the generator's init arguments: {e}") from e
    return G


def load_stylegan2_pkl(
    path: str | Path, *, device: str | torch.device = "cpu", key: str = "G_ema"
) -> Generator:
    """Load the generator of an official StyleGAN2-ADA (PyTorch) or StyleGAN3 network pickle, running
    none of its code.

    The pickle is read through an allowlist (persistent network records, tensors, plain containers,
    numpy number scalars); anything else, such as the embedded module source, is never executed.
    The result renders ``[N, 3, H, W]`` images in [-1, 1] and its ``mean_w`` is the pickle's ``w_avg``.

    Args:
        path: a ``.pkl`` written by NVlabs' ``stylegan2-ada-pytorch`` (a dict with ``G``, ``D``,
            ``G_ema``, ``augment_pipe`` and ``training_set_kwargs``).
        device: where to put the generator.
        key: which network of the pickle to load; ``G_ema`` is the one meant for inference.

    Returns:
        A :class:`StyleGAN2Generator` or :class:`StyleGAN3Generator` in eval mode with ``requires_grad`` off.

    Raises:
        ModelLoadError: missing, truncated or non-pickle file; a global outside the allowlist;
            a conditional, non-'skip' or otherwise unsupported generator; weights that do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    record = _network_record(_unpickle(path), key, path.name)
    arch = _check_layout(record, path.name)
    _warn_unofficial_source(record, path.name)
    weights = _our_names(_flatten(record, "", {}, path.name))
    if arch == "stylegan3":
        cfg3 = _sg3_config(record, path.name)
        G = _instantiate_sg3(cfg3, _with_w_avg(weights, cfg3.w_dim), path.name)
        return _finish(G, path, key, "StyleGAN3", has_w_avg="mapping_net.w_avg" in weights, device=device)
    cfg = _config(_init_kwargs(record, path.name), path.name)
    has_w_avg = "mapping_net.w_avg" in weights
    G = _instantiate(cfg, _with_w_avg(weights, cfg.w_dim), path.name)
    return _finish(G, path, key, "StyleGAN2", has_w_avg=has_w_avg, device=device)


def _with_w_avg(weights: dict[str, torch.Tensor], w_dim: int) -> dict[str, torch.Tensor]:
    # Nets trained with w_avg_beta=None do not track the mean w; it is sampled later instead.
    return weights if "mapping_net.w_avg" in weights else {**weights, "mapping_net.w_avg": torch.zeros(w_dim)}


def _finish(G: Generator, path: Path, key: str, arch: str, *, has_w_avg: bool, device) -> Generator:
    G = G.to(device).eval().requires_grad_(False)
    if has_w_avg:
        G.set_mean_w(G.mapping_net.w_avg.clone())
    log.info("loaded %s[%r]: %s %d px, %d ws", path.name, key, arch, G.resolution, G.num_ws)
    return G
