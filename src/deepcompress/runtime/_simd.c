/* AVX-512 kernels that multiply by a compressed layer without decoding it, run on a thread pool that
 * this extension owns (deepcompress.runtime.simd is the Python side; formats.py / packed.py build the
 * layouts).
 *
 * Deep Compression (Han, Mao, Dally, ICLR 2016) stores each surviving weight as a few-bit index into a
 * per-layer codebook (section 3) with sparse column indices (section 2); section 6.1 notes that "BLAS
 * libraries don't support indirect look-up and relative indexing", and no sparse library takes a
 * codebook either, so these loops are hand-written. Three layouts, chosen per layer by measurement:
 *
 * csr     (packed.py) one uint16 word per nonzero = (column within a 2**col_bits block) << code_bits |
 *         code, rows in CSR order. Batch 1 gathers x (vgatherdps); batch n > 1 keeps a 64-wide tile of the
 *         output row in registers and broadcasts each weight over a row of x (also used for convolutions,
 *         with x the im2col matrix).
 * sliced  (formats.SlicedCodebook) groups of 16 rows x 64-column slabs; lane i of every 16-word vector
 *         belongs to row 16g + i, each word = (column in slab) << 5|6 | code, bit 15 marks a padding
 *         lane that decodes to 0.0. The slab of x sits in four zmm registers and is fetched with
 *         vpermt2ps, so there is no gather and no horizontal sum: 16 rows accumulate in one register.
 * dense   (formats.DenseCodes) every weight's code, one byte each or two per byte (4-bit), with a code
 *         that decodes to 0.0: for dense-ish layers it reads fewer bytes than any index format, and x
 *         is read contiguously.
 * int8    (formats.Int8Codes, opt-in) every weight's byte code looked up in an int8 codebook (vpermb),
 *         times x quantized to int8 per 64-input block at call time, multiplied with vpdpbusd: a
 *         lossy batch-1 mode whose error bound tests/test_runtime_int8.py derives. Needs AVX-512 VBMI
 *         and VNNI besides F/BW/VL (int8_supported()).
 *
 * Threads: a small persistent pool of pthreads (the calling thread takes part). Between the calls of
 * one forward pass the workers spin (for spin_us, default 200 us) and then sleep on a condition
 * variable, so an idle process costs nothing and a forward pass pays no wake-up per layer; sleeping
 * workers are woken only for large products (wake_min_work). Work is cut into chunks of about equal
 * nonzeros, claimed with one atomic compare-and-swap each.
 *
 * The AVX-512 code is compiled with target attributes, not -mavx512f, so the module builds with any
 * x86-64 compiler flags, and supported() tells the caller whether this CPU can run it.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE /* sched_getcpu, pthread_setaffinity_np */
#include <Python.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DC_HAVE_AVX512 1
#include <immintrin.h>
#define DC_TARGET __attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) static inline
#define DC_TARGET_FN __attribute__((target("avx512f,avx512bw,avx512vl"))) static
/* The int8 kernel's functions also use VBMI (vpermb, vpermi2b) and VNNI (vpdpbusd). */
#define DC_INT8_FEATURES "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni"
#define DC_INT8_TARGET __attribute__((target(DC_INT8_FEATURES), always_inline)) static inline
#define DC_INT8_TARGET_FN __attribute__((target(DC_INT8_FEATURES))) static
#define DC_PAUSE() _mm_pause()
#else
#define DC_PAUSE() ((void)0)
#endif

/* ------------------------------------------------------------------------------------------------ */
/* Thread pool                                                                                       */
/* ------------------------------------------------------------------------------------------------ */

typedef void (*chunk_fn)(const void *task, int64_t chunk, int64_t n_chunks);

#define MAX_WORKERS 255
#define POOL_THREAD_NAME "deepcompress"
/* `next` packs (generation & 0xFFFF) << 48 | n_chunks << 24 | next chunk, so a worker that wakes late
 * can never claim a chunk of a later call with the previous call's task. */
#define GEN_SHIFT 48
#define N_SHIFT 24
#define IDX_MASK ((1ull << 24) - 1)

static struct {
    pthread_mutex_t lock;      /* guards sleeping and (re)starting workers */
    pthread_cond_t wake;
    pthread_mutex_t dispatch;  /* one parallel call at a time; others run on their own thread */
    int threads;               /* wanted, including the caller (>= 1) */
    int started;               /* workers running */
    int stop;
    int64_t spin_ns;
    _Atomic uint64_t generation;
    _Atomic uint64_t next;
    _Atomic int64_t done;
    _Atomic int sleepers;
    chunk_fn fn;
    const void *task;
    pthread_t tid[MAX_WORKERS];
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, 1, 0, 0, 200000};

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Claim and run chunks of the call with generation `gen` until none are left. */
static void work(uint64_t gen) {
    for (;;) {
        uint64_t v = atomic_load_explicit(&pool.next, memory_order_acquire);
        if ((v >> GEN_SHIFT) != (gen & 0xFFFF)) return;
        uint64_t n = (v >> N_SHIFT) & IDX_MASK, idx = v & IDX_MASK;
        if (idx >= n) return;
        if (!atomic_compare_exchange_weak_explicit(&pool.next, &v, v + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        pool.fn(pool.task, (int64_t)idx, (int64_t)n);
        atomic_fetch_add_explicit(&pool.done, 1, memory_order_release);
    }
}

/* The generation current when each worker was created, read by the worker as its first "seen" one. Taken
 * by the creator, not by the new thread: a thread that starts running only after stop_workers() has
 * published its stop generation would otherwise take that one as already seen and sleep forever
 * while stop_workers() joins it (seen as a hang in set_num_threads on a loaded machine). */
static uint64_t start_generation[MAX_WORKERS];

static void *worker_main(void *arg) {
    uint64_t seen = *(const uint64_t *)arg;
#ifdef __linux__
    pthread_setname_np(pthread_self(), POOL_THREAD_NAME); /* shown by top -H, ps -L, /proc/PID/task/TID/comm */
#endif
    for (;;) {
        uint64_t g = atomic_load_explicit(&pool.generation, memory_order_acquire);
        if (g == seen) { /* spin for spin_ns, then sleep until the next call */
            int64_t deadline = now_ns() + pool.spin_ns;
            for (int i = 1; (g = atomic_load_explicit(&pool.generation, memory_order_acquire)) == seen; i++) {
                DC_PAUSE();
                if ((i & 255) == 0 && now_ns() > deadline) {
                    pthread_mutex_lock(&pool.lock);
                    atomic_fetch_add(&pool.sleepers, 1);
                    while ((g = atomic_load(&pool.generation)) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
                    atomic_fetch_sub(&pool.sleepers, 1);
                    pthread_mutex_unlock(&pool.lock);
                    break;
                }
            }
        }
        seen = g;
        if (pool.stop) return NULL;
        work(g);
    }
}

/* Before waking sleeping workers, keep them off the calling thread's CPU. Linux tends to place a thread
 * woken by another on the waker's CPU (wake-affine); a worker that lands there preempts the caller
 * instead of running beside it, and the call then takes longer than on one thread (measured on a
 * 2-core VM: AlexNet fc7 198 us on one thread, 417 us with a woken worker; 142 us once steered). The
 * workers may run on the CPUs their creator could (pool_cpus) except the caller's current one. */
#ifdef __linux__
static cpu_set_t pool_cpus;
#endif
static int steered_from = -1; /* the CPU the workers' affinity last excluded; -1: none */

static void steer_workers_off_this_cpu(void) {
#ifdef __linux__
    const int cpu = sched_getcpu();
    if (cpu < 0 || cpu == steered_from || !CPU_ISSET(cpu, &pool_cpus) || CPU_COUNT(&pool_cpus) < 2) return;
    cpu_set_t allowed = pool_cpus;
    CPU_CLR(cpu, &allowed);
    for (int i = 0; i < pool.started; i++) pthread_setaffinity_np(pool.tid[i], sizeof allowed, &allowed);
    steered_from = cpu;
#endif
}

static void publish(uint64_t gen) {
    if (atomic_load(&pool.sleepers) > 0 && !pool.stop) steer_workers_off_this_cpu();
    atomic_store(&pool.generation, gen);
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.lock);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.lock);
    }
}

static void stop_workers(void) {
    if (!pool.started) return;
    pool.stop = 1;
    publish(atomic_load(&pool.generation) + 1);
    for (int i = 0; i < pool.started; i++) pthread_join(pool.tid[i], NULL);
    pool.started = 0;
    pool.stop = 0;
}

static void start_workers(void) {
#ifdef __linux__
    if (pool.started == 0 && sched_getaffinity(0, sizeof pool_cpus, &pool_cpus) != 0) CPU_ZERO(&pool_cpus);
#endif
    steered_from = -1; /* a new worker has its creator's affinity */
    while (pool.started < pool.threads - 1) {
        start_generation[pool.started] = atomic_load(&pool.generation);
        if (pthread_create(&pool.tid[pool.started], NULL, worker_main, &start_generation[pool.started]) != 0) break;
        pool.started++;
    }
}

/* After fork() only the calling thread exists in the child: forget the parent's workers. */
static void after_fork_child(void) {
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_mutex_init(&pool.dispatch, NULL);
    pool.started = 0;
    pool.stop = 0;
    steered_from = -1;
    atomic_store(&pool.sleepers, 0);
}

/* Run fn(task, c, n_chunks) for c in [0, n_chunks) on the pool and the calling thread. */
static void parallel_for(chunk_fn fn, const void *task, int64_t n_chunks) {
    if (n_chunks <= 1 || pool.threads <= 1 || n_chunks > (int64_t)IDX_MASK ||
        pthread_mutex_trylock(&pool.dispatch) != 0) {
        for (int64_t c = 0; c < n_chunks; c++) fn(task, c, n_chunks);
        return;
    }
    if (pool.started < pool.threads - 1) start_workers();
    pool.fn = fn;
    pool.task = task;
    atomic_store(&pool.done, 0);
    uint64_t gen = atomic_load(&pool.generation) + 1;
    atomic_store_explicit(&pool.next, ((gen & 0xFFFF) << GEN_SHIFT) | ((uint64_t)n_chunks << N_SHIFT),
                          memory_order_release);
    publish(gen);
    work(gen);
    for (int i = 1; atomic_load_explicit(&pool.done, memory_order_acquire) < n_chunks; i++) {
        DC_PAUSE();
        if ((i & 255) == 0) sched_yield(); /* a worker was descheduled: give it the core */
    }
    pthread_mutex_unlock(&pool.dispatch);
}

/* Below this many multiply-adds a call runs on the calling thread alone: ~10 us of work, where a
 * parallel call pays ~1 us to hand chunks to spinning workers and ~50 us to wake sleeping ones. */
#define PARALLEL_MIN_WORK 65536
#define CHUNKS_PER_THREAD 4

/* Sleeping workers are woken only for products of at least this many multiply-adds (~1 ms on one
 * thread); smaller ones run on the calling thread. With warm caches a wake pays from ~2^20 (AlexNet fc8,
 * 1.4M, workers asleep: 69 us on two threads against 79 on one, once the worker is kept off the
 * caller's CPU: steer_workers_off_this_cpu). After a 64 MB cache flush, the cold-cache benchmark's
 * case, waking for less was slower on a 2-core VM (AlexNet fc8 160 against 129 us, VGG-16 fc7 195
 * against 137), the wake path itself being cold. On an oversubscribed machine a wake can cost
 * milliseconds (2 cores, load 11: AlexNet fc8 6.2 ms on two threads against 255 us on one), which is
 * why a layer measures both and may keep its product on one thread (runtime/plan.py). Workers that are
 * still spinning from the previous call of a forward pass take part at any size. */
static int64_t wake_min_work = 1 << 22;

static int64_t chunks_for(int64_t work_units, int64_t max_chunks) {
    if (work_units < PARALLEL_MIN_WORK || pool.threads <= 1) return 1;
    if (work_units < wake_min_work && atomic_load(&pool.sleepers) > 0) return 1;
    int64_t c = (int64_t)pool.threads * CHUNKS_PER_THREAD;
    return c < max_chunks ? c : (max_chunks > 0 ? max_chunks : 1);
}

/* The first index i in [0, n] with offsets[i * stride] >= target (offsets ascending). */
static int64_t lower_bound32(const int32_t *offsets, int64_t stride, int64_t n, int64_t target) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if ((int64_t)offsets[mid * stride] < target) lo = mid + 1; else hi = mid;
    }
    return lo;
}

static int64_t lower_bound64(const int64_t *offsets, int64_t n, int64_t target) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (offsets[mid] < target) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* 1 when this CPU (and its OS, which must save zmm state) runs AVX-512 F/BW/VL, else 0. */
static int simd_supported(void) {
#ifdef DC_HAVE_AVX512
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

/* 1 when this CPU also runs the int8 kernel (AVX-512 VBMI and VNNI), else 0. */
static int int8_supported(void) {
#ifdef DC_HAVE_AVX512
    return simd_supported() && __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

#ifdef DC_HAVE_AVX512

DC_TARGET __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}

/* ------------------------------------------------------------------------------------------------ */
/* csr: the packed codebook CSR of packed.py                                                         */
/* ------------------------------------------------------------------------------------------------ */

typedef struct {
    const int32_t *ptr;
    const uint16_t *words;
    const float *codebook;
    int64_t n_blocks, code_bits, col_bits, rows, nnz;
    const float *x;
    int64_t n; /* batch (columns of x and out) */
    float *out;
    const float *bias;
    int64_t row_chunks, tile_chunks;
} csr_task;

/* Cut a product over `tiles` 64-wide output tiles into chunks for parallel_for, `work` multiply-adds in
 * all: split batch tiles first (no shared rows), then rows when there are fewer tiles than chunks. Sets
 * t's tile_chunks and row_chunks; returns how many chunks that makes. */
static int64_t split_tiles(csr_task *t, int64_t tiles, int64_t work) {
    const int64_t chunks = chunks_for(work, t->rows * tiles);
    t->tile_chunks = tiles < chunks ? tiles : chunks;
    t->row_chunks = chunks / t->tile_chunks;
    if (t->row_chunks > t->rows) t->row_chunks = t->rows > 0 ? t->rows : 1;
    return t->row_chunks * t->tile_chunks;
}

enum { LOOKUP_16 = 0, LOOKUP_32 = 1, LOOKUP_TABLE = 2 };

DC_TARGET __m512 lookup(int kind, __m512i code, __m512 lo, __m512 hi, const float *codebook) {
    if (kind == LOOKUP_16) return _mm512_permutexvar_ps(code, lo);
    if (kind == LOOKUP_32) return _mm512_permutex2var_ps(lo, code, hi);
    return _mm512_i32gather_ps(code, codebook, 4);
}

/* Words are read PREFETCH_WORDS ahead: from a cold cache each step's gathers wait on its words. */
#define PREFETCH_WORDS 1024

/* One row's dot product with x; `kind` is a compile-time constant in each caller. The gathers bound it. */
DC_TARGET float row_dot(int kind, const int32_t *p, const uint16_t *words, const float *codebook,
                        int64_t n_blocks, int code_bits, int col_bits, const float *x, __m512 lo, __m512 hi) {
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
            __mmask16 m = tail_mask(end - k);
            __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, words + k));
            __m512 v = lookup(kind, _mm512_and_si512(w, code_mask), lo, hi, codebook);
            __m512 xv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, _mm512_srl_epi32(w, shift), xb, 4);
            acc1 = _mm512_fmadd_ps(v, xv, acc1);
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

DC_TARGET void csr_rows(int kind, const csr_task *t, int64_t r0, int64_t r1) {
    __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
    if (kind != LOOKUP_TABLE) lo = _mm512_maskz_loadu_ps((__mmask16)((1u << (1 << t->code_bits)) - 1u), t->codebook);
    if (kind == LOOKUP_32) hi = _mm512_loadu_ps(t->codebook + 16);
    for (int64_t r = r0; r < r1; r++) {
        float y = row_dot(kind, t->ptr + r * t->n_blocks, t->words, t->codebook, t->n_blocks, (int)t->code_bits,
                          (int)t->col_bits, t->x, lo, hi);
        t->out[r] = t->bias ? y + t->bias[r] : y;
    }
}

/* Rows of chunk c of n: about equal nonzeros each. */
static void csr_split(const csr_task *t, int64_t c, int64_t n, int64_t *r0, int64_t *r1) {
    *r0 = c == 0 ? 0 : lower_bound32(t->ptr, t->n_blocks, t->rows, t->nnz * c / n);
    *r1 = c + 1 >= n ? t->rows : lower_bound32(t->ptr, t->n_blocks, t->rows, t->nnz * (c + 1) / n);
}

DC_TARGET_FN void csr_spmv_chunk(const void *task, int64_t c, int64_t n) {
    const csr_task *t = (const csr_task *)task;
    int64_t r0, r1;
    csr_split(t, c, n, &r0, &r1);
    if (t->code_bits <= 4) csr_rows(LOOKUP_16, t, r0, r1);
    else if (t->code_bits == 5) csr_rows(LOOKUP_32, t, r0, r1);
    else csr_rows(LOOKUP_TABLE, t, r0, r1);
}

/* out[0:width] (+)= row block `b` times a tile of `nv` (1-4, a constant in each caller) 16-wide vectors of
 * batch entries; `last` masks the final vector. Two sets of accumulators take alternate nonzeros. */
DC_TARGET void block_tile(int nv, const uint16_t *words, int64_t k, int64_t end, const float *codebook,
                          int code_bits, const float *xb, int64_t n, __mmask16 last, int accumulate, float *out) {
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

/* Column blocks outside rows: one block of x stays in L2 while every row of the range reads it. */
DC_TARGET void tile_rows(int nv, const csr_task *t, const float *x, __mmask16 last, float *out, int64_t r0,
                         int64_t r1) {
    for (int64_t b = 0; b < t->n_blocks; b++) {
        const float *xb = x + (b << t->col_bits) * t->n;
        for (int64_t r = r0; r < r1; r++) {
            const int32_t *p = t->ptr + r * t->n_blocks + b;
            block_tile(nv, t->words, p[0], p[1], t->codebook, (int)t->code_bits, xb, t->n, last, b > 0,
                       out + r * t->n);
        }
    }
}

/* Chunk c covers a range of rows (equal nonzeros) times a range of 64-wide batch tiles. */
DC_TARGET_FN void csr_spmm_chunk(const void *task, int64_t c, int64_t n_chunks) {
    (void)n_chunks;
    const csr_task *t = (const csr_task *)task;
    int64_t r0, r1, tiles = (t->n + 63) / 64;
    csr_split(t, c / t->tile_chunks, t->row_chunks, &r0, &r1);
    int64_t tc = c % t->tile_chunks;
    int64_t t0 = tiles * tc / t->tile_chunks, t1 = tiles * (tc + 1) / t->tile_chunks;
    for (int64_t tile = t0; tile < t1; tile++) {
        const int64_t j0 = tile * 64, width = t->n - j0 < 64 ? t->n - j0 : 64;
        const int nv = (int)((width + 15) / 16);
        const __mmask16 last = tail_mask(width - 16 * (nv - 1));
        switch (nv) { /* one unrolled copy per tile width */
        case 4: tile_rows(4, t, t->x + j0, last, t->out + j0, r0, r1); break;
        case 3: tile_rows(3, t, t->x + j0, last, t->out + j0, r0, r1); break;
        case 2: tile_rows(2, t, t->x + j0, last, t->out + j0, r0, r1); break;
        default: tile_rows(1, t, t->x + j0, last, t->out + j0, r0, r1); break;
        }
        if (t->bias)
            for (int64_t r = r0; r < r1; r++) {
                const __m512 b = _mm512_set1_ps(t->bias[r]);
                float *o = t->out + r * t->n + j0;
                for (int64_t j = 0; j < width; j += 16) {
                    const __mmask16 m = tail_mask(width - j);
                    _mm512_mask_storeu_ps(o + j, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, o + j), b));
                }
            }
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* conv: stride-1 convolution at batch 1 from the packed CSR, im2col on the fly                       */
/* ------------------------------------------------------------------------------------------------ */

/* The input is copied once into a zero-padded (C, Hp, Wp) buffer. Output pixel (oy, ox) is computed at
 * flat position j = oy * Wp + ox of a (oh, Wp) grid: kernel column (ci, ky, kx) then reads the input at
 * xp + coloff[col] + j, so 64 consecutive j are one contiguous load per nonzero across output rows
 * (the Wp - ow extra columns per row are computed and dropped). No im2col matrix is materialised. */
typedef struct {
    csr_task csr;
    const float *xp;
    const int32_t *coloff;
    int64_t L, wp, oh, ow;
} conv_task;

DC_TARGET void conv_tile(int nv, const conv_task *t, int64_t j0, int64_t width, int64_t r0, int64_t r1) {
    const csr_task *c = &t->csr;
    const uint32_t code_mask = (1u << c->code_bits) - 1u;
    const __mmask16 last = tail_mask(width - 16 * (nv - 1));
    const float *base = t->xp + j0;
    float tmp[64];
    for (int64_t r = r0; r < r1; r++) {
        __m512 a[4], b[4];
        for (int i = 0; i < nv; i++) a[i] = b[i] = _mm512_setzero_ps();
        for (int64_t blk = 0; blk < c->n_blocks; blk++) {
            const int32_t *p = c->ptr + r * c->n_blocks + blk;
            const int32_t *off = t->coloff + (blk << c->col_bits);
            int64_t k = p[0];
            const int64_t end = p[1];
            for (; k + 2 <= end; k += 2) {
                const uint32_t w0 = c->words[k], w1 = c->words[k + 1];
                const __m512 v0 = _mm512_set1_ps(c->codebook[w0 & code_mask]);
                const __m512 v1 = _mm512_set1_ps(c->codebook[w1 & code_mask]);
                const float *x0 = base + off[w0 >> c->code_bits], *x1 = base + off[w1 >> c->code_bits];
                for (int i = 0; i < nv; i++) {
                    const __mmask16 m = i == nv - 1 ? last : (__mmask16)0xFFFF;
                    a[i] = _mm512_fmadd_ps(v0, _mm512_maskz_loadu_ps(m, x0 + 16 * i), a[i]);
                    b[i] = _mm512_fmadd_ps(v1, _mm512_maskz_loadu_ps(m, x1 + 16 * i), b[i]);
                }
            }
            if (k < end) {
                const uint32_t w = c->words[k];
                const __m512 v = _mm512_set1_ps(c->codebook[w & code_mask]);
                const float *xr = base + off[w >> c->code_bits];
                for (int i = 0; i < nv; i++) {
                    const __mmask16 m = i == nv - 1 ? last : (__mmask16)0xFFFF;
                    a[i] = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(m, xr + 16 * i), a[i]);
                }
            }
        }
        const __m512 bias = _mm512_set1_ps(c->bias ? c->bias[r] : 0.0f);
        for (int i = 0; i < nv; i++) _mm512_storeu_ps(tmp + 16 * i, _mm512_add_ps(_mm512_add_ps(a[i], b[i]), bias));
        float *o = c->out + r * t->oh * t->ow;
        int64_t oy = j0 / t->wp, ox = j0 % t->wp;
        for (int64_t jj = 0; jj < width; jj++) {
            if (ox < t->ow) o[oy * t->ow + ox] = tmp[jj];
            if (++ox == t->wp) { ox = 0; oy++; }
        }
    }
}

DC_TARGET_FN void conv_chunk(const void *task, int64_t ch, int64_t n_chunks) {
    (void)n_chunks;
    const conv_task *t = (const conv_task *)task;
    int64_t r0, r1, tiles = (t->L + 63) / 64;
    csr_split(&t->csr, ch / t->csr.tile_chunks, t->csr.row_chunks, &r0, &r1);
    const int64_t tc = ch % t->csr.tile_chunks;
    const int64_t t0 = tiles * tc / t->csr.tile_chunks, t1 = tiles * (tc + 1) / t->csr.tile_chunks;
    for (int64_t tile = t0; tile < t1; tile++) {
        const int64_t j0 = tile * 64, width = t->L - j0 < 64 ? t->L - j0 : 64;
        switch ((width + 15) / 16) {
        case 4: conv_tile(4, t, j0, width, r0, r1); break;
        case 3: conv_tile(3, t, j0, width, r0, r1); break;
        case 2: conv_tile(2, t, j0, width, r0, r1); break;
        default: conv_tile(1, t, j0, width, r0, r1); break;
        }
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* sliced: 16 rows x 63- or 31-column slabs, x in registers                                          */
/* ------------------------------------------------------------------------------------------------ */

typedef struct {
    const int64_t *gptr;   /* groups + 1 offsets, in 16-word vectors */
    const int64_t *cptr;   /* groups + 1 offsets into slabs / counts */
    const uint16_t *slabs; /* per stored cell: its slab (a group's cells in order of their counts) */
    const uint8_t *counts; /* per stored cell: its vectors */
    const uint16_t *words;
    const float *codebook; /* 64 floats, zero-padded */
    int64_t n_slabs, cols, rows, groups, wide, slab;
    const float *x;
    float *out;
    const float *bias;
} sliced_task;

/* A slab is 63 columns (x in four registers) or 31 (two): the lane past its last column holds 0.0,
 * and padding lanes point at it (column = slab width, code 0), so they add 0 with no mask to compute per
 * vector (measured: ~15% faster per vector than testing a padding bit and zeroing the codebook lookup).
 * The narrow slab fetches x with one vpermt2ps instead of two and a blend: fewer operations per
 * vector, more vectors (each cell covers half the columns); it pays on dense-ish layers (AlexNet fc8,
 * 25%: 67 -> 60 us warm) and costs on sparse ones, so a layer measures both (runtime/plan.py). */
#define WIDE_SLAB 63
#define NARROW_SLAB 31

/* acc + the 16 weights of one vector of words times their x from the slab registers. */
DC_TARGET __m512 sliced_step(int wide, int narrow, __m512 acc, __m512i w, __m512 c0, __m512 c1, __m512 c2,
                             __m512 c3, __m512 x0, __m512 x1, __m512 x2, __m512 x3) {
    __m512 v;
    __m512i col;
    if (wide) { /* 6-bit codes: 64 codebook entries in four registers */
        const __mmask16 upper = _mm512_test_epi32_mask(w, _mm512_set1_epi32(32));
        v = _mm512_mask_blend_ps(upper, _mm512_permutex2var_ps(c0, w, c1), _mm512_permutex2var_ps(c2, w, c3));
        col = _mm512_srli_epi32(w, 6);
    } else {
        v = _mm512_permutex2var_ps(c0, w, c1);
        col = _mm512_srli_epi32(w, 5);
    }
    if (narrow) return _mm512_fmadd_ps(v, _mm512_permutex2var_ps(x0, col, x1), acc);
    const __mmask16 right = _mm512_test_epi32_mask(col, _mm512_set1_epi32(32));
    const __m512 xv = _mm512_mask_blend_ps(right, _mm512_permutex2var_ps(x0, col, x1), _mm512_permutex2var_ps(x2, col, x3));
    return _mm512_fmadd_ps(v, xv, acc);
}

DC_TARGET void sliced_groups(int wide, int narrow, const sliced_task *t, int64_t g0, int64_t g1) {
    const __m512 c0 = _mm512_loadu_ps(t->codebook), c1 = _mm512_loadu_ps(t->codebook + 16);
    const __m512 c2 = _mm512_loadu_ps(t->codebook + 32), c3 = _mm512_loadu_ps(t->codebook + 48);
    const int64_t slab = narrow ? NARROW_SLAB : WIDE_SLAB;
    for (int64_t g = g0; g < g1; g++) {
        const uint16_t *w = t->words + t->gptr[g] * 16;
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
        for (int64_t i = t->cptr[g]; i < t->cptr[g + 1]; i++) {
            int64_t c = t->counts[i];
            const float *xs = t->x + t->slabs[i] * slab;
            const int64_t left = t->cols - t->slabs[i] * slab;
            __m512 x0, x1, x2 = _mm512_setzero_ps(), x3 = _mm512_setzero_ps();
            if (left >= slab) { /* the lane past the slab is the zero column */
                x0 = _mm512_loadu_ps(xs);
                if (narrow) {
                    x1 = _mm512_maskz_loadu_ps(0x7FFF, xs + 16);
                } else {
                    x1 = _mm512_loadu_ps(xs + 16); x2 = _mm512_loadu_ps(xs + 32);
                    x3 = _mm512_maskz_loadu_ps(0x7FFF, xs + 48);
                }
            } else { /* the last slab: never read past x (its zero lane is past `left` too) */
                x0 = _mm512_maskz_loadu_ps(tail_mask(left), xs);
                x1 = _mm512_maskz_loadu_ps(tail_mask(left - 16 > 0 ? left - 16 : 0), xs + 16);
                if (!narrow) {
                    x2 = _mm512_maskz_loadu_ps(tail_mask(left - 32 > 0 ? left - 32 : 0), xs + 32);
                    x3 = _mm512_maskz_loadu_ps(tail_mask(left - 48 > 0 ? left - 48 : 0), xs + 48);
                }
            }
            /* Four accumulators: at ~2 cycles per vector (31-column slabs) two FMA chains of 4-cycle latency
             * were the bound (AlexNet fc8 58.6 -> 54 us, VGG-16 fc8 56.4 -> 49, warm, one thread). */
            for (; c >= 4; c -= 4, w += 64) {
                _mm_prefetch((const char *)(w + 8192), _MM_HINT_T0);
                _mm_prefetch((const char *)(w + 8192 + 32), _MM_HINT_T0);
                acc0 = sliced_step(wide, narrow, acc0, _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)w)), c0, c1, c2, c3, x0, x1, x2, x3);
                acc1 = sliced_step(wide, narrow, acc1, _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + 16))), c0, c1, c2, c3, x0, x1, x2, x3);
                acc2 = sliced_step(wide, narrow, acc2, _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + 32))), c0, c1, c2, c3, x0, x1, x2, x3);
                acc3 = sliced_step(wide, narrow, acc3, _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + 48))), c0, c1, c2, c3, x0, x1, x2, x3);
            }
            for (; c >= 2; c -= 2, w += 32) {
                _mm_prefetch((const char *)(w + 8192), _MM_HINT_T0); /* 16 KB ahead: measured best of 2, 8, 16 KB on cold VGG-16 fc6 (Zen 4) */
                const __m512i w0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)w));
                const __m512i w1 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + 16)));
                acc0 = sliced_step(wide, narrow, acc0, w0, c0, c1, c2, c3, x0, x1, x2, x3);
                acc1 = sliced_step(wide, narrow, acc1, w1, c0, c1, c2, c3, x0, x1, x2, x3);
            }
            if (c) {
                const __m512i w0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)w));
                acc0 = sliced_step(wide, narrow, acc0, w0, c0, c1, c2, c3, x0, x1, x2, x3);
                w += 16;
            }
        }
        const __mmask16 m = tail_mask(t->rows - g * 16);
        __m512 y = _mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3));
        if (t->bias) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, t->bias + g * 16));
        _mm512_mask_storeu_ps(t->out + g * 16, m, y);
    }
}

DC_TARGET_FN void sliced_chunk(const void *task, int64_t c, int64_t n) {
    const sliced_task *t = (const sliced_task *)task;
    const int64_t total = t->gptr[t->groups];
    const int64_t g0 = c == 0 ? 0 : lower_bound64(t->gptr, t->groups, total * c / n);
    const int64_t g1 = c + 1 >= n ? t->groups : lower_bound64(t->gptr, t->groups, total * (c + 1) / n);
    const int narrow = t->slab == NARROW_SLAB;
    if (t->wide) {
        if (narrow) sliced_groups(1, 1, t, g0, g1); else sliced_groups(1, 0, t, g0, g1);
    } else {
        if (narrow) sliced_groups(0, 1, t, g0, g1); else sliced_groups(0, 0, t, g0, g1);
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* dense codes: one code per weight (8-bit, or 4-bit nibbles), one code decodes to 0.0               */
/* ------------------------------------------------------------------------------------------------ */

typedef struct {
    const uint8_t *codes;
    int64_t stride; /* bytes per row */
    int64_t nibble, table_size;
    const float *table; /* zero-padded to 64 entries (or table_size when larger) */
    int64_t cols, rows;
    const float *x;
    float *out;
    const float *bias;
} dense_task;

enum { DENSE_16 = 0, DENSE_32 = 1, DENSE_64 = 2, DENSE_GATHER = 3 };

DC_TARGET __m512 dense_lookup(int kind, __m512i code, __m512 t0, __m512 t1, __m512 t2, __m512 t3, const float *table) {
    if (kind == DENSE_16) return _mm512_permutexvar_ps(code, t0);
    if (kind == DENSE_32) return _mm512_permutex2var_ps(t0, code, t1);
    if (kind == DENSE_64)
        return _mm512_mask_blend_ps(_mm512_test_epi32_mask(code, _mm512_set1_epi32(32)),
                                    _mm512_permutex2var_ps(t0, code, t1), _mm512_permutex2var_ps(t2, code, t3));
    return _mm512_i32gather_ps(code, table, 4);
}

DC_TARGET void dense8_rows(int kind, const dense_task *t, int64_t r0, int64_t r1) {
    const __m512 t0 = _mm512_loadu_ps(t->table), t1 = _mm512_loadu_ps(t->table + 16);
    const __m512 t2 = _mm512_loadu_ps(t->table + 32), t3 = _mm512_loadu_ps(t->table + 48);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = t->codes + r * t->stride;
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        int64_t j = 0;
        for (; j + 32 <= t->cols; j += 32) {
            const __m512i k0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(row + j)));
            const __m512i k1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(row + j + 16)));
            acc0 = _mm512_fmadd_ps(dense_lookup(kind, k0, t0, t1, t2, t3, t->table), _mm512_loadu_ps(t->x + j), acc0);
            acc1 = _mm512_fmadd_ps(dense_lookup(kind, k1, t0, t1, t2, t3, t->table), _mm512_loadu_ps(t->x + j + 16), acc1);
        }
        for (; j < t->cols; j += 16) {
            const __mmask16 m = tail_mask(t->cols - j);
            const __m512i k0 = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, row + j));
            acc0 = _mm512_fmadd_ps(dense_lookup(kind, k0, t0, t1, t2, t3, t->table), _mm512_maskz_loadu_ps(m, t->x + j), acc0);
        }
        const float y = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
        t->out[r] = t->bias ? y + t->bias[r] : y;
    }
}

/* 4-bit codes: byte i of each 16-byte chunk holds weight 32k + i (low nibble) and 32k + 16 + i (high). */
DC_TARGET void dense4_rows(const dense_task *t, int64_t r0, int64_t r1) {
    const __m512 tbl = _mm512_loadu_ps(t->table);
    const __m512i low = _mm512_set1_epi32(15);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = t->codes + r * t->stride;
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        int64_t j = 0;
        for (; j + 32 <= t->cols; j += 32) {
            const __m512i k = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(row + j / 2)));
            acc0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_and_si512(k, low), tbl), _mm512_loadu_ps(t->x + j), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(k, 4), tbl), _mm512_loadu_ps(t->x + j + 16), acc1);
        }
        if (j < t->cols) { /* the row's codes are padded to a whole chunk; x is not */
            const __m512i k = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(row + j / 2)));
            const __mmask16 m0 = tail_mask(t->cols - j), m1 = tail_mask(t->cols - j > 16 ? t->cols - j - 16 : 0);
            acc0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_and_si512(k, low), tbl), _mm512_maskz_loadu_ps(m0, t->x + j), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(k, 4), tbl), _mm512_maskz_loadu_ps(m1, t->x + j + 16), acc1);
        }
        const float y = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
        t->out[r] = t->bias ? y + t->bias[r] : y;
    }
}

DC_TARGET_FN void dense_chunk(const void *task, int64_t c, int64_t n) {
    const dense_task *t = (const dense_task *)task;
    const int64_t r0 = t->rows * c / n, r1 = t->rows * (c + 1) / n;
    if (t->nibble) dense4_rows(t, r0, r1);
    else if (t->table_size <= 16) dense8_rows(DENSE_16, t, r0, r1);
    else if (t->table_size <= 32) dense8_rows(DENSE_32, t, r0, r1);
    else if (t->table_size <= 64) dense8_rows(DENSE_64, t, r0, r1);
    else dense8_rows(DENSE_GATHER, t, r0, r1);
}

/* ------------------------------------------------------------------------------------------------ */
/* int8: byte codes -> int8 weights (vpermb), x quantized per 64-input block, vpdpbusd               */
/* ------------------------------------------------------------------------------------------------ */

/* y[r] = w_scale * sum_b x_scale[b] * sum_{i in block b} q_w[r, i] * q_x[i] + bias[r], where q_w are
 * the int8 codebook values of the row's codes and q_x the input rounded to int8 with one scale per
 * 64-input block. vpdpbusd multiplies unsigned by signed bytes, so |q_w| is the unsigned operand and
 * q_x takes q_w's sign (negated where q_w < 0: both are in [-127, 127], so nothing overflows). A lane's
 * int32 sum of four products is at most 4 * 127 * 127 < 2^24: its float conversion is exact. */
typedef struct {
    const uint8_t *codes;
    int64_t stride; /* bytes per row: the columns padded to a multiple of 64 with the zero code */
    const int8_t *table; /* 256 int8 weights; the zero code's is 0 */
    int64_t table_size;
    float w_scale;
    int64_t rows;
    const int8_t *xq;   /* stride quantized inputs, 0 past the columns */
    const float *xs;    /* stride / 64 block scales */
    float *out;
    const float *bias;
} int8_task;

enum { INT8_64 = 0, INT8_128 = 1, INT8_256 = 2 };

/* The input's blocks of 64 rounded to int8 with scale max|x| / 127 (to nearest, ties to even). A block
 * of zeros gets scale 0; a block holding an inf or NaN gets scale NaN, so every output is NaN, as
 * the fp32 kernels' 0 * inf or x * NaN would make it. */
DC_INT8_TARGET_FN void quantize_blocks(const float *x, int64_t cols, int64_t n_blocks, int8_t *xq, float *xs) {
    for (int64_t b = 0; b < n_blocks; b++) {
        const int64_t left = cols - 64 * b;
        __m512 v[4];
        __m512 amax = _mm512_setzero_ps(), probe = _mm512_setzero_ps();
        for (int i = 0; i < 4; i++) {
            v[i] = _mm512_maskz_loadu_ps(tail_mask(left - 16 * i > 0 ? left - 16 * i : 0), x + 64 * b + 16 * i);
            amax = _mm512_max_ps(amax, _mm512_abs_ps(v[i]));
            probe = _mm512_add_ps(probe, _mm512_mul_ps(v[i], _mm512_setzero_ps())); /* NaN iff non-finite */
        }
        const float m = _mm512_reduce_max_ps(amax);
        const float inv = m > 0.0f && m <= 3.4028234663852886e38f ? 127.0f / m : 0.0f;
        xs[b] = m / 127.0f + _mm512_reduce_add_ps(probe);
        for (int i = 0; i < 4; i++) {
            const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(v[i], _mm512_set1_ps(inv)));
            _mm_storeu_si128((__m128i *)(xq + 64 * b + 16 * i), _mm512_cvtsepi32_epi8(q));
        }
    }
}

/* acc + x_scale * (the 64 weights of `codes` . the 64 quantized inputs at xq), 16 float lanes. */
DC_INT8_TARGET __m512 int8_block(int kind, const uint8_t *codes, const int8_t *xq, float x_scale, __m512 acc,
                                 __m512i t0, __m512i t1, __m512i t2, __m512i t3) {
    const __m512i k = _mm512_loadu_si512((const void *)codes);
    __m512i w;
    if (kind == INT8_64) w = _mm512_permutexvar_epi8(k, t0);
    else if (kind == INT8_128) w = _mm512_permutex2var_epi8(t0, k, t1);
    else /* bit 7 of the code picks the upper 128 entries */
        w = _mm512_mask_blend_epi8(_mm512_movepi8_mask(k), _mm512_permutex2var_epi8(t0, k, t1),
                                   _mm512_permutex2var_epi8(t2, k, t3));
    const __m512i x = _mm512_loadu_si512((const void *)xq);
    const __m512i signed_x = _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), _mm512_setzero_si512(), x);
    const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(w), signed_x);
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(x_scale), acc);
}

DC_INT8_TARGET void int8_rows(int kind, const int8_task *t, int64_t r0, int64_t r1) {
    const __m512i t0 = _mm512_loadu_si512((const void *)t->table);
    const __m512i t1 = _mm512_loadu_si512((const void *)(t->table + 64));
    const __m512i t2 = _mm512_loadu_si512((const void *)(t->table + 128));
    const __m512i t3 = _mm512_loadu_si512((const void *)(t->table + 192));
    const int64_t n_blocks = t->stride / 64;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = t->codes + r * t->stride;
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(); /* two chains hide the FMA latency */
        int64_t b = 0;
        for (; b + 2 <= n_blocks; b += 2) {
            acc0 = int8_block(kind, row + 64 * b, t->xq + 64 * b, t->xs[b], acc0, t0, t1, t2, t3);
            acc1 = int8_block(kind, row + 64 * b + 64, t->xq + 64 * b + 64, t->xs[b + 1], acc1, t0, t1, t2, t3);
        }
        if (b < n_blocks) acc0 = int8_block(kind, row + 64 * b, t->xq + 64 * b, t->xs[b], acc0, t0, t1, t2, t3);
        const float y = t->w_scale * _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
        t->out[r] = t->bias ? y + t->bias[r] : y;
    }
}

DC_INT8_TARGET_FN void int8_chunk(const void *task, int64_t c, int64_t n) {
    const int8_task *t = (const int8_task *)task;
    const int64_t r0 = t->rows * c / n, r1 = t->rows * (c + 1) / n;
    if (t->table_size <= 64) int8_rows(INT8_64, t, r0, r1);
    else if (t->table_size <= 128) int8_rows(INT8_128, t, r0, r1);
    else int8_rows(INT8_256, t, r0, r1);
}

#endif /* DC_HAVE_AVX512 */

/* ------------------------------------------------------------------------------------------------ */
/* Python entry points: every argument is an int (pointers as addresses), so a call costs ~0.1 us     */
/* ------------------------------------------------------------------------------------------------ */

static int int_args(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, int64_t *out, const char *name) {
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s: expected %zd int arguments, got %zd", name, want, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        out[i] = (int64_t)PyLong_AsLongLong(args[i]);
        if (out[i] == -1 && PyErr_Occurred()) return -1;
    }
    return 0;
}

static int check_supported(void) {
    if (!simd_supported()) {
        PyErr_SetString(PyExc_RuntimeError, "this CPU lacks AVX-512 F/BW/VL; use the numba or torch backend");
        return -1;
    }
    return 0;
}

#define PTR(T, v) ((T)(uintptr_t)(v))

/* The batch-1 entry points end with (bias, parallel, x, out): `parallel` 0 runs on the calling thread
 * alone (a layer chooses by measurement, deepcompress.runtime.plan), 1 lets the pool take part. The
 * input and output come last so that a functools.partial over everything else is the whole kernel:
 * a forward pass calls it with two addresses and no Python frame in between (cold, each frame and
 * attribute lookup costs microseconds). */

/* csr_spmv(ptr, words, codebook, n_blocks, code_bits, col_bits, rows, nnz, bias, parallel, x, out) */
static PyObject *py_csr_spmv(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int64_t a[12];
    if (int_args(args, nargs, 12, a, "csr_spmv") || check_supported()) return NULL;
#ifdef DC_HAVE_AVX512
    csr_task t = {PTR(const int32_t *, a[0]), PTR(const uint16_t *, a[1]), PTR(const float *, a[2]), a[3], a[4], a[5],
                  a[6], a[7], PTR(const float *, a[10]), 1, PTR(float *, a[11]), PTR(const float *, a[8]), 1, 1};
    Py_BEGIN_ALLOW_THREADS
    parallel_for(csr_spmv_chunk, &t, a[9] ? chunks_for(t.nnz, t.rows) : 1);
    Py_END_ALLOW_THREADS
#endif
    Py_RETURN_NONE;
}

/* csr_spmm(ptr, words, codebook, n_blocks, code_bits, col_bits, rows, nnz, x, n, out, bias) */
static PyObject *py_csr_spmm(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int64_t a[12];
    if (int_args(args, nargs, 12, a, "csr_spmm") || check_supported()) return NULL;
#ifdef DC_HAVE_AVX512
    csr_task t = {PTR(const int32_t *, a[0]), PTR(const uint16_t *, a[1]), PTR(const float *, a[2]), a[3], a[4], a[5],
                  a[6], a[7], PTR(const float *, a[8]), a[9], PTR(float *, a[10]), PTR(const float *, a[11]), 1, 1};
    const int64_t n_chunks = split_tiles(&t, (t.n + 63) / 64, t.nnz * t.n);
    Py_BEGIN_ALLOW_THREADS
    parallel_for(csr_spmm_chunk, &t, n_chunks);
    Py_END_ALLOW_THREADS
#endif
    Py_RETURN_NONE;
}

/* csr_conv(ptr, words, codebook, n_blocks, code_bits, col_bits, rows, nnz, x, channels, h, w, kh, kw, ph, pw,
 *          dh, dw, out, bias): stride-1 convolution of one (channels, h, w) image; out is (rows, oh, ow). */
static PyObject *py_csr_conv(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int64_t a[20];
    if (int_args(args, nargs, 20, a, "csr_conv") || check_supported()) return NULL;
#ifdef DC_HAVE_AVX512
    const int64_t ch = a[9], h = a[10], w = a[11], kh = a[12], kw = a[13], ph = a[14], pw = a[15], dh = a[16],
                  dw = a[17];
    const int64_t hp = h + 2 * ph, wp = w + 2 * pw, oh = hp - dh * (kh - 1), ow = wp - dw * (kw - 1);
    if (oh <= 0 || ow <= 0 || ch * kh * kw > (a[3] << a[5])) {
        PyErr_SetString(PyExc_ValueError, "csr_conv: the kernel does not fit the input");
        return NULL;
    }
    /* 64 + kw floats of slack: the last tile's lanes past (oh, Wp) read (and drop) beyond the image */
    const int64_t xp_size = ch * hp * wp + 64 + dw * kw;
    float *xp = (float *)calloc((size_t)xp_size, sizeof(float));
    int32_t *coloff = (int32_t *)malloc(sizeof(int32_t) * (size_t)(a[3] << a[5]));
    if (!xp || !coloff) {
        free(xp);
        free(coloff);
        return PyErr_NoMemory();
    }
    const float *x = PTR(const float *, a[8]);
    for (int64_t c = 0; c < ch; c++)
        for (int64_t y = 0; y < h; y++)
            memcpy(xp + c * hp * wp + (y + ph) * wp + pw, x + (c * h + y) * w, sizeof(float) * (size_t)w);
    for (int64_t k = 0; k < (a[3] << a[5]); k++) {
        const int64_t c = k / (kh * kw), ky = (k / kw) % kh, kx = k % kw;
        coloff[k] = k < ch * kh * kw ? (int32_t)(c * hp * wp + ky * dh * wp + kx * dw) : 0;
    }
    conv_task t = {{PTR(const int32_t *, a[0]), PTR(const uint16_t *, a[1]), PTR(const float *, a[2]), a[3], a[4],
                    a[5], a[6], a[7], NULL, 0, PTR(float *, a[18]), PTR(const float *, a[19]), 1, 1},
                   xp, coloff, oh * wp, wp, oh, ow};
    const int64_t n_chunks = split_tiles(&t.csr, (t.L + 63) / 64, t.csr.nnz * t.L);
    Py_BEGIN_ALLOW_THREADS
    parallel_for(conv_chunk, &t, n_chunks);
    Py_END_ALLOW_THREADS
    free(xp);
    free(coloff);
#endif
    Py_RETURN_NONE;
}

/* sliced_spmv(gptr, cptr, slabs, counts, words, codebook, n_slabs, cols, rows, wide, slab, bias, parallel, x,
 *             out): slab is the slab width, 63 or 31 */
static PyObject *py_sliced_spmv(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int64_t a[15];
    if (int_args(args, nargs, 15, a, "sliced_spmv") || check_supported()) return NULL;
    if (a[10] != WIDE_SLAB && a[10] != NARROW_SLAB) {
        PyErr_Format(PyExc_ValueError, "sliced_spmv: expected a slab width of %d or %d, got %lld", WIDE_SLAB,
                     NARROW_SLAB, (long long)a[10]);
        return NULL;
    }
#ifdef DC_HAVE_AVX512
    sliced_task t = {PTR(const int64_t *, a[0]), PTR(const int64_t *, a[1]), PTR(const uint16_t *, a[2]),
                     PTR(const uint8_t *, a[3]), PTR(const uint16_t *, a[4]), PTR(const float *, a[5]), a[6], a[7],
                     a[8], (a[8] + 15) / 16, a[9], a[10], PTR(const float *, a[13]), PTR(float *, a[14]),
                     PTR(const float *, a[11])};
    Py_BEGIN_ALLOW_THREADS
    parallel_for(sliced_chunk, &t, a[12] ? chunks_for(t.gptr[t.groups] * 16, t.groups) : 1);
    Py_END_ALLOW_THREADS
#endif
    Py_RETURN_NONE;
}

/* dense_spmv(codes, stride, nibble, table, table_size, cols, rows, bias, parallel, x, out) */
static PyObject *py_dense_spmv(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int64_t a[11];
    if (int_args(args, nargs, 11, a, "dense_spmv") || check_supported()) return NULL;
#ifdef DC_HAVE_AVX512
    dense_task t = {PTR(const uint8_t *, a[0]), a[1], a[2], a[4], PTR(const float *, a[3]), a[5], a[6],
                    PTR(const float *, a[9]), PTR(float *, a[10]), PTR(const float *, a[7])};
    Py_BEGIN_ALLOW_THREADS
    parallel_for(dense_chunk, &t, a[8] ? chunks_for(t.rows * t.cols / 4, t.rows) : 1);
    Py_END_ALLOW_THREADS
#endif
    Py_RETURN_NONE;
}

/* int8_spmv(codes, stride, table, table_size, w_scale, cols, rows, bias, parallel, x, out): w_scale is a
 * float, every other argument an int. The input is quantized on the calling thread, then rows run on
 * the pool like dense_spmv's. */
static PyObject *py_int8_spmv(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int64_t a[11];
    if (nargs != 11) {
        PyErr_Format(PyExc_TypeError, "int8_spmv: expected 11 arguments, got %zd", nargs);
        return NULL;
    }
    const double w_scale = PyFloat_AsDouble(args[4]);
    if (w_scale == -1.0 && PyErr_Occurred()) return NULL;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        a[i] = i == 4 ? 0 : (int64_t)PyLong_AsLongLong(args[i]);
        if (a[i] == -1 && PyErr_Occurred()) return NULL;
    }
    if (!int8_supported()) {
        PyErr_SetString(PyExc_RuntimeError, "int8_spmv: this CPU lacks AVX-512 VBMI and VNNI (or F/BW/VL)");
        return NULL;
    }
    if (a[1] % 64 || a[1] < a[5] || a[3] < 1 || a[3] > 256) {
        PyErr_SetString(PyExc_ValueError, "int8_spmv: expected a stride that is a multiple of 64 and >= cols, "
                                          "and 1 to 256 table entries");
        return NULL;
    }
#ifdef DC_HAVE_AVX512
    const int64_t n_blocks = a[1] / 64;
    /* the quantized input and its block scales, written once per call (a few KB) */
    int8_t *xq = (int8_t *)malloc((size_t)a[1] + sizeof(float) * (size_t)n_blocks + 1);
    if (!xq) return PyErr_NoMemory();
    float *xs = (float *)(void *)(xq + a[1]); /* a[1] is a multiple of 64: aligned for floats */
    int8_task t = {PTR(const uint8_t *, a[0]), a[1], PTR(const int8_t *, a[2]), a[3], (float)w_scale, a[6],
                   xq, xs, PTR(float *, a[10]), PTR(const float *, a[7])};
    Py_BEGIN_ALLOW_THREADS
    quantize_blocks(PTR(const float *, a[9]), a[5], n_blocks, xq, xs);
    /* about twice as many multiply-adds per cycle as the fp32 dense kernel: half its work units */
    parallel_for(int8_chunk, &t, a[8] ? chunks_for(t.rows * t.stride / 8, t.rows) : 1);
    Py_END_ALLOW_THREADS
    free(xq);
#endif
    Py_RETURN_NONE;
}

static PyObject *py_set_num_threads(PyObject *self, PyObject *arg) {
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 1 || n > MAX_WORKERS + 1) {
        PyErr_Format(PyExc_ValueError, "expected 1 to %d threads, got %ld", MAX_WORKERS + 1, n);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&pool.dispatch);
    if (n != pool.threads) {
        stop_workers();
        pool.threads = (int)n;
    }
    pthread_mutex_unlock(&pool.dispatch);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_num_threads(PyObject *self, PyObject *unused) { return PyLong_FromLong(pool.threads); }

static PyObject *py_set_spin_us(PyObject *self, PyObject *arg) {
    double us = PyFloat_AsDouble(arg);
    if (us == -1.0 && PyErr_Occurred()) return NULL;
    if (us < 0) {
        PyErr_Format(PyExc_ValueError, "expected spin_us >= 0, got %g", us);
        return NULL;
    }
    pool.spin_ns = (int64_t)(us * 1000.0);
    Py_RETURN_NONE;
}

static PyObject *py_set_wake_min_work(PyObject *self, PyObject *arg) {
    long long n = PyLong_AsLongLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "expected wake_min_work >= 0, got %lld", n);
        return NULL;
    }
    long long old = wake_min_work;
    wake_min_work = n;
    return PyLong_FromLongLong(old);
}

static PyObject *py_supported(PyObject *self, PyObject *unused) { return PyBool_FromLong(simd_supported()); }

static PyObject *py_int8_supported(PyObject *self, PyObject *unused) { return PyBool_FromLong(int8_supported()); }

static PyMethodDef simd_methods[] = {
    {"csr_spmv", (PyCFunction)(void (*)(void))py_csr_spmv, METH_FASTCALL, "out = W x, packed codebook CSR"},
    {"csr_spmm", (PyCFunction)(void (*)(void))py_csr_spmm, METH_FASTCALL, "out = W x, x (cols, n), packed CSR"},
    {"csr_conv", (PyCFunction)(void (*)(void))py_csr_conv, METH_FASTCALL, "stride-1 conv, one image, packed CSR"},
    {"sliced_spmv", (PyCFunction)(void (*)(void))py_sliced_spmv, METH_FASTCALL, "out = W x, sliced layout"},
    {"dense_spmv", (PyCFunction)(void (*)(void))py_dense_spmv, METH_FASTCALL, "out = W x, dense codes"},
    {"int8_spmv", (PyCFunction)(void (*)(void))py_int8_spmv, METH_FASTCALL,
     "out ~= W x, int8 codebook times x quantized per 64-input block"},
    {"set_num_threads", py_set_num_threads, METH_O, "threads of the pool, the caller included"},
    {"num_threads", py_num_threads, METH_NOARGS, "threads of the pool, the caller included"},
    {"set_spin_us", py_set_spin_us, METH_O, "how long idle workers spin before they sleep"},
    {"set_wake_min_work", py_set_wake_min_work, METH_O,
     "smallest product (multiply-adds) that wakes sleeping workers; returns the previous value"},
    {"supported", py_supported, METH_NOARGS, "whether this CPU runs the AVX-512 kernels"},
    {"int8_supported", py_int8_supported, METH_NOARGS, "whether this CPU runs the int8 kernel (VBMI, VNNI)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef simd_module = {PyModuleDef_HEAD_INIT, .m_name = "_simd", .m_doc = NULL, .m_size = -1,
                                         .m_methods = simd_methods};

PyMODINIT_FUNC PyInit__simd(void) {
    static int registered = 0;
    if (!registered) {
        pthread_atfork(NULL, NULL, after_fork_child);
        registered = 1;
    }
    return PyModule_Create(&simd_module);
}
