"""Only the optional C accelerator lives here; every piece of metadata stays in pyproject.toml.

``optional=True``: where the extension cannot be compiled (no C compiler, no Python headers), the install still
succeeds and slidetiles uses its pure-Python TFRecord scanner (``slidetiles.io.fastscan.available()`` is False).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "slidetiles.io._fastscan",
            ["lib/slidetiles/io/_fastscan.c"],
            optional=True,
            extra_compile_args=["-O3"],
        )
    ]
)
