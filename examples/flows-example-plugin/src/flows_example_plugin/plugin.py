"""Hook module of the example plugin: declares what it provides, imports no torch."""

from flows.core.plugins import TransformSpec, hookimpl


def _shapes() -> list[tuple[int, ...]]:
    return [(), ()]  # a shift and a log-tail-weight per feature


@hookimpl
def flows_register_transforms() -> list[TransformSpec]:
    return [
        TransformSpec(
            name="sinh-arcsinh",
            constructor="flows_example_plugin.transform:SinhArcsinhTransform",
            shapes=_shapes,
            summary="Sinh-arcsinh map y = sinh(b asinh(x) - a): skew and tail weight",
        )
    ]
