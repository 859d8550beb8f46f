// Small-step CPU kernels for the batched engine (see cpu_kernels.py): built once with the
// machine's C compiler, called through ctypes on torch tensors' memory.
//
// A decoding step multiplies one (or a few) rows by every weight matrix: it reads memory and
// does little arithmetic, so what matters is streaming the int8 weights at the memory's speed
// on every core. torch's weight-only int8 kernel reads them at ~11 GB/s here; this one, with
// AVX-512 or AVX2 on every core, reads them about three times faster.
//
// The kernels are written once, in cpu_kernels_typed.h, against the few vector operations
// below (16 floats wide with AVX-512, 8 with AVX2 and FMA), and included twice: for bf16
// activations (the serving dtype where the CPU does bf16 natively) and for fp32 (elsewhere).
//
// The cores are shared through a pool of our own (below), not OpenMP: the engine runs on the
// model worker's thread, and libgomp, seeing more threads in its pools than CPUs (every thread
// that ever ran a parallel torch op has a pool), stops spinning and puts its workers to sleep
// after each region, so each of a step's ~150 small regions paid a wake-up: a decode step took
// 17 ms on the worker thread against 7 ms on the main thread.
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// ---- the pool: helpers spin for a while after each task, then sleep on a condition ---------

#define MAX_THREADS 64
#define SPIN_NS 200000  // a step's regions come ~10-50 us apart; between steps helpers sleep

typedef void (*task_fn)(void *arg, int part, int parts);

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER;
static int pool_helpers = 0;              // helper threads started
static atomic_ulong pool_generation = 0;  // bumped once per task
static atomic_int pool_remaining = 0;     // helper parts of the current task not yet done
static atomic_int pool_sleeping = 0;
static task_fn pool_task;
static void *pool_arg;
static int pool_parts;
static unsigned long pool_start[MAX_THREADS];  // the generation each helper was started at

static inline uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void *pool_main(void *index) {
    int me = (int)(intptr_t)index;  // helper i runs part i + 1
    unsigned long seen = pool_start[me];  // not a later one: it may start after the bump
    for (;;) {
        uint64_t until = now_ns() + SPIN_NS;
        int spins = 0;
        while (atomic_load_explicit(&pool_generation, memory_order_acquire) == seen) {
            _mm_pause();
            if (++spins % 256 == 0 && now_ns() > until) {
                pthread_mutex_lock(&pool_lock);
                atomic_fetch_add(&pool_sleeping, 1);
                while (atomic_load(&pool_generation) == seen)
                    pthread_cond_wait(&pool_wake, &pool_lock);
                atomic_fetch_sub(&pool_sleeping, 1);
                pthread_mutex_unlock(&pool_lock);
            }
        }
        seen = atomic_load(&pool_generation);
        if (me + 1 < pool_parts) pool_task(pool_arg, me + 1, pool_parts);
        atomic_fetch_sub_explicit(&pool_remaining, 1, memory_order_release);
    }
    return 0;
}

static pthread_mutex_t pool_owner = PTHREAD_MUTEX_INITIALIZER;

// Run task(arg, part, parts) for part = 0 .. parts - 1, part 0 on the calling thread. The pool
// serves one caller at a time: a second thread calling meanwhile (two engines in one process)
// runs its whole task itself.
static void parallel(task_fn task, void *arg, int parts) {
    if (parts > MAX_THREADS) parts = MAX_THREADS;
    if (parts <= 1 || pthread_mutex_trylock(&pool_owner) != 0) {
        task(arg, 0, 1);
        return;
    }
    while (pool_helpers < parts - 1) {
        pthread_t t;
        pool_start[pool_helpers] = atomic_load(&pool_generation);
        if (pthread_create(&t, 0, pool_main, (void *)(intptr_t)pool_helpers) != 0) break;
        pthread_detach(t);
        pool_helpers++;
    }
    if (pool_helpers < parts - 1) parts = pool_helpers + 1;
    pool_task = task;
    pool_arg = arg;
    pool_parts = parts;
    atomic_store(&pool_remaining, pool_helpers);
    atomic_fetch_add_explicit(&pool_generation, 1, memory_order_release);
    if (atomic_load(&pool_sleeping)) {
        pthread_mutex_lock(&pool_lock);
        pthread_cond_broadcast(&pool_wake);
        pthread_mutex_unlock(&pool_lock);
    }
    task(arg, 0, parts);
    while (atomic_load_explicit(&pool_remaining, memory_order_acquire) > 0) _mm_pause();
    pthread_mutex_unlock(&pool_owner);
}

// ---- the vector operations the kernels use ------------------------------------------------

#if defined(__AVX512F__) && defined(__AVX512BW__)
#define VW 16
typedef __m512 vf;
#define vzero() _mm512_setzero_ps()
#define vfma(a, b, c) _mm512_fmadd_ps(a, b, c)
#define vadd(a, b) _mm512_add_ps(a, b)
#define vset1(x) _mm512_set1_ps(x)
#define vload(p) _mm512_load_ps(p)
#define vloadu(p) _mm512_loadu_ps(p)
#define vstore(p, v) _mm512_store_ps(p, v)
#define vstoreu(p, v) _mm512_storeu_ps(p, v)
#define vsum(v) _mm512_reduce_add_ps(v)
static inline vf vload_bf16(const uint16_t *p) {
    __m256i v = _mm256_loadu_si256((const __m256i *)p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}
static inline vf vload_i8(const int8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
#define ROW_ACC(M) 2
#elif defined(__AVX2__) && defined(__FMA__)
#define VW 8
typedef __m256 vf;
#define vzero() _mm256_setzero_ps()
#define vfma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define vadd(a, b) _mm256_add_ps(a, b)
#define vset1(x) _mm256_set1_ps(x)
#define vload(p) _mm256_load_ps(p)
#define vloadu(p) _mm256_loadu_ps(p)
#define vstore(p, v) _mm256_store_ps(p, v)
#define vstoreu(p, v) _mm256_storeu_ps(p, v)
static inline float vsum(vf v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline vf vload_bf16(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
static inline vf vload_i8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
// 16 vector registers: with one or two rows, four chains of 8-wide multiply-adds keep the FMA
// units busy (two could not: an FMA takes 4 cycles); two chains up to 4 rows, one beyond
#define ROW_ACC(M) ((M) <= 2 ? 4 : (M) <= 4 ? 2 : 1)
#else
#error "the kernels need AVX-512 (F and BW) or AVX2 with FMA"
#endif

static inline void split(int n, int part, int parts, int *lo, int *hi) {
    *lo = (int)((int64_t)n * part / parts);
    *hi = (int)((int64_t)n * (part + 1) / parts);
}

#define MAX_ROWS 8

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {  // round to nearest even, as torch does
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

// A LoRA kernel's segment: rows begin .. end - 1 use the adapter whose address table is at
// `table` (see lora_add in cpu_kernels_typed.h).
typedef struct {
    int64_t begin, end, table;
} lora_segment;

// ---- the kernels, for bf16 and for fp32 activations ---------------------------------------

#define ACT uint16_t
#define NAME(f) f##_bf16
#define act_get(v) bf16_to_f32(v)
#define act_put(f) f32_to_bf16(f)
#define act_vload(p) vload_bf16(p)
#include "cpu_kernels_typed.h"
#undef ACT
#undef NAME
#undef act_get
#undef act_put
#undef act_vload

#define ACT float
#define NAME(f) f##_f32
#define act_get(v) (v)
#define act_put(f) (f)
#define act_vload(p) vloadu(p)
#include "cpu_kernels_typed.h"
