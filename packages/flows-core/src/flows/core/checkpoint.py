"""Save a preset flow to one file and load it back, never running code from the file.

A checkpoint is a :func:`torch.save` file holding plain data only: a format tag and version,
a SHA-256 digest, and the payload (itself a :func:`torch.save` byte string) with the preset's
registered name, the keyword arguments that rebuild it (``flow.arguments``), its weights, the
caller's ``extra`` metadata and the versions of the packages that wrote it. Both layers are read
with ``torch.load(..., weights_only=True)``, which refuses anything but tensors and plain
containers, so a hostile file cannot execute code; the digest catches a truncated or altered
file; the flow is rebuilt from the plugin registry, so a checkpoint of a preset provided by a
package that is not installed says which package to install.

The digest proves integrity, not trust: anyone can write a file with a valid one. So before
building anything :func:`load` checks that the file is plausible. The weights it stores (their
storage, which views cannot inflate) bound every size: an integer argument (or an integral float,
or an integer tensor, in lists, tuples and dicts too) may be at most
``max(stored elements, 4096)``. The flow is then built under a guard that bounds, from the
shapes of its inputs, how much memory each operation will allocate, and stops the build before
it would allocate more than ``8 * stored bytes + 16 MiB`` in all, or run more than
``64 * stored tensors + 4096`` operations. Weights holding NaN are refused. Messages never quote
file text unsanitized: file-derived strings appear as the ``repr`` of a cleaned, shortened string.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import io
import math
import os
import re
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from flows.core.files import atomic_file
from flows.core.plugins import PresetSpec, Provided, RegistryError, list_presets, preset_spec

__all__ = ["FORMAT", "FORMAT_VERSION", "Checkpoint", "CheckpointError", "load", "save"]

#: The tag every checkpoint carries, so other torch files are recognized as such.
FORMAT = "flows-checkpoint"
#: The newest format version this code writes and reads.
FORMAT_VERSION = 1

_PACKAGES = ("flows-core", "flows-nn", "flows-splines", "flows-ode", "flows-cli", "torch")

#: The smallest bound on a stored size or count, so that tiny flows load.
_FLOOR = 4096
#: A build may allocate this many times the bytes the file stores, plus ``_SLACK_BYTES``
#: (building the presets allocates at most about three times their weights, masks included).
_BYTES_PER_STORED = 8
_SLACK_BYTES = 16 * 2**20
#: A build may run this many operations per stored tensor, plus ``_FLOOR`` (about twenty).
_OPS_PER_TENSOR = 64


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read: the message says why, in one line."""


@dataclasses.dataclass
class Checkpoint:
    """A loaded checkpoint; unpacks as ``flow, extra = load(path)``.

    Arguments:
        flow: The rebuilt flow, holding the saved weights.
        extra: The metadata given to :func:`save`.
        preset: The registered name of the flow's preset.
        arguments: The keyword arguments that rebuilt the flow.
        versions: The package versions that wrote the file.
        format_version: The checkpoint format version of the file.
    """

    flow: nn.Module
    extra: dict[str, Any]
    preset: str
    arguments: dict[str, Any]
    versions: dict[str, str]
    format_version: int

    def __iter__(self) -> Iterator[Any]:
        return iter((self.flow, self.extra))


def _check_plain(value: Any, where: str) -> None:
    """Refuse anything :func:`torch.load` with ``weights_only=True`` could not read back."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise CheckpointError(
                    f"{where} has key {key!r} of type {type(key).__name__}; "
                    "a checkpoint holds only str or int keys"
                )
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise CheckpointError(
        f"{where} is {value!r} (a {type(value).__name__}), which a checkpoint cannot hold: "
        "only None, bool, int, float, str, tensors, and lists, tuples and dicts of them"
    )


def _preset_name(flow: nn.Module) -> str:
    """The registered name whose constructor is ``type(flow)``."""
    cls = type(flow)
    path = f"{cls.__module__}:{cls.__qualname__}"
    presets = list_presets()
    for provided in presets:
        if provided.spec.constructor == path:
            return provided.spec.name

    # Constructor paths may name a re-export. Those ending in the class's own name are loaded
    # first: loading every preset imports every plugin (flows-ode brings scipy, about a second).
    def unlikely(provided: Provided[PresetSpec]) -> bool:
        return provided.spec.constructor.rpartition(":")[2] != cls.__qualname__

    for provided in sorted(presets, key=unlikely):
        try:
            if provided.spec.load() is cls:
                return provided.spec.name
        except Exception:  # a broken plugin cannot be the one we want
            continue
    raise CheckpointError(
        f"flow is a {cls.__qualname__} ({cls.__module__}), which is not a registered preset; "
        "register it with a PresetSpec to save it"
    )


def _versions() -> dict[str, str]:
    found = {}
    for package in _PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _to_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save(
    flow: nn.Module, path: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None
) -> None:
    """Write ``flow`` (a registered preset) and ``extra`` metadata to the file ``path``.

    The file is written whole or not at all (:func:`flows.core.files.atomic_file`): ``path``
    is the old file or the complete new one, never a part, keeps the permissions of the file
    it replaces, and an interrupted save leaves no temporary file.

    Arguments:
        flow: A preset instance (MAF, NSF, ...) carrying ``flow.arguments``.
        path: The file to write; its folder must exist.
        extra: Plain metadata stored beside the flow (data statistics, column names, ...):
            None, bool, int, float, str, tensors, and lists, tuples and dicts of them.

    Raises:
        CheckpointError: The flow is not a registered preset, has no ``arguments``, or an
            argument or ``extra`` entry is not plain data.
        FileNotFoundError: The folder of ``path`` does not exist.
        NotARegularFileError: ``path`` is a symbolic link, a folder or another file that is
            not a regular one (an ``OSError``).

    Example:
        >>> import tempfile, os, torch
        >>> from flows.core import MAF, load, save
        >>> flow = MAF(features=2, transforms=1)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "flow.pt")
        ...     save(flow, path, extra={"columns": ["x", "y"]})
        ...     again, extra = load(path)
        >>> extra
        {'columns': ['x', 'y']}
        >>> x = torch.randn(3, 2)
        >>> torch.allclose(again().log_prob(x), flow().log_prob(x))
        True
    """
    arguments = getattr(flow, "arguments", None)
    if not isinstance(arguments, Mapping):
        raise CheckpointError(
            f"flow of type {type(flow).__qualname__} has no 'arguments' dict recording how to "
            "rebuild it; only presets that set self.arguments can be saved"
        )
    for key, value in arguments.items():
        _check_plain(value, f"argument {key!r}")
    extra = dict(extra or {})
    _check_plain(extra, "extra")

    payload = {
        "preset": _preset_name(flow),
        "arguments": dict(arguments),
        "state_dict": {k: v.detach().cpu() for k, v in flow.state_dict().items()},
        "extra": extra,
        "versions": _versions(),
    }
    inner = _to_bytes(payload)
    outer = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "sha256": hashlib.sha256(inner).hexdigest(),
        "payload": inner,
    }

    with atomic_file(path) as file:
        file.write(_to_bytes(outer))


_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]|\x9b[0-?]*[ -/]*[@-~]")


def _clean(text: str, limit: int | None = None) -> str:
    """``text`` on one line, without terminal escapes or other control characters."""
    text = _ESCAPES.sub("", text)
    text = "".join(c if c.isprintable() else " " for c in text)
    text = " ".join(text.split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _quote(value: Any) -> str:
    """A file-derived name or key as it may appear in a message: cleaned, short, quoted."""
    if isinstance(value, str):
        return repr(_clean(value, limit=80))
    if isinstance(value, (bool, int, float)) or value is None:
        return _number(value) if isinstance(value, int) else repr(value)
    return f"<{type(value).__name__}>"


def _number(value: int | float) -> str:
    """``value`` for a message, even an integer too long for ``str``."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of about 10^{int(value.bit_length() * 0.30103)}"
    return repr(value)


def _error(message: str) -> CheckpointError:
    # The last line of defence: whatever went into the message, it leaves on one clean line.
    return CheckpointError(_clean(message))


def _torch_reason(error: Exception) -> str:
    """Why torch.load failed, without torch's advice to load with ``weights_only=False``."""
    text = str(error)
    if "weights only load failed" in text.lower() or "weightsunpickler" in text.lower():
        found = re.search(r"GLOBAL\s+(\S+)", text)
        if found is not None:
            return f"it refers to the Python object {_quote(found.group(1))}"
        return "it holds more than tensors and plain data"
    lines = text.strip().splitlines()
    sentences = re.split(r"(?<=\.)\s+", lines[0] if lines else "")
    kept = [s for s in sentences if "weights_only" not in s and "trust" not in s.lower()]
    reason = _clean(" ".join(kept[:1]), limit=160)
    return reason if re.search("[A-Za-z]", reason) else "it is not a torch file"


def _read(source: Any, name: str) -> Any:
    try:
        if isinstance(source, Path) and not zipfile.is_zipfile(source):
            # torch.save writes a zip archive; torch's errors for other bytes say nothing useful
            raise ValueError("it is not a whole torch file")
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:
        raise _error(
            f"{name} is not a readable flows checkpoint (corrupt, truncated, or holding more "
            f"than plain data): {_torch_reason(error)}"
        ) from None


def _unpack(
    payload: Any, name: str
) -> tuple[str, dict[str, Any], dict[str, Tensor], dict[str, Any], dict[str, str]]:
    """The parts of a payload, each of the type it must have."""
    try:
        preset = payload["preset"]
        arguments = payload["arguments"]
        state = payload["state_dict"]
        extra = payload.get("extra", {})
        versions = payload.get("versions", {})
    except (KeyError, TypeError, AttributeError) as error:
        raise _error(f"{name} is missing a part of the checkpoint: {_quote(str(error))}") from None
    if not isinstance(extra, Mapping) or not isinstance(versions, Mapping):
        raise _error(f"{name} has 'extra' or 'versions' that are not dicts")
    if not isinstance(preset, str) or not preset or len(preset) > 100 or _clean(preset) != preset:
        shown = _quote(preset) if isinstance(preset, str) else f"a {type(preset).__name__}"
        raise _error(f"{name} has an invalid preset name {shown}")
    if not isinstance(arguments, Mapping) or not all(isinstance(k, str) for k in arguments):
        raise _error(f"{name} has arguments that are not a dict with str keys")
    if not isinstance(state, Mapping):
        raise _error(f"{name} has weights that are not a dict of tensors")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise _error(
                f"{name} has weights entry {_quote(key)} that is not a tensor named by a str"
            )
    return preset, dict(arguments), dict(state), dict(extra), dict(versions)


def _stored_elements(state: Mapping[str, Tensor]) -> tuple[int, int]:
    """The elements and bytes the weights really store: their distinct storages, which views
    (an expanded stride-0 tensor, say) cannot inflate."""
    storages: dict[tuple[int, int], tuple[int, int]] = {}
    for tensor in state.values():
        storage = tensor.untyped_storage()
        nbytes = storage.nbytes()
        key = (storage.data_ptr(), nbytes)
        storages[key] = (nbytes // max(tensor.element_size(), 1), nbytes)
    elements = sum(e for e, _ in storages.values())
    return elements, sum(b for _, b in storages.values())


def _check_sizes(value: Any, where: str, bound: int, stored: int, name: str) -> None:
    """Refuse an integer (integral float, integer tensor) in ``value`` larger than ``bound``."""

    def refuse(shown: str) -> CheckpointError:
        return _error(
            f"{name} has argument {where} = {shown}, implausible for the {stored} weights it "
            f"stores (a size or count there is at most {bound}); the file was crafted or altered"
        )

    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        if abs(value) > bound:
            raise refuse(_number(value))
    elif isinstance(value, Tensor):
        if value.numel() > bound:
            raise refuse(f"a tensor of {value.numel()} elements")
        if value.numel() > 0 and not (value.is_floating_point() or value.is_complex()):
            largest = int(value.detach().abs().max()) if value.dtype != torch.bool else 1
            if largest > bound:
                raise refuse(f"a tensor holding {largest}")
    elif isinstance(value, (list, tuple)):
        if len(value) > bound:
            raise refuse(f"a list of {len(value)} items")
        for i, item in enumerate(value):
            _check_sizes(item, f"{where}[{i}]", bound, stored, name)
    elif isinstance(value, Mapping):
        if len(value) > bound:
            raise refuse(f"a dict of {len(value)} items")
        for key, item in value.items():
            _check_sizes(key, f"{where} key", bound, stored, name)
            _check_sizes(item, f"{where}[{_quote(key)}]", bound, stored, name)


class _TooLarge(Exception):
    """A guarded build went past its budget."""


def _leaves(values: Any) -> list[Any]:
    """The leaves of an operation's arguments or outputs, which nest lists at most once."""
    leaves: list[Any] = []
    for value in values:
        if isinstance(value, (list, tuple)):
            leaves.extend(value)
        else:
            leaves.append(value)
    return leaves


def _nbytes(outputs: Any) -> int:
    leaves = _leaves(outputs if isinstance(outputs, (list, tuple)) else (outputs,))
    return sum(t.numel() * t.element_size() for t in leaves if isinstance(t, Tensor))


#: Whether an operation returns new memory, by operation.
_ALLOCATES: dict[Any, bool] = {}


class _BuildGuard(TorchDispatchMode):
    """Stops a build that would allocate more than ``max_bytes`` or run more than ``max_ops``.

    Before an operation that allocates runs, :func:`_predicted_bytes` bounds its output from
    the shapes of its inputs; the operation runs only if that fits the budget, and what it
    really allocated is counted after it ran. Once tripped, every later operation fails too, so
    a constructor that catches the error cannot go on building.
    """

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Otherwise torch wraps __torch_dispatch__ to keep torch.compile out of it, which imports
        # torch._dynamo on the first operation: a second more for every load. No load is
        # compiled.
        return False

    def __init__(self, max_bytes: int, max_ops: int) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.max_ops = max_ops
        self.used = 0
        self.ops = 0
        self.tripped = False

    def _trip(self) -> _TooLarge:
        self.tripped = True
        return _TooLarge()

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        self.ops += 1
        if self.tripped or self.ops > self.max_ops:
            raise self._trip()
        allocates = _ALLOCATES.get(func)
        if allocates is None:  # views and in-place operations return their input's memory
            allocates = not func.is_view and not any(r.alias_info for r in func._schema.returns)
            _ALLOCATES[func] = allocates
        if allocates and self.used + _predicted_bytes(func, args, kwargs) > self.max_bytes:
            raise self._trip()
        outputs = func(*args, **kwargs)
        if allocates:
            self.used += _nbytes(outputs)
            if self.used > self.max_bytes:
                raise self._trip()
        return outputs


_MATRIX_PRODUCTS = ("mm", "addmm", "bmm", "baddbmm", "mv", "addmv", "outer", "ger")


def _predicted_bytes(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """An upper bound on the bytes ``func`` allocates, from the shapes of its arguments alone.

    The largest of: the broadcast of its tensors' shapes (element-wise operations, a column
    compared with a row), the product of each list of sizes it is given (factories such as
    ``empty`` or ``zeros``), a count it is given (``randperm``, ``arange``), its tensors laid
    end to end (``cat``), the output of a matrix product, and a tensor times its repeats
    (``repeat``); at 8 bytes an element. Running the operation on the ``meta`` device would be
    exact, but its first use imports most of ``torch._dynamo``: a second more for every load.
    """
    leaves = _leaves((*args, *kwargs.values()))
    shapes = [tuple(leaf.shape) for leaf in leaves if isinstance(leaf, Tensor)]
    rank = max((len(shape) for shape in shapes), default=0)
    aligned = [(1,) * (rank - len(shape)) + shape for shape in shapes]
    elements = max(
        sum(math.prod(shape) for shape in shapes),
        math.prod(max(sizes) for sizes in zip(*aligned, strict=True)) if aligned else 0,
    )
    name = func.__name__.split(".")[0]
    for value in (*args, *kwargs.values()):
        if isinstance(value, (list, tuple)) and value and all(type(v) is int for v in value):
            elements = max(elements, math.prod(value))
        elif type(value) is int and name in ("randperm", "arange"):
            elements = max(elements, abs(value))
    if name in _MATRIX_PRODUCTS and len(shapes) >= 2:
        left, right = shapes[-2], shapes[-1]
        elements = max(elements, math.prod(left[:-1]) * math.prod(right[-1:]))
        if name in ("outer", "ger"):
            elements = max(elements, math.prod(left) * math.prod(right))
    if name == "repeat" and shapes and len(args) > 1:
        elements = max(elements, math.prod(shapes[0]) * math.prod(args[1]))
    return 8 * elements


def _build(
    constructor: Callable[..., nn.Module], arguments: dict[str, Any], guard: _BuildGuard
) -> nn.Module:
    with guard:
        return constructor(**arguments)


def _compare(built: Mapping[str, Tensor], stored: Mapping[str, Tensor], where: str) -> None:
    """Refuse stored weights whose keys or shapes are not those of the flow built."""
    for key, tensor in built.items():
        if key not in stored:
            raise _error(f"{where} lacks the weights {_quote(key)} that the flow has")
        if tuple(stored[key].shape) != tuple(tensor.shape):
            raise _error(
                f"{where} has weights {_quote(key)} of shape {tuple(stored[key].shape)} where "
                f"the flow has shape {tuple(tensor.shape)}"
            )
    for key in stored:
        if key not in built:
            raise _error(f"{where} has weights {_quote(key)} that the flow does not have")


def load(
    path: str | os.PathLike[str], *, map_location: str | torch.device | None = None
) -> Checkpoint:
    """Read a checkpoint written by :func:`save` and rebuild its flow.

    Nothing in the file is executed: both layers are read with ``weights_only=True``.

    Arguments:
        path: The checkpoint file.
        map_location: Where to put the weights (default CPU).

    Returns:
        A :class:`Checkpoint`, which unpacks as ``flow, extra``.

    Raises:
        CheckpointError: The file is not a flows checkpoint, is truncated or altered, comes
            from a newer format version, needs a preset that is not installed, or is not
            plausible: an argument larger than its weights allow, weights whose keys or shapes
            are not those of the flow its arguments build (the first such key is named), or
            weights holding NaN.
        FileNotFoundError: There is no such file.
    """
    path = Path(path)
    name = repr(str(path))
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file {name}")
    outer = _read(path, name)
    if not isinstance(outer, dict) or outer.get("format") != FORMAT:
        raise CheckpointError(f"{name} is a torch file but not a flows checkpoint")
    version = outer.get("version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{name} has an invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{name} has checkpoint format {version}, newer than this flows-core reads "
            f"(up to {FORMAT_VERSION}); upgrade flows-core"
        )
    inner = outer.get("payload")
    if not isinstance(inner, bytes) or hashlib.sha256(inner).hexdigest() != outer.get("sha256"):
        raise CheckpointError(f"{name} is damaged: its contents do not match their checksum")
    preset, arguments, state, extra, versions = _unpack(_read(io.BytesIO(inner), name), name)

    # The stored weights bound every size before anything is built (see the module's notes).
    elements, nbytes = _stored_elements(state)
    bound = max(elements, _FLOOR)
    for key, value in arguments.items():
        _check_sizes(value, _quote(key), bound, elements, name)

    try:
        constructor = preset_spec(preset).spec.load()
    except RegistryError as error:
        raise _error(f"{name} needs flow {preset!r}, which is not available: {error}") from None
    flow = _rebuild(constructor, arguments, state, nbytes, name, preset)
    if map_location is not None:
        flow = flow.to(map_location)
    return Checkpoint(flow, extra, preset, arguments, versions, version)


def _rebuild(
    constructor: Callable[..., nn.Module],
    arguments: dict[str, Any],
    state: dict[str, Tensor],
    nbytes: int,
    name: str,
    preset: str,
) -> nn.Module:
    """The flow ``constructor(**arguments)`` holding ``state``, built within the budget that
    ``state``'s ``nbytes`` allow, its keys and shapes checked before it takes the weights."""
    where = f"{name} (flow {preset!r})"

    watch = _BuildGuard(
        _BYTES_PER_STORED * nbytes + _SLACK_BYTES, _OPS_PER_TENSOR * len(state) + _FLOOR
    )
    try:
        flow = _build(constructor, arguments, watch)
    except Exception as error:
        if watch.tripped:
            raise _error(
                f"{where} would build a flow far larger than the {nbytes} bytes of weights "
                "it stores; the file was crafted or altered"
            ) from None
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise _error(
            f"{name} cannot rebuild flow {preset!r} with the installed version: "
            f"{_clean(reason, limit=200) or type(error).__name__}"
        ) from None
    _compare(flow.state_dict(), state, where)
    for key, tensor in state.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and bool(tensor.isnan().any()):
            raise _error(f"{where} has weights {_quote(key)} holding NaN")
    # Built in the default dtype, the flow would cast a float64 flow's weights on loading.
    dtypes = {tensor.dtype for tensor in state.values() if tensor.is_floating_point()}
    if len(dtypes) == 1:
        flow = flow.to(dtype=dtypes.pop())
    try:
        flow.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise _error(
            f"{name} cannot rebuild flow {preset!r} with the installed version: "
            f"{_clean(reason, limit=200) or type(error).__name__}"
        ) from None
    return flow
