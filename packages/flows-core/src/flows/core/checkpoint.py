"""Save a preset flow to one file and load it back, never running code from the file.

A checkpoint is a :func:`torch.save` file holding plain data only: a format tag and version,
a SHA-256 digest, and the payload (itself a :func:`torch.save` byte string) with the preset's
registered name, the keyword arguments that rebuild it (``flow.arguments``), its weights, the
caller's ``extra`` metadata and the versions of the packages that wrote it. Both layers are read
with ``torch.load(..., weights_only=True)``, which refuses anything but tensors and plain
containers, so a hostile file cannot execute code; the digest catches a truncated or altered
file; the flow is rebuilt from the plugin registry, so a checkpoint of a preset provided by a
package that is not installed says which package to install.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import io
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flows.core.plugins import RegistryError, list_presets, preset_spec

__all__ = ["FORMAT", "FORMAT_VERSION", "Checkpoint", "CheckpointError", "load", "save"]

#: The tag every checkpoint carries, so other torch files are recognized as such.
FORMAT = "flows-checkpoint"
#: The newest format version this code writes and reads.
FORMAT_VERSION = 1

_PACKAGES = ("flows-core", "flows-nn", "flows-splines", "flows-ode", "flows-cli", "torch")


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
    for provided in presets:  # constructor paths may name a re-export
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

    The file is written next to its destination and moved into place, so ``path`` is either
    the old file or the complete new one, never a partial one.

    Arguments:
        flow: A preset instance (MAF, NSF, ...) carrying ``flow.arguments``.
        path: The file to write; its folder must exist.
        extra: Plain metadata stored beside the flow (data statistics, column names, ...):
            None, bool, int, float, str, tensors, and lists, tuples and dicts of them.

    Raises:
        CheckpointError: The flow is not a registered preset, has no ``arguments``, or an
            argument or ``extra`` entry is not plain data.
        FileNotFoundError: The folder of ``path`` does not exist.

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

    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(
            f"cannot write {str(path)!r}: folder {str(folder)!r} does not exist"
        )
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(_to_bytes(outer))
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; be an ordinary file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _read(source: Any, name: str) -> Any:
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:
        first = str(error).strip().splitlines()
        reason = first[0] if first else type(error).__name__
        raise CheckpointError(
            f"{name} is not a readable flows checkpoint (corrupt, truncated, or holding more "
            f"than plain data): {reason}"
        ) from None


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
            from a newer format version, or needs a preset that is not installed.
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
    payload = _read(io.BytesIO(inner), name)
    try:
        preset = payload["preset"]
        arguments = dict(payload["arguments"])
        state = payload["state_dict"]
        extra = dict(payload.get("extra", {}))
        versions = dict(payload.get("versions", {}))
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{name} is missing a part of the checkpoint: {error}") from None

    try:
        constructor = preset_spec(preset).spec.load()
    except RegistryError as error:
        raise CheckpointError(
            f"{name} needs flow {preset!r}, which is not available: {error}"
        ) from None
    try:
        flow = constructor(**arguments)
        flow.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{name} cannot rebuild flow {preset!r} with the installed version: {reason}"
        ) from None
    if map_location is not None:
        flow = flow.to(map_location)
    return Checkpoint(flow, extra, preset, arguments, versions, version)
