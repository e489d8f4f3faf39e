r"""The export contract: a flow's exported log-density and samples equal its own.

:func:`check_exported_flow` writes a flow's ``log_prob`` or ``sample`` (see
:mod:`flows.core.export`) to a file, loads it back (onnxruntime for ``.onnx``, torch for
``.pt2``) and compares it with the flow, on the flow's own device and dtype, for several batch
sizes:

* ``log_prob``: at points spread over and beyond the flow's bulk, and random contexts;
* ``sample``: the *same noise* as the flow's own sampler, drawn by it: with the random state
  reset, ``flow(c).sample()`` and ``flow(c).base.rsample()`` draw the same :math:`z`, so the
  exported model given that :math:`z` must return the flow's sample. A Gaussian mixture is
  compared with its components picked by an independent inverse CDF (``torch.searchsorted``).

The exported model computes in float32 on the CPU: its inputs are moved there, the flow's
outputs are not. The global random state is left as it was.

Example:
    >>> import tempfile, torch
    >>> from flows.core import MAF
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     check_exported_flow(MAF(2, transforms=1), "sample", f"{folder}/maf.pt2")
"""

from __future__ import annotations

__all__ = ["check_exported_flow", "perturbed"]

import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import MultivariateNormal

from flows.core.distributions import Mixture
from flows.core.export import export_function, export_program, load
from flows.core.export.formats import SUFFIXES, write


def perturbed(flow: nn.Module, scale: float = 0.3, seed: int = 1) -> nn.Module:
    """``flow`` with every parameter moved by seeded Gaussian noise of ``scale``, in place.

    Presets start near the identity, where an export that dropped a layer would still match;
    moved weights make every layer count. The global random state is not touched.

    Example:
        >>> from flows.core import MAF
        >>> flow = MAF(2, transforms=1)
        >>> before = [p.clone() for p in flow.parameters()]
        >>> moved = perturbed(flow)
        >>> moved is flow, all(not torch.equal(a, b) for a, b in zip(before, flow.parameters()))
        (True, True)
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in flow.parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.add_(scale * noise.to(parameter.device, parameter.dtype))
    return flow


def _format(path: str | os.PathLike[str]) -> str:
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    for name, expected in SUFFIXES.items():
        if suffix == expected:
            return name
    raise ValueError(f"path must end in .onnx or .pt2, got {os.fspath(path)!r}")


def _mixture_sample(mixture: Mixture, z: Tensor, u: Tensor) -> Tensor:
    """Component k where the weights' CDF first exceeds u, then mean + Cholesky factor @ z."""
    weights = torch.softmax(mixture.logits, dim=-1)
    cdf = weights.cumsum(dim=-1).expand(len(u), -1).contiguous()
    k = torch.searchsorted(cdf, u.unsqueeze(-1), right=True).clamp(max=cdf.shape[-1] - 1)
    base = mixture.base
    if isinstance(base, MultivariateNormal):
        factor = base.scale_tril
    else:
        factor = torch.diag_embed(base.stddev)
    loc = base.mean.expand(len(u), *base.mean.shape[-2:])
    factor = factor.expand(len(u), *factor.shape[-3:])
    rows = torch.arange(len(u), device=u.device)
    k = k.squeeze(-1)
    return loc[rows, k] + (factor[rows, k] @ z.unsqueeze(-1)).squeeze(-1)


def check_exported_flow(
    flow: nn.Module,
    what: str,
    path: str | os.PathLike[str],
    *,
    program: torch.export.ExportedProgram | None = None,
    batches: Sequence[int] = (1, 7, 1000),
    tolerance: float = 1e-4,
    seed: int = 0,
) -> None:
    r"""Assert that ``flow``'s exported ``what`` equals the flow's, for each batch size.

    Arguments:
        flow: A preset (or lazy distribution) recording its ``features`` and ``context``.
        what: ``"log_prob"`` or ``"sample"``.
        path: The file to write: ``.onnx`` (needs the ``export`` extra) or ``.pt2``.
        program: The flow's exported program, if made already (one per flow and ``what``
            serves every format).
        batches: The batch sizes to compare at.
        tolerance: The largest difference allowed, absolute and relative.
        seed: The seed of the inputs and of the noise.

    Raises:
        AssertionError: The outputs differ, naming the format, batch size and difference.
    """
    format = _format(path)
    function = export_function(flow, what)
    if program is None:
        program = export_program(function)
    write(program, path, format, inputs=function.inputs, outputs=function.outputs, metadata={})
    model = load(path, format)
    reference = next(iter(flow.parameters()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.get_default_dtype()
    for batch in batches:
        generator = torch.Generator().manual_seed(seed + batch)
        c = None
        if function.context:
            c = torch.randn(batch, function.context, generator=generator).to(
                device=device, dtype=dtype
            )
        with torch.no_grad():
            distribution = flow(c)
            shape: tuple[int, ...] = () if c is not None else (batch,)
            if what == "log_prob":
                x = 2 * torch.randn(batch, function.features, generator=generator).to(
                    device=device, dtype=dtype
                )
                inputs: tuple[Tensor, ...] = (x,)
                expected = distribution.log_prob(x)
            elif isinstance(distribution, Mixture):
                z = torch.randn(batch, function.features, generator=generator).to(
                    device=device, dtype=dtype
                )
                u = torch.rand(batch, generator=generator).to(device=device, dtype=dtype)
                inputs = (z, u)
                expected = _mixture_sample(distribution, z, u)
            else:
                # The flow's own draw, then the same draw of noise: the global random state
                # is restored afterwards.
                devices = [device] if device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(seed + batch)
                    expected = distribution.sample(shape)
                    torch.manual_seed(seed + batch)
                    inputs = (distribution.base.rsample(shape),)
        if c is not None:
            inputs = (*inputs, c)
        actual = model(*(t.detach().cpu().float() for t in inputs))
        expected = expected.detach().cpu().double()
        if actual.shape != expected.shape:
            raise AssertionError(
                f"{format} {what} at batch {batch}: shape {tuple(actual.shape)}, the flow's "
                f"{tuple(expected.shape)}"
            )
        try:
            torch.testing.assert_close(
                actual.double(), expected, rtol=tolerance, atol=tolerance, equal_nan=False
            )
        except AssertionError as error:
            raise AssertionError(
                f"{format} {what} of {type(flow).__name__} at batch {batch} differs from the "
                f"flow's: {error}"
            ) from None
