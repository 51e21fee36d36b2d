/* AVX-512 kernels that multiply by a packed codebook CSR matrix (deepcompress.runtime.packed).
 *
 * Deep Compression (Han, Mao, Dally, ICLR 2016) stores each surviving weight as a few-bit index into a
 * per-layer codebook (section 3) with sparse column indices (section 2); section 6.1 notes that "BLAS
 * libraries don't support indirect look-up and relative indexing", and no sparse library takes a
 * codebook either, so this loop is hand-written. One packed uint16 word per nonzero holds
 * (column within a 2**col_bits column block) << code_bits | code.
 *
 * Batch 1 (dc_spmv), per row, 16 nonzeros per step: widen 16 words to 32 bits, split code and column,
 * look the 16 weights up in a codebook held in one or two zmm registers (vpermps / vpermt2ps: no
 * memory access for codebooks of <= 32 entries; a gather from the L1-resident table for 64-256),
 * gather the 16 inputs, and fuse multiply-add into one of two accumulators. The ragged tail of a
 * row's block runs masked.
 *
 * Batch n > 1 (dc_spmm): x is (cols, n) row-major. For a tile of up to 64 batch entries the output row
 * stays in up to four zmm registers; per nonzero the weight is broadcast and multiplied into the tile
 * of x's row at its column. Tiles are the outer loop so one tile of x serves every row of the range.
 *
 * Both take a row range [r0, r1) so the caller can split rows across its own thread pool (numba's),
 * and every argument is an integer (pointers as uintptr_t) so numba can call them through ctypes.
 * The AVX-512 code is compiled with target attributes, not -mavx512f, so the module builds with any
 * x86-64 compiler flags and dc_simd_supported() tells the caller whether the CPU can run it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DC_HAVE_AVX512 1
#include <immintrin.h>
#define DC_TARGET __attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) static inline
#define DC_TARGET_EXPORT __attribute__((target("avx512f,avx512bw,avx512vl"), visibility("default")))
#endif

/* 1 when this CPU (and its OS, which must save zmm state) runs AVX-512 F/BW/VL, else 0. */
__attribute__((visibility("default"))) int dc_simd_supported(void) {
#ifdef DC_HAVE_AVX512
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

#ifdef DC_HAVE_AVX512

/* How a 16-lane vector of codes becomes weights: kinds differ only in the codebook's size. */
enum { LOOKUP_16 = 0, LOOKUP_32 = 1, LOOKUP_TABLE = 2 };

DC_TARGET __m512 lookup(int kind, __m512i code, __m512 lo, __m512 hi, const float *codebook) {
    if (kind == LOOKUP_16) return _mm512_permutexvar_ps(code, lo);
    if (kind == LOOKUP_32) return _mm512_permutex2var_ps(lo, code, hi);
    return _mm512_i32gather_ps(code, codebook, 4);
}

/* Words are read PREFETCH_WORDS ahead (one 64-byte line per 32-word step): from a cold cache each step's
 * gathers wait on its words, so few lines are in flight. Measured once on an idle machine, one thread,
 * AlexNet fc8 at 25% (1M words), cold: 751 us without, 579 us with; 256 and 16384 words ahead were
 * no better than 1024-4096 (noisy). */
#ifndef PREFETCH_WORDS
#define PREFETCH_WORDS 1024
#endif

/* One row's dot product with x; `kind` is a compile-time constant in each caller below. The gathers
 * bound it (this loop runs at 0.7-0.9 of the speed of a loop of bare 16-lane gathers from L1), so neither four
 * accumulators nor visiting column blocks outside rows (to keep x in L1 for 25088-column layers)
 * measured faster. */
DC_TARGET float row_dot(int kind, const int32_t *p, const uint16_t *words, const float *codebook,
                        int64_t n_blocks, int code_bits, int col_bits, const float *x, __m512 lo,
                        __m512 hi) {
    const __m512i code_mask = _mm512_set1_epi32((1 << code_bits) - 1);
    const __m128i shift = _mm_cvtsi32_si128(code_bits);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (int64_t b = 0; b < n_blocks; b++) {
        const float *xb = x + (b << col_bits);
        int64_t k = p[b];
        const int64_t end = p[b + 1];
        for (; k + 32 <= end; k += 32) {
            _mm_prefetch((const char *)(words + k + PREFETCH_WORDS), _MM_HINT_T0);
            __m512i w0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(words + k)));
            __m512i w1 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(words + k + 16)));
            __m512 v0 = lookup(kind, _mm512_and_si512(w0, code_mask), lo, hi, codebook);
            __m512 v1 = lookup(kind, _mm512_and_si512(w1, code_mask), lo, hi, codebook);
            __m512 x0 = _mm512_i32gather_ps(_mm512_srl_epi32(w0, shift), xb, 4);
            __m512 x1 = _mm512_i32gather_ps(_mm512_srl_epi32(w1, shift), xb, 4);
            acc0 = _mm512_fmadd_ps(v0, x0, acc0);
            acc1 = _mm512_fmadd_ps(v1, x1, acc1);
        }
        if (k + 16 <= end) {
            __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(words + k)));
            __m512 v = lookup(kind, _mm512_and_si512(w, code_mask), lo, hi, codebook);
            acc0 = _mm512_fmadd_ps(v, _mm512_i32gather_ps(_mm512_srl_epi32(w, shift), xb, 4), acc0);
            k += 16;
        }
        if (k < end) { /* 1-15 left: masked-off lanes load word 0 -> code 0, column 0, gather 0.0 */
            __mmask16 m = (__mmask16)((1u << (end - k)) - 1u);
            __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, words + k));
            __m512 v = lookup(kind, _mm512_and_si512(w, code_mask), lo, hi, codebook);
            __m512 xv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, _mm512_srl_epi32(w, shift), xb, 4);
            acc1 = _mm512_fmadd_ps(v, xv, acc1);
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

DC_TARGET void spmv_rows(int kind, const int32_t *ptr, const uint16_t *words, const float *codebook,
                         int64_t n_blocks, int code_bits, int col_bits, const float *x, float *out,
                         int64_t r0, int64_t r1) {
    /* lo/hi hold codebook entries 0-15 and 16-31; the codebook is zero-padded to 2**code_bits entries */
    __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
    if (kind != LOOKUP_TABLE) lo = _mm512_maskz_loadu_ps((__mmask16)((1u << (1 << code_bits)) - 1u), codebook);
    if (kind == LOOKUP_32) hi = _mm512_loadu_ps(codebook + 16);
    for (int64_t r = r0; r < r1; r++)
        out[r] = row_dot(kind, ptr + r * n_blocks, words, codebook, n_blocks, code_bits, col_bits, x, lo, hi);
}

/* out[r] = sum over row r's words of codebook[code] * x[block * 2**col_bits + col], for r in [r0, r1).
 * Requires code_bits <= 8 (uint16 words) and int32 block pointers. */
DC_TARGET_EXPORT void dc_spmv(uintptr_t ptr, uintptr_t words, uintptr_t codebook, int64_t n_blocks,
                              int64_t code_bits, int64_t col_bits, uintptr_t x, uintptr_t out, int64_t r0,
                              int64_t r1) {
    const int32_t *p = (const int32_t *)ptr;
    const uint16_t *w = (const uint16_t *)words;
    const float *cb = (const float *)codebook, *xv = (const float *)x;
    float *o = (float *)out;
    if (code_bits <= 4)
        spmv_rows(LOOKUP_16, p, w, cb, n_blocks, (int)code_bits, (int)col_bits, xv, o, r0, r1);
    else if (code_bits == 5)
        spmv_rows(LOOKUP_32, p, w, cb, n_blocks, (int)code_bits, (int)col_bits, xv, o, r0, r1);
    else
        spmv_rows(LOOKUP_TABLE, p, w, cb, n_blocks, (int)code_bits, (int)col_bits, xv, o, r0, r1);
}

/* out[0:width] (+)= row block `b` times a tile of `nv` (1-4, a constant in each caller) 16-wide vectors of
 * batch entries; `last` masks the final vector when the tile is not a multiple of 16. Two sets of
 * accumulators take alternate nonzeros, so consecutive FMAs into one register do not wait on each other. */
DC_TARGET void block_tile(int nv, const uint16_t *words, int64_t k, int64_t end, const float *codebook,
                          int code_bits, const float *xb, int64_t n, __mmask16 last, int accumulate,
                          float *out) {
    const uint32_t code_mask = (1u << code_bits) - 1u;
    __m512 a[4], c[4];
    for (int i = 0; i < nv; i++) {
        const __mmask16 m = i == nv - 1 ? last : (__mmask16)0xFFFF;
        a[i] = accumulate ? _mm512_maskz_loadu_ps(m, out + 16 * i) : _mm512_setzero_ps();
        c[i] = _mm512_setzero_ps();
    }
    for (; k + 2 <= end; k += 2) {
        const uint32_t w0 = words[k], w1 = words[k + 1];
        const __m512 v0 = _mm512_set1_ps(codebook[w0 & code_mask]);
        const __m512 v1 = _mm512_set1_ps(codebook[w1 & code_mask]);
        const float *x0 = xb + (int64_t)(w0 >> code_bits) * n, *x1 = xb + (int64_t)(w1 >> code_bits) * n;
        for (int i = 0; i < nv; i++) {
            const __mmask16 m = i == nv - 1 ? last : (__mmask16)0xFFFF;
            a[i] = _mm512_fmadd_ps(v0, _mm512_maskz_loadu_ps(m, x0 + 16 * i), a[i]);
            c[i] = _mm512_fmadd_ps(v1, _mm512_maskz_loadu_ps(m, x1 + 16 * i), c[i]);
        }
    }
    if (k < end) {
        const uint32_t w = words[k];
        const __m512 v = _mm512_set1_ps(codebook[w & code_mask]);
        const float *xr = xb + (int64_t)(w >> code_bits) * n;
        for (int i = 0; i < nv; i++) {
            const __mmask16 m = i == nv - 1 ? last : (__mmask16)0xFFFF;
            a[i] = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(m, xr + 16 * i), a[i]);
        }
    }
    for (int i = 0; i < nv; i++)
        _mm512_mask_storeu_ps(out + 16 * i, i == nv - 1 ? last : (__mmask16)0xFFFF, _mm512_add_ps(a[i], c[i]));
}

/* Column blocks outside rows: one block of x (2**col_bits rows of the tile, 512 KB for 2048 x 64) stays
 * in L2 while every row of the range reads it, instead of the whole x (2.3 MB for 9216 x 64) per row.
 * (Tried and dropped: prefetching x rows ahead, and narrower column sub-blocks that fit L1 with a
 * cursor per row; both measured slower on the paper's fc6-fc8 shapes.) */
DC_TARGET void tile_rows(int nv, const int32_t *ptr, const uint16_t *words, const float *codebook,
                         int64_t n_blocks, int code_bits, int col_bits, const float *x, int64_t n,
                         __mmask16 last, float *out, int64_t r0, int64_t r1) {
    for (int64_t b = 0; b < n_blocks; b++) {
        const float *xb = x + (b << col_bits) * n;
        for (int64_t r = r0; r < r1; r++) {
            const int32_t *p = ptr + r * n_blocks + b;
            block_tile(nv, words, p[0], p[1], codebook, code_bits, xb, n, last, b > 0, out + r * n);
        }
    }
}

/* out[r, :] = sum over row r's words of codebook[code] * x[col, :] for x (cols, n) and out (rows, n),
 * both row-major float32, r in [r0, r1). Same requirements as dc_spmv. */
DC_TARGET_EXPORT void dc_spmm(uintptr_t ptr, uintptr_t words, uintptr_t codebook, int64_t n_blocks,
                              int64_t code_bits, int64_t col_bits, uintptr_t x, int64_t n, uintptr_t out,
                              int64_t r0, int64_t r1) {
    const int32_t *p = (const int32_t *)ptr;
    const uint16_t *w = (const uint16_t *)words;
    const float *cb = (const float *)codebook, *xv = (const float *)x;
    float *o = (float *)out;
    const int cbits = (int)code_bits, lbits = (int)col_bits;
    for (int64_t j0 = 0; j0 < n; j0 += 64) {
        const int64_t width = n - j0 < 64 ? n - j0 : 64;
        const int nv = (int)((width + 15) / 16);
        const int rem = (int)(width - 16 * (nv - 1));
        const __mmask16 last = (__mmask16)(rem == 16 ? 0xFFFFu : (1u << rem) - 1u);
        switch (nv) { /* one unrolled copy per tile width */
        case 4: tile_rows(4, p, w, cb, n_blocks, cbits, lbits, xv + j0, n, last, o + j0, r0, r1); break;
        case 3: tile_rows(3, p, w, cb, n_blocks, cbits, lbits, xv + j0, n, last, o + j0, r0, r1); break;
        case 2: tile_rows(2, p, w, cb, n_blocks, cbits, lbits, xv + j0, n, last, o + j0, r0, r1); break;
        default: tile_rows(1, p, w, cb, n_blocks, cbits, lbits, xv + j0, n, last, o + j0, r0, r1); break;
        }
    }
}

#endif /* DC_HAVE_AVX512 */

/* A module object only so setuptools can build and name this file as an extension; Python code loads
 * the functions above with ctypes from the module's file (deepcompress.runtime.simd). */
static struct PyModuleDef simd_module = {
    PyModuleDef_HEAD_INIT, .m_name = "_simd", .m_doc = NULL, .m_size = -1, .m_methods = NULL};

PyMODINIT_FUNC PyInit__simd(void) { return PyModule_Create(&simd_module); }
