// The kernels of cpu_kernels.c for one activation type, included once per type with
//   ACT            the element type of activations, scales, norms, LoRA weights and caches
//   NAME(f)        f with the type's suffix (_bf16, _f32)
//   act_get(v)     an ACT as a float;  act_put(f)  a float rounded to an ACT
//   act_vload(p)   VW ACTs from memory as floats
// Arithmetic is fp32; results are rounded to ACT where torch's kernels round them.

// M activation rows (M <= MAX_ROWS) at a time: each output row of weights is read front to back
// (one sequential stream of memory, which the hardware prefetcher follows: reading blocks of
// rows side by side ran at half the speed) and used for all M rows, ROW_ACC(M) vectors of it at a
// time, each with its own accumulator per row (independent chains of multiply-adds).
#define INT8_ROWS(M)                                                                            \
    static void NAME(int8_rows_##M)(const float *xf, int in, const int8_t *q, const ACT *scale, \
                                    int out, ACT *y, int lo, int hi) {                          \
        enum { A = ROW_ACC(M) };                                                                \
        for (int r = lo; r < hi; r++) {                                                         \
            const int8_t *row = q + (size_t)r * in;                                             \
            vf a[M][A];                                                                         \
            for (int i = 0; i < M; i++)                                                         \
                for (int c = 0; c < A; c++) a[i][c] = vzero();                                  \
            int k = 0;                                                                          \
            for (; k + A * VW <= in; k += A * VW) {                                             \
                vf w[A];                                                                        \
                for (int c = 0; c < A; c++) w[c] = vload_i8(row + k + c * VW);                  \
                for (int i = 0; i < M; i++) {                                                   \
                    const float *xi = xf + (size_t)i * in + k;                                  \
                    for (int c = 0; c < A; c++) a[i][c] = vfma(w[c], vload(xi + c * VW), a[i][c]); \
                }                                                                               \
            }                                                                                   \
            for (; k < in; k += VW) {                                                           \
                vf w0 = vload_i8(row + k);                                                      \
                for (int i = 0; i < M; i++)                                                     \
                    a[i][0] = vfma(w0, vload(xf + (size_t)i * in + k), a[i][0]);                \
            }                                                                                   \
            float s = act_get(scale[r]);                                                        \
            for (int i = 0; i < M; i++) {                                                       \
                vf t = a[i][0];                                                                 \
                for (int c = 1; c < A; c++) t = vadd(t, a[i][c]);                               \
                y[(size_t)i * out + r] = act_put(vsum(t) * s);                                  \
            }                                                                                   \
        }                                                                                       \
    }

INT8_ROWS(1)
INT8_ROWS(2)
INT8_ROWS(3)
INT8_ROWS(4)
INT8_ROWS(5)
INT8_ROWS(6)
INT8_ROWS(7)
INT8_ROWS(8)
#undef INT8_ROWS

static void (*const NAME(int8_by_rows)[MAX_ROWS + 1])(const float *, int, const int8_t *,
                                                       const ACT *, int, ACT *, int, int) = {
    0,
    NAME(int8_rows_1),
    NAME(int8_rows_2),
    NAME(int8_rows_3),
    NAME(int8_rows_4),
    NAME(int8_rows_5),
    NAME(int8_rows_6),
    NAME(int8_rows_7),
    NAME(int8_rows_8)};

typedef struct {
    const float *xf;
    int m, in, out;
    const int8_t *q;
    const ACT *scale;
    ACT *y;
} NAME(int8_job);

static void NAME(int8_part)(void *arg, int part, int parts) {
    const NAME(int8_job) *j = (const NAME(int8_job) *)arg;
    int lo, hi;
    split(j->out, part, parts, &lo, &hi);
    // every row in one pass: each weight row is read once for all of them
    NAME(int8_by_rows)[j->m](j->xf, j->in, j->q, j->scale, j->out, j->y, lo, hi);
}

// y[m, out] = x[m, in] @ (q[out, in] * scale[out, None]).T.
// ACT activations and scales, int8 weights, fp32 accumulation, on `threads` cores. in % 16
// == 0; m <= MAX_ROWS.
int NAME(int8_matmul)(const ACT *x, int m, int in, const int8_t *q, const ACT *scale, int out,
                      ACT *y, int threads) {
    if (m < 1 || m > MAX_ROWS || in % 16 != 0) return -1;
    float *xf = (float *)aligned_alloc(64, sizeof(float) * (size_t)m * (size_t)in);
    if (!xf) return -2;
    for (size_t i = 0; i < (size_t)m * (size_t)in; i++) xf[i] = act_get(x[i]);
    NAME(int8_job) job = {xf, m, in, out, q, scale, y};
    // each part gets at least 64 rows: below that, waking a helper costs more than it saves
    int parts = threads < out / 64 ? threads : (out / 64 > 0 ? out / 64 : 1);
    parallel(NAME(int8_part), &job, parts);
    free(xf);
    return 0;
}

// LoRA of one layer's group for the rows of several adapters: for each segment s, rows
// seg[s].begin .. seg[s].end - 1 of y[m, out] get += (x @ A) @ B, with A [in, r] and B [r, out]
// (ACT, the scaling folded into B) read from the segment's table: per (layer, group) index,
// three int64s (address of A, address of B, r); A == 0 means "no LoRA on this group".
int NAME(lora_add)(const ACT *x, int in, ACT *y, int out, const lora_segment *seg, int segments,
                   int index) {
    if (in % 16 != 0 || out % 16 != 0) return -1;
    float t[256];
    float *acc = (float *)aligned_alloc(64, sizeof(float) * (size_t)out);
    if (!acc) return -2;
    for (int s = 0; s < segments; s++) {
        const int64_t *entry = (const int64_t *)(intptr_t)seg[s].table + 3 * (int64_t)index;
        const ACT *a = (const ACT *)(intptr_t)entry[0];
        const ACT *b = (const ACT *)(intptr_t)entry[1];
        int r = (int)entry[2];
        if (!a || r < 1 || r > 256) continue;
        for (int64_t i = seg[s].begin; i < seg[s].end; i++) {
            const ACT *xi = x + (size_t)i * in;
            for (int j = 0; j < r; j++) t[j] = 0.0f;
            for (int k = 0; k < in; k++) {  // t = x_i @ A (rows of A are r wide)
                float xv = act_get(xi[k]);
                const ACT *ak = a + (size_t)k * r;
                for (int j = 0; j < r; j++) t[j] += xv * act_get(ak[j]);
            }
            for (int o = 0; o < out; o += VW) vstore(acc + o, vzero());
            for (int j = 0; j < r; j++) {  // acc = t @ B
                if (t[j] == 0.0f) continue;
                vf tj = vset1(act_get(act_put(t[j])));  // t in ACT, as torch
                const ACT *bj = b + (size_t)j * out;
                for (int o = 0; o < out; o += VW)
                    vstore(acc + o, vfma(tj, act_vload(bj + o), vload(acc + o)));
            }
            ACT *yi = y + (size_t)i * out;
            for (int o = 0; o < out; o++) yi[o] = act_put(act_get(yi[o]) + acc[o]);
        }
    }
    free(acc);
    return 0;
}

// y[m, n] = rms_norm(x[m, n]) * weight[n]: ACT in and out, fp32 arithmetic. n % 16 == 0.
int NAME(rms_norm)(const ACT *x, int m, int n, const ACT *weight, float eps, ACT *y) {
    if (n % 16 != 0) return -1;
    for (int i = 0; i < m; i++) {
        const ACT *row = x + (size_t)i * n;
        vf ss = vzero();
        for (int k = 0; k < n; k += VW) {
            vf v = act_vload(row + k);
            ss = vfma(v, v, ss);
        }
        float inv = 1.0f / __builtin_sqrtf(vsum(ss) / (float)n + eps);
        for (int k = 0; k < n; k++)
            y[(size_t)i * n + k] = act_put(act_get(row[k]) * inv * act_get(weight[k]));
    }
    return 0;
}

typedef struct {
    const ACT *qkv, *cos, *sin;
    const int64_t *slots, *pos;
    const ACT *k_cache, *v_cache;
    int m, heads, kv_heads, hd, context;
    ACT *out;
} NAME(attention_job);

// Rows x heads pairs lo .. hi - 1: scores over the cache, softmax, weighted sum of values.
static void NAME(attention_part)(void *arg, int part, int parts) {
    const NAME(attention_job) *j = (const NAME(attention_job) *)arg;
    int hd = j->hd, half = hd / 2, heads = j->heads, rep = heads / j->kv_heads;
    int width = (heads + 2 * j->kv_heads) * hd, blocks = hd / VW;
    float scale = 1.0f / __builtin_sqrtf((float)hd);
    int lo, hi;
    split(j->m * heads, part, parts, &lo, &hi);
    for (int pair = lo; pair < hi; pair++) {
        int i = pair / heads, h = pair % heads;
        const ACT *qin = j->qkv + (size_t)i * width + (size_t)h * hd;
        const ACT *c = j->cos + (size_t)j->pos[i] * hd, *sn = j->sin + (size_t)j->pos[i] * hd;
        float qf[256];
        for (int d = 0; d < hd; d++) {
            float rot = d < half ? -act_get(qin[d + half]) : act_get(qin[d - half]);
            // round like the cache's keys: q rotated in ACT, as the prefill path does
            qf[d] = act_get(act_put(act_get(qin[d]) * act_get(c[d]) + rot * act_get(sn[d]))) *
                    scale;
        }
        int n = (int)j->pos[i] + 1;
        size_t base = ((size_t)j->slots[i] * j->kv_heads + h / rep) * j->context * hd;
        const ACT *kc = j->k_cache + base, *vc = j->v_cache + base;
        float *sc = (float *)malloc(sizeof(float) * (size_t)n);
        if (!sc) continue;  // out of memory: this head's output stays as it was
        float mx = -3.0e38f;
        for (int t = 0; t < n; t++) {
            vf acc = vzero();
            for (int d = 0; d < hd; d += VW)
                acc = vfma(act_vload(kc + (size_t)t * hd + d), vloadu(qf + d), acc);
            sc[t] = vsum(acc);
            if (sc[t] > mx) mx = sc[t];
        }
        float sum = 0.0f;
        for (int t = 0; t < n; t++) {
            sc[t] = __builtin_expf(sc[t] - mx);
            sum += sc[t];
        }
        vf acc[256 / VW];
        for (int b = 0; b < blocks; b++) acc[b] = vzero();
        for (int t = 0; t < n; t++) {
            vf p = vset1(sc[t] / sum);
            for (int b = 0; b < blocks; b++)
                acc[b] = vfma(p, act_vload(vc + (size_t)t * hd + b * VW), acc[b]);
        }
        free(sc);
        ACT *o = j->out + (size_t)i * heads * hd + (size_t)h * hd;
        float tmp[VW];
        for (int b = 0; b < blocks; b++) {
            vstoreu(tmp, acc[b]);
            for (int d = 0; d < VW; d++) o[b * VW + d] = act_put(tmp[d]);
        }
    }
}

// Decode attention for m rows of one new token each, rotary embedding and KV-cache write
// included. qkv[m, (heads + 2 * kv_heads) * hd] holds each row's projected q, k, v (ACT);
// row i sits in cache slot slots[i] at position pos[i] and attends to positions 0..pos[i].
// Caches are [slots, kv_heads, context, hd] ACT; cos/sin are [context, hd] ACT tables.
// out[m, heads * hd] (ACT) gets the attention output. hd % 16 == 0, hd <= 256.
int NAME(decode_attention)(const ACT *qkv, int m, const int64_t *slots, const int64_t *pos,
                           ACT *k_cache, ACT *v_cache, const ACT *cos, const ACT *sin, int heads,
                           int kv_heads, int hd, int context, ACT *out, int threads) {
    if (hd % 16 != 0 || hd > 256 || heads % kv_heads != 0) return -1;
    int width = (heads + 2 * kv_heads) * hd, half = hd / 2;
    int64_t keys = 0;
    for (int i = 0; i < m; i++) {
        if (pos[i] < 0 || pos[i] >= context) return -2;
        keys += pos[i] + 1;
    }
    // 1. rotate k, write k and v into the cache
    for (int i = 0; i < m; i++) {
        const ACT *row = qkv + (size_t)i * width;
        const ACT *c = cos + (size_t)pos[i] * hd, *sn = sin + (size_t)pos[i] * hd;
        for (int g = 0; g < kv_heads; g++) {
            const ACT *kin = row + (size_t)(heads + g) * hd;
            const ACT *vin = row + (size_t)(heads + kv_heads + g) * hd;
            size_t at = (((size_t)slots[i] * kv_heads + g) * context + pos[i]) * hd;
            for (int d = 0; d < hd; d++) {
                float rot = d < half ? -act_get(kin[d + half]) : act_get(kin[d - half]);
                k_cache[at + d] = act_put(act_get(kin[d]) * act_get(c[d]) + rot * act_get(sn[d]));
                v_cache[at + d] = vin[d];
            }
        }
    }
    // 2. the heads, on several cores once there are enough keys to be worth a helper
    NAME(attention_job) job = {qkv, cos, sin, slots, pos, k_cache, v_cache, m, heads, kv_heads, hd,
                               context, out};
    int parts = keys * heads * hd >= 262144 ? threads : 1;
    if (parts > m * heads) parts = m * heads;
    parallel(NAME(attention_part), &job, parts);
    return 0;
}
