from __future__ import annotations

import platform

import pytest

from deepcompress.malloc import pin_mmap_threshold


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_pinning_the_mmap_threshold_succeeds_on_glibc() -> None:
    assert pin_mmap_threshold() is True
