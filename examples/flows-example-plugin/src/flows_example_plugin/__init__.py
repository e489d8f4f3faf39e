"""A minimal third-party flows plugin: the sinh-arcsinh univariate transform."""

__all__: list[str] = []
