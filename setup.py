"""Builds the optional AVX-512 kernels (src/deepcompress/runtime/_simd.c); all metadata is in pyproject.toml.

``optional=True``: where there is no C compiler or the build fails, the package installs without the
extension and runs on its numba (or torch) kernels.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "deepcompress.runtime._simd",
            sources=["src/deepcompress/runtime/_simd.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
