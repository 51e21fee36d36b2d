"""The AVX-512 kernel against F.linear / F.conv2d, its thread split, backend choice and fallbacks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from deepcompress.errors import ConfigError
from deepcompress.runtime import Backend, PackedCodebookCSR, SparseCodebookConv2d, SparseCodebookLinear, kernels
from deepcompress.runtime import available_backends, simd
from deepcompress.runtime.dispatch import resolve
from deepcompress.runtime.plan import Format, bind, layout_for
from test_runtime import random_layer, use_backend

needs_simd = pytest.mark.skipif(not kernels.HAVE_SIMD, reason="AVX-512 extension not built or CPU lacks AVX-512")


def linear_pair(layer, batch: int, rng: np.random.Generator, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    module = SparseCodebookLinear.from_compressed(layer, dense_batch=None, backend=backend)
    x = torch.from_numpy(rng.standard_normal((batch, layer.shape[1])).astype(np.float32))
    bias = None if layer.bias is None else torch.from_numpy(layer.bias)
    return module(x), F.linear(x, torch.from_numpy(layer.dense_weight()), bias)


def awkward_positions(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Empty rows, a full row, rows of 1-40 nonzeros (tails of every length mod 16), and random rows."""
    picks: list[np.ndarray] = []
    for r in range(rows):
        kind = r % 5
        if kind == 0:
            continue  # empty
        if kind == 1 and r == 1:
            cs = np.arange(cols)  # completely full
        elif kind in (1, 2):
            cs = np.sort(rng.choice(cols, size=1 + r % 40, replace=False))  # short: tail only, or 16/32 + tail
        else:
            cs = np.flatnonzero(rng.random(cols) < 0.2)
        picks.append(r * cols + cs)
    return np.concatenate(picks)


@needs_simd
@pytest.mark.parametrize("batch", [1, 3, 16, 64, 100])
@pytest.mark.parametrize("weight_bits", [2, 4, 5, 8])
def test_simd_matches_dense_on_awkward_rows(batch: int, weight_bits: int) -> None:
    """Column blocks > 1 (5000 columns; 256-wide blocks at 8 bits), every tail length, batch tiles of
    1-4 vectors with a masked last one (3, 100 = 64 + 36)."""
    rng = np.random.default_rng(batch * 10 + weight_bits)
    rows, cols = 45, 5000
    layer = random_layer((rows, cols), 0, rng, weight_bits=weight_bits, positions=awkward_positions(rows, cols, rng))
    assert (PackedCodebookCSR.from_layer(layer).n_blocks > 1) == (weight_bits >= 4)  # 2 bits: 16384-wide
    got, expected = linear_pair(layer, batch, rng, "simd")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)  # the full row sums 5000 products


@needs_simd
@pytest.mark.parametrize("batch", [1, 64])
def test_simd_all_zero_layer(batch: int) -> None:
    rng = np.random.default_rng(7)
    layer = random_layer((9, 70), 0.0, rng, positions=np.array([], dtype=np.int64))
    got, expected = linear_pair(layer, batch, rng, "simd")
    assert torch.equal(got, expected)  # only the bias is left



@needs_simd
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_simd_threaded_chunks_match(threads: int, eager_pool: None) -> None:
    """Products above the extension's PARALLEL_MIN_WORK run in nnz-balanced chunks on 1-3 threads:
    every batch-1 layout on the pool, the batch-64 product, and a direct convolution."""
    rng = np.random.default_rng(8)
    rows, cols = 300, 3000
    positions = np.flatnonzero(rng.random(rows * cols) < 0.2 * (np.arange(rows * cols) // cols % 3))
    layer = random_layer((rows, cols), 0, rng, positions=positions)  # uneven rows, every third one empty
    assert layer.nnz >= 2 * 65536
    simd.set_num_threads(threads)
    assert simd.num_threads() == threads
    dense, bias = torch.from_numpy(layer.dense_weight()), torch.from_numpy(layer.bias)
    packed = PackedCodebookCSR.from_layer(layer)
    x = rng.standard_normal(cols).astype(np.float32)
    for fmt in (Format.CSR, Format.SLICED, Format.DENSE):
        kernel = bind(fmt, layout_for(fmt, packed), layer.bias, parallel=True)
        for _ in range(3):  # repeated calls reuse the spinning workers
            out = np.full(rows, np.nan, dtype=np.float32)
            kernel(x.ctypes.data, out.ctypes.data)
            torch.testing.assert_close(torch.from_numpy(out), F.linear(torch.from_numpy(x), dense, bias),
                                       rtol=1e-4, atol=1e-4, msg=fmt.value)
    module = SparseCodebookLinear.from_compressed(layer, dense_batch=None, backend="simd")
    xb = torch.from_numpy(rng.standard_normal((64, cols)).astype(np.float32))
    torch.testing.assert_close(module(xb), F.linear(xb, dense, bias), rtol=1e-4, atol=1e-4)
    conv = random_layer((96, 32, 3, 3), 0.5, rng, kind="conv2d", weight_bits=8, name="conv")
    image = torch.from_numpy(rng.standard_normal((1, 32, 30, 30)).astype(np.float32))
    got = SparseCodebookConv2d.from_compressed(conv, padding=(1, 1), backend="simd")(image)
    expected = F.conv2d(image, torch.from_numpy(conv.dense_weight()), torch.from_numpy(conv.bias), padding=1)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@needs_simd
def test_thread_count_errors() -> None:
    with pytest.raises(ValueError, match="expected 1 to 256 threads, got 0"):
        simd.set_num_threads(0)


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_three_backends_agree(batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(11)
    layer = random_layer((64, 2500), 0.15, rng)
    x = torch.from_numpy(rng.standard_normal((batch, 2500)).astype(np.float32))
    outputs = {}
    for name in available_backends():
        with monkeypatch.context() as m:
            use_backend(name, m)
            module = SparseCodebookLinear.from_compressed(layer, dense_batch=None)
            assert resolve(module.backend, module.packed).value == name
            outputs[name] = module(x)
    expected = F.linear(x, torch.from_numpy(layer.dense_weight()), torch.from_numpy(layer.bias))
    assert len(outputs) >= 1
    for name, got in outputs.items():
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("batch", [1, 2])
def test_conv_runs_on_every_backend(batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Conv layers share the packed product: 8-bit codebooks (256-column blocks, table lookup)."""
    rng = np.random.default_rng(12)
    layer = random_layer((12, 40, 3, 3), 0.3, rng, kind="conv2d", weight_bits=8, name="conv")
    assert PackedCodebookCSR.from_layer(layer).n_blocks == 2
    x = torch.from_numpy(rng.standard_normal((batch, 40, 9, 7)).astype(np.float32))
    expected = F.conv2d(x, torch.from_numpy(layer.dense_weight()), torch.from_numpy(layer.bias), padding=1)
    for name in available_backends():
        with monkeypatch.context() as m:
            use_backend(name, m)
            module = SparseCodebookConv2d.from_compressed(layer, padding=(1, 1), backend=name)
            torch.testing.assert_close(module(x), expected, rtol=1e-4, atol=1e-4, msg=name)


def test_backend_requests_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(13)
    narrow = PackedCodebookCSR.from_layer(random_layer((4, 50), 0.5, rng))
    wide = PackedCodebookCSR.from_layer(random_layer((4, 50), 0.5, rng, weight_bits=10))
    with pytest.raises(ConfigError, match=r"backend: expected one of \['auto', 'simd', 'numba', 'torch'\], got 'avx'"):
        resolve("avx", narrow)
    assert resolve("torch", narrow) is Backend.TORCH
    monkeypatch.setattr(kernels, "HAVE_SIMD", True)
    monkeypatch.setattr(kernels, "HAVE_NUMBA", True)
    assert resolve("auto", wide) is Backend.NUMBA  # 32-bit words run on numba
    with pytest.raises(ConfigError, match=r"backend 'simd' expected 16-bit words .* got uint32 words"):
        resolve("simd", wide)
    monkeypatch.setattr(kernels, "HAVE_SIMD", False)
    with pytest.raises(ConfigError, match="backend 'simd': the AVX-512 extension is not available"):
        resolve("simd", narrow)
    monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
    assert resolve("auto", narrow) is Backend.TORCH and available_backends() == ["torch"]
    with pytest.raises(ConfigError, match=r"backend 'numba': numba is not installed"):
        resolve("numba", narrow)


def test_loader_without_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simd.importlib.util, "find_spec", lambda name: None)
    assert simd._load() is None


def test_package_runs_when_extension_is_missing(tmp_path) -> None:
    """A fresh interpreter that cannot find the extension (as after a build without a C compiler)
    still loads and runs a sparse model, on numba."""
    script = textwrap.dedent(
        """
        import importlib.util
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name.endswith("._simd") else real(name, *a)
        import numpy as np, torch
        from deepcompress.runtime import HAVE_SIMD, SparseCodebookLinear, available_backends
        from deepcompress.compressed import CompressedLayer
        rng = np.random.default_rng(0)
        pos = np.flatnonzero(rng.random(40 * 90) < 0.2)
        layer = CompressedLayer("fc", "linear", (40, 90), rng.standard_normal(32).astype(np.float32), pos,
                                rng.integers(0, 32, pos.size), None, 5, 5)
        x = torch.from_numpy(rng.standard_normal((3, 90)).astype(np.float32))
        got = SparseCodebookLinear.from_compressed(layer)(x)
        ref = x @ torch.from_numpy(layer.dense_weight()).T
        assert not HAVE_SIMD and "simd" not in available_backends()
        print(float((got - ref).abs().max()))
        """
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip().splitlines()[-1]) < 1e-4


def _child_product(conn, kernel_args) -> None:  # type: ignore[no-untyped-def]
    """Run in a forked child: the pool's workers did not survive the fork, so it must start new ones."""
    kernel, x, rows = kernel_args
    out = np.empty(rows, dtype=np.float32)
    kernel(x.ctypes.data, out.ctypes.data)
    conn.send(out)


@needs_simd
def test_pool_works_after_fork(eager_pool: None) -> None:
    import multiprocessing

    rng = np.random.default_rng(14)
    layer = random_layer((200, 3000), 0.3, rng)
    packed = PackedCodebookCSR.from_layer(layer)
    kernel = bind(Format.SLICED, layout_for(Format.SLICED, packed), layer.bias, parallel=True)
    x = rng.standard_normal(3000).astype(np.float32)
    simd.set_num_threads(2)
    expected = np.empty(200, dtype=np.float32)
    kernel(x.ctypes.data, expected.ctypes.data)  # the parent's workers are running now
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child_product, args=(child, (kernel, x, 200)))
    proc.start()
    assert parent.poll(60), "the forked child hung in the thread pool"
    np.testing.assert_array_equal(parent.recv(), expected)
    proc.join(10)


@needs_simd
def test_resizing_the_pool_right_after_starting_workers_does_not_hang(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """set_num_threads joins the workers: one created by the previous call but not yet running when the
    stop was published must still see it (it once took the stop generation as already seen and slept
    forever). Run in a child process so that a regression fails on the timeout instead of hanging."""
    script = textwrap.dedent(
        """
        import numpy as np, torch
        from deepcompress.compressed import CompressedLayer
        from deepcompress.runtime import SparseCodebookLinear, simd
        rng = np.random.default_rng(0)
        pos = np.flatnonzero(rng.random(256 * 512) < 0.5)
        layer = CompressedLayer("fc", "linear", (256, 512), rng.standard_normal(32).astype(np.float32), pos,
                                rng.integers(0, 32, pos.size), None, 5, 5)
        x = torch.from_numpy(rng.standard_normal((1, 512)).astype(np.float32))
        simd.LIB.set_wake_min_work(0)
        for _ in range(300):
            simd.set_num_threads(3)
            SparseCodebookLinear.from_compressed(layer, format="csr")(x)  # starts two workers
            simd.set_num_threads(2)  # stops them at once
        print("done")
        """
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("set_num_threads hung joining a worker that started after the stop was published")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "done"


@needs_simd
@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux thread affinity and at least two usable CPUs")
def test_woken_workers_are_kept_off_the_callers_cpu(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A call that wakes sleeping workers first takes the caller's current CPU out of their affinity, so
    Linux cannot place a woken worker on it (where it would preempt the caller); the caller moving to
    another CPU moves the exclusion with it. Child process: it pins its own main thread."""
    script = textwrap.dedent(
        """
        import os, time
        import numpy as np, torch
        from deepcompress.compressed import CompressedLayer
        from deepcompress.runtime import SparseCodebookLinear, simd

        def allowed(tid):
            with open(f"/proc/self/task/{tid}/status") as status:
                line = next(l for l in status if l.startswith("Cpus_allowed_list:"))
            cpus = set()
            for part in line.split(":")[1].strip().split(","):
                lo, _, hi = part.partition("-")
                cpus.update(range(int(lo), int(hi or lo) + 1))
            return cpus

        rng = np.random.default_rng(0)
        pos = np.flatnonzero(rng.random(256 * 512) < 0.5)
        layer = CompressedLayer("fc", "linear", (256, 512), rng.standard_normal(32).astype(np.float32), pos,
                                rng.integers(0, 32, pos.size), None, 5, 5)
        module = SparseCodebookLinear.from_compressed(layer, format="csr")
        x = torch.from_numpy(rng.standard_normal((1, 512)).astype(np.float32))
        expected = module(x)
        simd.set_num_threads(2)
        simd.LIB.set_wake_min_work(0)
        simd.LIB.set_spin_us(0)  # workers sleep as soon as a call ends
        module(x)  # starts the worker
        workers = [t for t in os.listdir("/proc/self/task")
                   if open(f"/proc/self/task/{t}/comm").read().strip() == "deepcompress"]
        assert len(workers) == 1, workers
        cpus = sorted(os.sched_getaffinity(0))
        for cpu in (cpus[0], cpus[1], cpus[0]):
            os.sched_setaffinity(0, {cpu})  # this (main) thread only
            time.sleep(0.02)  # the worker is asleep
            torch.testing.assert_close(module(x), expected)  # wakes it
            for tid in workers:
                got = allowed(tid)
                assert cpu not in got and got == set(cpus) - {cpu}, (cpu, got)
        print("done")
        """
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "done"
