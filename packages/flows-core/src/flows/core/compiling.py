r"""Compiled and mixed-precision paths: a fit's loss and a flow's sampling through
:func:`torch.compile`, with one fallback to eager where compiling fails.

:func:`flows.core.fit` takes ``compile=`` and ``autocast=`` and builds its loss with
:class:`Objective`; :func:`compile_sampler` compiles a flow's sampling, the stepwise
autoregressive inverse included. Importing this module does not import the compiler: only a
compiled call does.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "AUTOCAST_DTYPES",
    "COMPILE_MODES",
    "Objective",
    "compile_options",
    "compile_sampler",
    "compile_unavailable",
    "warn_eager",
]

# A batch's loss: loss(flow, x, c).
Loss = Callable[[nn.Module, Tensor, "Tensor | None"], Tensor]

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)


def compile_options(compile: Any) -> dict[str, Any] | None:
    """The keyword arguments of :func:`torch.compile` that ``compile`` asks for (``None``:
    eager).

    Raises:
        ValueError: ``compile`` is not a bool, one of :data:`COMPILE_MODES` or a dict.
    """
    if compile is False or compile is None:
        return None
    if compile is True:
        return {}
    if isinstance(compile, str) and compile in COMPILE_MODES:
        return {"mode": compile}
    if isinstance(compile, dict) and all(isinstance(key, str) for key in compile):
        return dict(compile)
    modes = ", ".join(repr(mode) for mode in COMPILE_MODES)
    raise ValueError(
        f"compile must be True, False, a mode ({modes}) or a dict of torch.compile "
        f"arguments, got {compile!r}"
    )


def compile_unavailable() -> str | None:
    """Why :func:`torch.compile` cannot run in this process, or ``None`` if it can."""
    import torch._dynamo  # only a compiled fit pays for importing the compiler

    if not torch._dynamo.is_dynamo_supported():
        return f"torch {torch.__version__} has no torch.compile for this Python"
    return None


class Objective:
    """A fit's loss ``loss(flow, x, c)``: eager, or through one :func:`torch.compile` wrapper.

    The compiled wrapper is made once and serves every training step and every evaluation
    (torch.compile keeps one graph per grad mode; shapes are dynamic, so the last, shorter
    batch and the evaluation chunks reuse them). Where compiling fails (no working C++
    compiler, an unsupported Python), :meth:`fall_back` warns once and the fit goes on eagerly,
    with the same results.

    Arguments:
        loss: The loss of a batch, ``loss(flow, x, c)``.
        options: The keyword arguments of :func:`torch.compile`, or ``None`` for eager.
        autocast: A dtype to run the forward pass under :func:`torch.autocast`, or ``None``.
        device_type: The flow's device type (``"cpu"``, ``"cuda"``), for autocast.
    """

    def __init__(
        self,
        loss: Loss,
        options: dict[str, Any] | None,
        autocast: torch.dtype | None,
        device_type: str,
    ) -> None:
        self.loss = loss
        self.compiled: Loss | None = None
        self.compile_seconds: float | None = None
        self.autocast = autocast
        self.device_type = device_type
        if options is None:
            return
        reason = compile_unavailable()
        if reason is not None:
            self.fall_back(reason)
            return
        self.compiled = torch.compile(loss, **{"dynamic": True, **options})
        self.compile_seconds = 0.0

    def fall_back(self, reason: str | BaseException) -> None:
        """Warn that the fit goes on eagerly, and do so from now on."""
        warn_eager(reason, "fitting")
        self.compiled = None
        self.compile_seconds = None

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """The exceptions that mean the compiler failed (none for an eager fit)."""
        if self.compiled is None:
            return ()
        import torch._dynamo.exc

        return (torch._dynamo.exc.TorchDynamoException,)

    def __call__(self, flow: nn.Module, x: Tensor, c: Tensor | None) -> Tensor:
        context = (
            torch.autocast(self.device_type, dtype=self.autocast)
            if self.autocast is not None
            else contextlib.nullcontext()
        )
        with context:
            if self.compiled is not None:
                try:
                    with _guarding_hooks():
                        return self.compiled(flow, x, c)
                except self.errors as error:
                    self.fall_back(error)
            return self.loss(flow, x, c)


def _guarding_hooks() -> contextlib.AbstractContextManager[Any]:
    """Compile with guards on modules' hooks, which torch leaves out by default.

    A preset's ``support=`` restricts its distributions by a forward hook, and one compiled
    function serves every flow of a class: without these guards, a graph traced for a flow
    without a support is replayed for one with it, and the support is silently dropped.
    """
    import torch._dynamo

    return torch._dynamo.config.patch(skip_nnmodule_hook_guards=False)


def warn_eager(reason: str | BaseException, what: str) -> None:
    if isinstance(reason, BaseException):
        lines = str(reason).strip().splitlines() or [""]
        reason = f"{type(reason).__name__}: {lines[0]}"[:300]
    warnings.warn(f"torch.compile is unavailable ({reason}); {what} eagerly", UserWarning, 3)


def compile_sampler(
    flow: nn.Module, compile: bool | str | dict[str, Any] = True
) -> Callable[..., Tensor]:
    r"""Sampling from a lazy flow through :func:`torch.compile`: ``sample(c=None, shape=())``.

    The returned function draws ``flow().sample(shape)`` (or ``flow(c).sample(shape)``) without
    gradients, compiled once: the whole call, the autoregressive inverse's passes included,
    is one graph (``"reduce-overhead"`` replays it as a CUDA graph on a GPU). Shapes are
    dynamic, so another number of samples or of context rows reuses the graph. Where compiling
    fails, a warning says so and it samples eagerly.

    Arguments:
        flow: A lazy distribution.
        compile: As :func:`~flows.core.fit`'s: ``True``, a mode of :data:`COMPILE_MODES` or a
            dict of :func:`torch.compile` arguments (``False``: eager).

    Returns:
        ``sample(c=None, shape=())``: samples of shape ``shape + (*, D)``.

    Example:
        >>> import torch
        >>> from flows.core import MAF
        >>> flow = MAF(3, 2, transforms=2)
        >>> sample = compile_sampler(flow, {"backend": "aot_eager"})
        >>> sample(torch.randn(5, 2)).shape, sample(torch.randn(7, 2), (4,)).shape
        (torch.Size([5, 3]), torch.Size([4, 7, 3]))
    """
    options = compile_options(compile)

    def draw(c: Tensor | None, shape: tuple[int, ...]) -> Tensor:
        distribution = flow() if c is None else flow(c)
        return distribution.sample(shape)

    chosen: list[Callable[[Tensor | None, tuple[int, ...]], Tensor]] = [draw]
    # A CUDA graph's outputs live in its memory pool, which the next replay overwrites.
    graphs = options is not None and options.get("mode") == "reduce-overhead"
    if options is not None:
        reason = compile_unavailable()
        if reason is None:
            chosen[0] = torch.compile(draw, **{"dynamic": True, **options})
        else:
            warn_eager(reason, "sampling")

    @torch.no_grad()
    def sample(c: Tensor | None = None, shape: tuple[int, ...] | torch.Size = ()) -> Tensor:
        shape = tuple(shape)
        if chosen[0] is draw:
            return draw(c, shape)
        import torch._dynamo.exc

        try:
            with _guarding_hooks():
                samples = chosen[0](c, shape)
            return samples.clone() if graphs else samples
        except torch._dynamo.exc.TorchDynamoException as error:
            warn_eager(error, "sampling")
            chosen[0] = draw
            return draw(c, shape)

    return sample
