// Small-step CPU kernels for the batched engine (see cpu_kernels.py): built once with the
// machine's C compiler, called through ctypes on torch tensors' memory.
//
// A decoding step multiplies one (or a few) rows by every weight matrix: it reads memory and
// does little arithmetic, so what matters is streaming the int8 weights at the memory's speed
// on every core. torch's weight-only int8 kernel reads them at ~11 GB/s here; this one, with
// AVX-512 on every core, reads them about three times faster.
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

static inline __m512 load_bf16x16(const uint16_t *p) {
    __m256i v = _mm256_loadu_si256((const __m256i *)p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

// M activation rows (M <= MAX_ROWS) at a time: each output row of weights is read front to back (one
// sequential stream of memory, which the hardware prefetcher follows: reading blocks of rows
// side by side ran at half the speed) and used for all M rows; two accumulators per row.
#define INT8_ROWS(M)                                                                           \
    static void int8_rows_##M(const float *xf, int in, const int8_t *q, const uint16_t *scale, \
                              int out, uint16_t *y, int lo, int hi) {                          \
        for (int r = lo; r < hi; r++) {                                                        \
            const int8_t *row = q + (size_t)r * in;                                            \
            __m512 a[M][2];                                                                    \
            for (int i = 0; i < M; i++) a[i][0] = a[i][1] = _mm512_setzero_ps();               \
            int k = 0;                                                                         \
            for (; k + 32 <= in; k += 32) {                                                    \
                __m256i w2 = _mm256_loadu_si256((const __m256i *)(row + k));                   \
                __m512 w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(w2))); \
                __m512 w1 =                                                                    \
                    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(w2, 1))); \
                for (int i = 0; i < M; i++) {                                                  \
                    a[i][0] = _mm512_fmadd_ps(w0, _mm512_load_ps(xf + (size_t)i * in + k), a[i][0]); \
                    a[i][1] =                                                                  \
                        _mm512_fmadd_ps(w1, _mm512_load_ps(xf + (size_t)i * in + k + 16), a[i][1]); \
                }                                                                              \
            }                                                                                  \
            for (; k < in; k += 16) {                                                          \
                __m512 w0 = _mm512_cvtepi32_ps(                                                \
                    _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(row + k))));        \
                for (int i = 0; i < M; i++)                                                    \
                    a[i][0] = _mm512_fmadd_ps(w0, _mm512_load_ps(xf + (size_t)i * in + k), a[i][0]); \
            }                                                                                  \
            float s = bf16_to_f32(scale[r]);                                                   \
            for (int i = 0; i < M; i++) {                                                      \
                float v = _mm512_reduce_add_ps(_mm512_add_ps(a[i][0], a[i][1])) * s;           \
                y[(size_t)i * out + r] = f32_to_bf16(v);                                       \
            }                                                                                  \
        }                                                                                      \
    }

INT8_ROWS(1)
INT8_ROWS(2)
INT8_ROWS(3)
INT8_ROWS(4)
INT8_ROWS(5)
INT8_ROWS(6)
INT8_ROWS(7)
INT8_ROWS(8)

typedef void (*int8_rows_fn)(const float *, int, const int8_t *, const uint16_t *, int,
                             uint16_t *, int, int);
static const int8_rows_fn INT8_BY_ROWS[MAX_ROWS + 1] = {
    0, int8_rows_1, int8_rows_2, int8_rows_3, int8_rows_4,
    int8_rows_5, int8_rows_6, int8_rows_7, int8_rows_8};

typedef struct {
    const float *xf;
    int m, in, out;
    const int8_t *q;
    const uint16_t *scale;
    uint16_t *y;
} int8_job;

static void int8_part(void *arg, int part, int parts) {
    const int8_job *j = (const int8_job *)arg;
    int lo, hi;
    split(j->out, part, parts, &lo, &hi);
    // every row in one pass: each weight row is read once for all of them
    INT8_BY_ROWS[j->m](j->xf, j->in, j->q, j->scale, j->out, j->y, lo, hi);
}

// y[m, out] = x[m, in] @ (q[out, in] * scale[out, None]).T.
// bf16 activations and scales, int8 weights, fp32 accumulation, on `threads` cores. in % 16
// == 0; m <= MAX_ROWS.
int int8_matmul_bf16(const uint16_t *x, int m, int in, const int8_t *q, const uint16_t *scale,
                     int out, uint16_t *y, int threads) {
    if (m < 1 || m > MAX_ROWS || in % 16 != 0) return -1;
    float *xf = (float *)aligned_alloc(64, sizeof(float) * (size_t)m * (size_t)in);
    if (!xf) return -2;
    for (size_t i = 0; i < (size_t)m * (size_t)in; i++) xf[i] = bf16_to_f32(x[i]);
    int8_job job = {xf, m, in, out, q, scale, y};
    // each part gets at least 64 rows: below that, waking a helper costs more than it saves
    int parts = threads < out / 64 ? threads : (out / 64 > 0 ? out / 64 : 1);
    parallel(int8_part, &job, parts);
    free(xf);
    return 0;
}

// LoRA of one layer's group for the rows of several adapters: for each segment s, rows
// seg[s].begin .. seg[s].end - 1 of y[m, out] get += (x @ A) @ B, with A [in, r] and B [r, out]
// (bf16, the scaling folded into B) read from the segment's table: per (layer, group) index,
// three int64s (address of A, address of B, r); A == 0 means "no LoRA on this group".
typedef struct {
    int64_t begin, end, table;
} lora_segment;

int lora_add_bf16(const uint16_t *x, int in, uint16_t *y, int out, const lora_segment *seg,
                  int segments, int index) {
    if (in % 16 != 0 || out % 16 != 0) return -1;
    float t[256];
    float *acc = (float *)aligned_alloc(64, sizeof(float) * (size_t)out);
    if (!acc) return -2;
    for (int s = 0; s < segments; s++) {
        const int64_t *entry = (const int64_t *)(intptr_t)seg[s].table + 3 * (int64_t)index;
        const uint16_t *a = (const uint16_t *)(intptr_t)entry[0];
        const uint16_t *b = (const uint16_t *)(intptr_t)entry[1];
        int r = (int)entry[2];
        if (!a || r < 1 || r > 256) continue;
        for (int64_t i = seg[s].begin; i < seg[s].end; i++) {
            const uint16_t *xi = x + (size_t)i * in;
            for (int j = 0; j < r; j++) t[j] = 0.0f;
            for (int k = 0; k < in; k++) {  // t = x_i @ A (rows of A are r wide)
                float xv = bf16_to_f32(xi[k]);
                const uint16_t *ak = a + (size_t)k * r;
                for (int j = 0; j < r; j++) t[j] += xv * bf16_to_f32(ak[j]);
            }
            for (int o = 0; o < out; o += 16) _mm512_store_ps(acc + o, _mm512_setzero_ps());
            for (int j = 0; j < r; j++) {  // acc = t @ B
                if (t[j] == 0.0f) continue;
                __m512 tj = _mm512_set1_ps(bf16_to_f32(f32_to_bf16(t[j])));  // t in bf16, as torch
                const uint16_t *bj = b + (size_t)j * out;
                for (int o = 0; o < out; o += 16)
                    _mm512_store_ps(acc + o,
                                    _mm512_fmadd_ps(tj, load_bf16x16(bj + o), _mm512_load_ps(acc + o)));
            }
            uint16_t *yi = y + (size_t)i * out;
            for (int o = 0; o < out; o++) yi[o] = f32_to_bf16(bf16_to_f32(yi[o]) + acc[o]);
        }
    }
    free(acc);
    return 0;
}

// y[m, n] = rms_norm(x[m, n]) * weight[n]: bf16 in and out, fp32 arithmetic. n % 16 == 0.
int rms_norm_bf16(const uint16_t *x, int m, int n, const uint16_t *weight, float eps,
                  uint16_t *y) {
    if (n % 16 != 0) return -1;
    for (int i = 0; i < m; i++) {
        const uint16_t *row = x + (size_t)i * n;
        __m512 ss = _mm512_setzero_ps();
        for (int k = 0; k < n; k += 16) {
            __m512 v = load_bf16x16(row + k);
            ss = _mm512_fmadd_ps(v, v, ss);
        }
        float inv = 1.0f / __builtin_sqrtf(_mm512_reduce_add_ps(ss) / (float)n + eps);
        for (int k = 0; k < n; k++)
            y[(size_t)i * n + k] = f32_to_bf16(bf16_to_f32(row[k]) * inv * bf16_to_f32(weight[k]));
    }
    return 0;
}

typedef struct {
    const uint16_t *qkv, *cos, *sin;
    const int64_t *slots, *pos;
    const uint16_t *k_cache, *v_cache;
    int m, heads, kv_heads, hd, context;
    uint16_t *out;
} attention_job;

// Rows x heads pairs lo .. hi - 1: scores over the cache, softmax, weighted sum of values.
static void attention_part(void *arg, int part, int parts) {
    const attention_job *j = (const attention_job *)arg;
    int hd = j->hd, half = hd / 2, heads = j->heads, rep = heads / j->kv_heads;
    int width = (heads + 2 * j->kv_heads) * hd, blocks = hd / 16;
    float scale = 1.0f / __builtin_sqrtf((float)hd);
    int lo, hi;
    split(j->m * heads, part, parts, &lo, &hi);
    for (int pair = lo; pair < hi; pair++) {
        int i = pair / heads, h = pair % heads;
        const uint16_t *qin = j->qkv + (size_t)i * width + (size_t)h * hd;
        const uint16_t *c = j->cos + (size_t)j->pos[i] * hd, *sn = j->sin + (size_t)j->pos[i] * hd;
        float qf[256];
        for (int d = 0; d < hd; d++) {
            float rot = d < half ? -bf16_to_f32(qin[d + half]) : bf16_to_f32(qin[d - half]);
            // round like the cache's keys: q rotated in bf16, as the prefill path does
            qf[d] = bf16_to_f32(f32_to_bf16(bf16_to_f32(qin[d]) * bf16_to_f32(c[d]) +
                                            rot * bf16_to_f32(sn[d]))) *
                    scale;
        }
        int n = (int)j->pos[i] + 1;
        size_t base = ((size_t)j->slots[i] * j->kv_heads + h / rep) * j->context * hd;
        const uint16_t *kc = j->k_cache + base, *vc = j->v_cache + base;
        float *sc = (float *)malloc(sizeof(float) * (size_t)n);
        if (!sc) continue;  // out of memory: this head's output stays as it was
        float mx = -3.0e38f;
        for (int t = 0; t < n; t++) {
            __m512 acc = _mm512_setzero_ps();
            for (int d = 0; d < hd; d += 16)
                acc = _mm512_fmadd_ps(load_bf16x16(kc + (size_t)t * hd + d), _mm512_loadu_ps(qf + d),
                                      acc);
            sc[t] = _mm512_reduce_add_ps(acc);
            if (sc[t] > mx) mx = sc[t];
        }
        float sum = 0.0f;
        for (int t = 0; t < n; t++) {
            sc[t] = __builtin_expf(sc[t] - mx);
            sum += sc[t];
        }
        __m512 acc[16];
        for (int b = 0; b < blocks; b++) acc[b] = _mm512_setzero_ps();
        for (int t = 0; t < n; t++) {
            __m512 p = _mm512_set1_ps(sc[t] / sum);
            for (int b = 0; b < blocks; b++)
                acc[b] = _mm512_fmadd_ps(p, load_bf16x16(vc + (size_t)t * hd + b * 16), acc[b]);
        }
        free(sc);
        uint16_t *o = j->out + (size_t)i * heads * hd + (size_t)h * hd;
        float tmp[16];
        for (int b = 0; b < blocks; b++) {
            _mm512_storeu_ps(tmp, acc[b]);
            for (int d = 0; d < 16; d++) o[b * 16 + d] = f32_to_bf16(tmp[d]);
        }
    }
}

// Decode attention for m rows of one new token each, rotary embedding and KV-cache write
// included. qkv[m, (heads + 2 * kv_heads) * hd] holds each row's projected q, k, v (bf16);
// row i sits in cache slot slots[i] at position pos[i] and attends to positions 0..pos[i].
// Caches are [slots, kv_heads, context, hd] bf16; cos/sin are [context, hd] bf16 tables.
// out[m, heads * hd] (bf16) gets the attention output. hd % 16 == 0, hd <= 256.
int decode_attention_bf16(const uint16_t *qkv, int m, const int64_t *slots, const int64_t *pos,
                          uint16_t *k_cache, uint16_t *v_cache, const uint16_t *cos,
                          const uint16_t *sin, int heads, int kv_heads, int hd, int context,
                          uint16_t *out, int threads) {
    if (hd % 16 != 0 || hd > 256 || heads % kv_heads != 0) return -1;
    int width = (heads + 2 * kv_heads) * hd, half = hd / 2;
    int64_t keys = 0;
    for (int i = 0; i < m; i++) {
        if (pos[i] < 0 || pos[i] >= context) return -2;
        keys += pos[i] + 1;
    }
    // 1. rotate k, write k and v into the cache
    for (int i = 0; i < m; i++) {
        const uint16_t *row = qkv + (size_t)i * width;
        const uint16_t *c = cos + (size_t)pos[i] * hd, *sn = sin + (size_t)pos[i] * hd;
        for (int g = 0; g < kv_heads; g++) {
            const uint16_t *kin = row + (size_t)(heads + g) * hd;
            const uint16_t *vin = row + (size_t)(heads + kv_heads + g) * hd;
            size_t at = (((size_t)slots[i] * kv_heads + g) * context + pos[i]) * hd;
            for (int d = 0; d < hd; d++) {
                float rot = d < half ? -bf16_to_f32(kin[d + half]) : bf16_to_f32(kin[d - half]);
                k_cache[at + d] =
                    f32_to_bf16(bf16_to_f32(kin[d]) * bf16_to_f32(c[d]) + rot * bf16_to_f32(sn[d]));
                v_cache[at + d] = vin[d];
            }
        }
    }
    // 2. the heads, on several cores once there are enough keys to be worth a helper
    attention_job job = {qkv, cos, sin, slots, pos, k_cache, v_cache, m, heads, kv_heads, hd,
                         context, out};
    int parts = keys * heads * hd >= 262144 ? threads : 1;
    if (parts > m * heads) parts = m * heads;
    parallel(attention_part, &job, parts);
    return 0;
}

