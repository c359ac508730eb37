/* Fused CPU kernels for the elementwise work of a bf16 training step (see kernels.py).

   torch runs RMSNorm, the SwiGLU activation and the attention backward's bookkeeping as
   chains of separate operators, each one a pass over memory with an fp32 intermediate;
   these do the same arithmetic in one pass.
   bf16 values travel as uint16_t: the upper half of an IEEE fp32 (bf16_to_f32), rounded
   to nearest-even on the way back (f32_to_bf16), as c10::BFloat16 does. Built by
   kernels.py with the system C compiler at first use; nothing here needs Python or torch. */

#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if (f != f) return 0x7fc0;  /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

/* exp(x) for fp32, ~2 ulp: x = k ln2 + r with |r| <= ln2/2, exp(r) as a degree-6
   polynomial, times 2^k assembled in the exponent bits (as 2^(k-1) * 2, so that it
   overflows to inf where exp does, above ~88.72). Plain arithmetic, so the compiler
   vectorises the loops that call it (libm's expf would be a call per element). Below -86.5
   it returns 0 (exp is under 3e-38 there; torch's gives subnormals). */
static inline float exp_f32(float in) {
    float x = in < -86.5f ? -86.5f : (in > 88.8f ? 88.8f : in);
    /* k = round(x / ln2): adding and subtracting 1.5 * 2^23 rounds to an integer (|k| < 2^22) */
    float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - k * 0.693359375f + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)k + 126) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return in < -86.5f ? 0.0f : p * scale * 2.0f;
}

static inline float silu_f32(float x) { return x / (1.0f + exp_f32(-x)); }

/* ---- work split over threads ---- */

typedef void (*range_fn)(const void *args, int64_t begin, int64_t end);

/* fn over [0, count) in up to `threads` contiguous shares of at least `grain` items each.
   With OpenMP these run on the OpenMP runtime already in the process (torch's, which
   kernels.py makes sure is loaded): its threads, no second pool spinning beside it. */
static void parallel(range_fn fn, const void *args, int64_t count, int threads, int64_t grain) {
    if (grain < 1) grain = 1;
    if ((int64_t)threads > count / grain) threads = (int)(count / grain);
    if (threads <= 1) {
        fn(args, 0, count);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
    {
        int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
        fn(args, count * t / n, count * (t + 1) / n);
    }
#else
    fn(args, 0, count);
#endif
}

/* ---- RMSNorm, as transformers' Llama one: y = w * bf16(x * s), s = rsqrt(mean(x^2) + eps) ---- */

typedef struct {
    const uint16_t *x, *w, *grad;
    uint16_t *out;
    float *scale;
    int64_t n;
    float eps;
} rms_args;

static void rms_norm_rows(const void *p, int64_t begin, int64_t end) {
    const rms_args *a = (const rms_args *)p;
    const int64_t n = a->n;
    const uint16_t *restrict w = a->w;
    for (int64_t row = begin; row < end; row++) {
        const uint16_t *restrict x = a->x + row * n;
        uint16_t *restrict y = a->out + row * n;
        float squares = 0.0f;
#pragma omp simd reduction(+ : squares)
        for (int64_t i = 0; i < n; i++) {
            float v = bf16_to_f32(x[i]);
            squares += v * v;
        }
        float s = 1.0f / sqrtf(squares / (float)n + a->eps);
        a->scale[row] = s;
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            y[i] = f32_to_bf16(bf16_to_f32(w[i]) * round_bf16(bf16_to_f32(x[i]) * s));
        }
    }
}

/* x, out: rows x n bf16; w: n bf16; scale: rows fp32 (written, for the backward). */
void hone_rms_norm_forward(const uint16_t *x, const uint16_t *w, uint16_t *out, float *scale, int64_t rows,
                           int64_t n, float eps, int threads) {
    rms_args a = {x, w, NULL, out, scale, n, eps};
    parallel(rms_norm_rows, &a, rows, threads, 16);
}

/* d/dx of w * (x s): with g' = bf16(g * w), dx = s g' - x s^3 mean(g' x), in fp32. */
static void rms_norm_backward_rows(const void *p, int64_t begin, int64_t end) {
    const rms_args *a = (const rms_args *)p;
    const int64_t n = a->n;
    const uint16_t *restrict w = a->w;
    for (int64_t row = begin; row < end; row++) {
        const uint16_t *restrict x = a->x + row * n, *restrict g = a->grad + row * n;
        uint16_t *restrict dx = a->out + row * n;
        const float s = a->scale[row];
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < n; i++) {
            dot += round_bf16(bf16_to_f32(g[i]) * bf16_to_f32(w[i])) * bf16_to_f32(x[i]);
        }
        const float c = s * s * s * dot / (float)n;
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            float gn = round_bf16(bf16_to_f32(g[i]) * bf16_to_f32(w[i]));
            dx[i] = f32_to_bf16(s * gn - c * bf16_to_f32(x[i]));
        }
    }
}

/* grad, x, grad_x: rows x n bf16; w: n bf16; scale: rows fp32 from the forward. */
void hone_rms_norm_backward(const uint16_t *grad, const uint16_t *x, const uint16_t *w, const float *scale,
                            uint16_t *grad_x, int64_t rows, int64_t n, int threads) {
    rms_args a = {x, w, grad, grad_x, (float *)scale, n, 0.0f};
    parallel(rms_norm_backward_rows, &a, rows, threads, 16);
}

/* ---- SwiGLU activation: act = bf16(bf16(silu(gate)) * up), as F.silu(gate).mul_(up) ---- */

typedef struct {
    const uint16_t *gate, *up, *grad;
    uint16_t *act, *grad_gate, *grad_up;
} swiglu_args;

static void swiglu_range(const void *p, int64_t begin, int64_t end) {
    const swiglu_args *a = (const swiglu_args *)p;
    const uint16_t *restrict gate = a->gate, *restrict up = a->up;
    uint16_t *restrict act = a->act;
#pragma omp simd
    for (int64_t i = begin; i < end; i++) {
        act[i] = f32_to_bf16(round_bf16(silu_f32(bf16_to_f32(gate[i]))) * bf16_to_f32(up[i]));
    }
}

/* gate, up, act: count bf16 each. */
void hone_swiglu_forward(const uint16_t *gate, const uint16_t *up, uint16_t *act, int64_t count, int threads) {
    swiglu_args a = {gate, up, NULL, act, NULL, NULL};
    parallel(swiglu_range, &a, count, threads, 16384);
}

/* grad_up = g * silu(gate); grad_gate = (g * up) * sig (1 + gate (1 - sig)), with the
   roundings of the torch path (silu, g * silu, g * up and the result each to bf16); `act`
   gets the forward's activation again (the backward needs it for the down projection's
   adapter gradient). */
static void swiglu_backward_range(const void *p, int64_t begin, int64_t end) {
    const swiglu_args *a = (const swiglu_args *)p;
    const uint16_t *restrict gate = a->gate, *restrict up = a->up, *restrict grad = a->grad;
    uint16_t *restrict grad_gate = a->grad_gate, *restrict grad_up = a->grad_up, *restrict act = a->act;
#pragma omp simd
    for (int64_t i = begin; i < end; i++) {
        float x = bf16_to_f32(gate[i]), u = bf16_to_f32(up[i]), g = bf16_to_f32(grad[i]);
        float e = exp_f32(-x);
        float sig = 1.0f / (1.0f + e), silu = round_bf16(x / (1.0f + e));
        grad_up[i] = f32_to_bf16(g * silu);
        grad_gate[i] = f32_to_bf16(round_bf16(g * u) * sig * (1.0f + x * (1.0f - sig)));
        act[i] = f32_to_bf16(silu * u);
    }
}

void hone_swiglu_backward(const uint16_t *grad, const uint16_t *gate, const uint16_t *up, uint16_t *grad_gate,
                          uint16_t *grad_up, uint16_t *act, int64_t count, int threads) {
    swiglu_args a = {gate, up, grad, act, grad_gate, grad_up};
    parallel(swiglu_backward_range, &a, count, threads, 16384);
}

/* ---- attention: the widened operands of hone.train.attention's matmul backward ---- */

typedef struct {
    const uint16_t *src, *other;
    const float *column;
    uint16_t *out;
    int64_t sb, sh, sl, heads, length, dim, groups, width;
    float multiplier, sign;
} widen_args;

/* One (example, head) pair per item: its `length` rows of `dim` values go to
   out[b * heads / groups + h / groups][(h % groups) * length + l] as
   [bf16(src * multiplier), hi, lo, 0 ...] (`width` columns), where hi + lo (two bf16) carry
   sign * column[b, h, l] (column: fp32, contiguous), or sign * sum(src * other) over the
   row when `other` is given, or 1, 1 when neither is. */
static void widen_pairs(const void *p, int64_t begin, int64_t end) {
    const widen_args *a = (const widen_args *)p;
    const int64_t dim = a->dim, width = a->width, length = a->length;
    for (int64_t pair = begin; pair < end; pair++) {
        const int64_t b = pair / a->heads, h = pair % a->heads;
        const int64_t matrix = b * (a->heads / a->groups) + h / a->groups;
        uint16_t *out = a->out + (matrix * a->groups * length + (h % a->groups) * length) * width;
        for (int64_t l = 0; l < length; l++, out += width) {
            const uint16_t *restrict src = a->src + b * a->sb + h * a->sh + l * a->sl;
            uint16_t *restrict row = out;
#pragma omp simd
            for (int64_t d = 0; d < dim; d++) row[d] = f32_to_bf16(bf16_to_f32(src[d]) * a->multiplier);
            float value = 1.0f;
            uint16_t hi = 0x3f80, lo = 0x3f80;  /* 1, 1 */
            if (a->column != NULL || a->other != NULL) {
                if (a->other != NULL) {
                    const uint16_t *restrict other = a->other + b * a->sb + h * a->sh + l * a->sl;
                    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                    for (int64_t d = 0; d < dim; d++) dot += bf16_to_f32(src[d]) * bf16_to_f32(other[d]);
                    value = a->sign * dot;
                } else {
                    value = a->sign * a->column[(b * a->heads + h) * length + l];
                }
                hi = f32_to_bf16(value);
                lo = f32_to_bf16(value - bf16_to_f32(hi));
            }
            row[dim] = hi;
            row[dim + 1] = lo;
            for (int64_t d = dim + 2; d < width; d++) row[d] = 0;
        }
    }
}

/* src (and other): (batch, heads, length, dim) bf16 with element strides sb, sh, sl and
   unit stride over dim; out: (batch * heads / groups, groups * length, width) bf16. */
void hone_attention_widen(const uint16_t *src, const uint16_t *other, const float *column, uint16_t *out,
                          int64_t batch, int64_t heads, int64_t length, int64_t dim, int64_t sb, int64_t sh,
                          int64_t sl, int64_t groups, int64_t width, float multiplier, float sign, int threads) {
    widen_args a = {src, other, column, out, sb, sh, sl, heads, length, dim, groups, width, multiplier, sign};
    parallel(widen_pairs, &a, batch * heads, threads, 1);
}

typedef struct {
    uint16_t *scores;
    int64_t length;
} causal_args;

/* Row l of each length x length matrix: exp of columns 0..l in place, 0 after (the causal mask). */
static void exp_causal_rows(const void *p, int64_t begin, int64_t end) {
    const causal_args *a = (const causal_args *)p;
    const int64_t length = a->length;
    for (int64_t row = begin; row < end; row++) {
        uint16_t *restrict s = a->scores + row * length;
        const int64_t last = row % length;
#pragma omp simd
        for (int64_t j = 0; j <= last; j++) s[j] = f32_to_bf16(exp_f32(bf16_to_f32(s[j])));
        memset(s + last + 1, 0, (size_t)(length - last - 1) * sizeof *s);
    }
}

/* scores: (matrices, length, length) bf16, contiguous. */
void hone_exp_causal(uint16_t *scores, int64_t matrices, int64_t length, int threads) {
    causal_args a = {scores, length};
    parallel(exp_causal_rows, &a, matrices * length, threads, 64);
}

/* ---- rows by index: the packed attention layout's scatter and gather ---- */

typedef struct {
    const uint16_t *src;
    const int64_t *map;
    uint16_t *out;
    int64_t stride, width;
} rows_args;

static void gather_rows_range(const void *p, int64_t begin, int64_t end) {
    const rows_args *a = (const rows_args *)p;
    for (int64_t i = begin; i < end; i++) {
        uint16_t *out = a->out + i * a->width;
        if (a->map[i] >= 0) memcpy(out, a->src + a->map[i] * a->stride, (size_t)a->width * sizeof *out);
        else memset(out, 0, (size_t)a->width * sizeof *out);
    }
}

/* out[i] = src[map[i]] (rows of `width` 16-bit values; src rows `stride` apart), or zeros
   where map[i] < 0. */
void hone_gather_rows(const uint16_t *src, int64_t stride, const int64_t *map, uint16_t *out, int64_t rows,
                      int64_t width, int threads) {
    rows_args a = {src, map, out, stride, width};
    parallel(gather_rows_range, &a, rows, threads, 64);
}

/* ---- cross-entropy over a chunk of logits, with its gradient ---- */

typedef struct {
    uint16_t *logits;
    const int64_t *targets;
    float *losses;
    float *scratch;
    int64_t vocab, ignore;
} entropy_args;

/* Row by row: loss = logsumexp(l) - l[target], and the row replaced by the gradient
   softmax(l) - one_hot(target), rounded once to bf16 (all zero, with loss 0, where the
   target is `ignore`). exp is taken once per logit, into a per-thread fp32 row. */
static void entropy_rows(const void *p, int64_t begin, int64_t end) {
    const entropy_args *a = (const entropy_args *)p;
    const int64_t vocab = a->vocab;
#ifdef _OPENMP
    float *restrict e = a->scratch + (int64_t)omp_get_thread_num() * vocab;
#else
    float *restrict e = a->scratch;
#endif
    for (int64_t row = begin; row < end; row++) {
        uint16_t *restrict l = a->logits + row * vocab;
        const int64_t target = a->targets[row];
        if (target == a->ignore || target < 0 || target >= vocab) {
            a->losses[row] = 0.0f;
            memset(l, 0, (size_t)vocab * sizeof *l);
            continue;
        }
        float top = -INFINITY;
#pragma omp simd reduction(max : top)
        for (int64_t j = 0; j < vocab; j++) {  /* not fmaxf: GCC vectorises that one 3x slower */
            const float v = bf16_to_f32(l[j]);
            top = v > top ? v : top;
        }
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < vocab; j++) {
            e[j] = exp_f32(bf16_to_f32(l[j]) - top);
            sum += e[j];
        }
        const float lse = top + logf(sum), inverse = 1.0f / sum;
        a->losses[row] = lse - bf16_to_f32(l[target]);
        e[target] -= sum;  /* (e - sum) / sum = softmax - 1 at the target */
#pragma omp simd
        for (int64_t j = 0; j < vocab; j++) l[j] = f32_to_bf16(e[j] * inverse);
    }
}

/* logits: rows x vocab bf16, contiguous, replaced by the gradient of the summed loss;
   targets: rows int64; losses: rows fp32 (written); scratch: threads x vocab fp32. */
void hone_cross_entropy(uint16_t *logits, const int64_t *targets, float *losses, float *scratch, int64_t rows,
                        int64_t vocab, int64_t ignore, int threads) {
    entropy_args a = {logits, targets, losses, scratch, vocab, ignore};
    parallel(entropy_rows, &a, rows, threads, 8);
}

/* ---- rotary position embedding, as transformers' apply_rotary_pos_emb ---- */

typedef struct {
    const uint16_t *x, *cos, *sin;
    uint16_t *out;
    int64_t length, heads, dim, sb, sh, sl, cb, cl;
    float sign;
} rotary_args;

/* One token per item, all its heads: out = [x1 c1 - x2 s1, x2 c2 + x1 s2] (sign -1), or
   the transposed map [x1 c1 + x2 s2, x2 c2 - x1 s1] (sign 1, the gradient), with the
   roundings of hone.train.fused._rotate: the product to bf16, then the multiply-add. */
static void rotary_tokens(const void *p, int64_t begin, int64_t end) {
    const rotary_args *a = (const rotary_args *)p;
    const int64_t half = a->dim / 2;
    const int transposed = a->sign > 0.0f;
    for (int64_t item = begin; item < end; item++) {
        const int64_t b = item / a->length, l = item % a->length;
        const uint16_t *restrict c = a->cos + b * a->cb + l * a->cl, *restrict s = a->sin + b * a->cb + l * a->cl;
        const uint16_t *restrict s_first = transposed ? s + half : s;   /* multiplies x2 in the first half */
        const uint16_t *restrict s_second = transposed ? s : s + half;  /* multiplies x1 in the second half */
        for (int64_t h = 0; h < a->heads; h++) {
            const int64_t at = b * a->sb + h * a->sh + l * a->sl;
            const uint16_t *restrict x = a->x + at;
            uint16_t *restrict o = a->out + at;
#pragma omp simd
            for (int64_t d = 0; d < half; d++) {
                const float x1 = bf16_to_f32(x[d]), x2 = bf16_to_f32(x[d + half]);
                const float o1 = round_bf16(x1 * bf16_to_f32(c[d])), o2 = round_bf16(x2 * bf16_to_f32(c[d + half]));
                o[d] = f32_to_bf16(o1 + a->sign * x2 * bf16_to_f32(s_first[d]));
                o[d + half] = f32_to_bf16(o2 - a->sign * x1 * bf16_to_f32(s_second[d]));
            }
        }
    }
}

/* x, out: (batch, heads, length, dim) bf16 with element strides sb, sh, sl (the same for
   both) and unit stride over dim; cos, sin: (batch or 1, length, dim) with strides cb, cl. */
void hone_rotary(const uint16_t *x, const uint16_t *cos, const uint16_t *sin, uint16_t *out, int64_t batch,
                 int64_t heads, int64_t length, int64_t dim, int64_t sb, int64_t sh, int64_t sl, int64_t cb,
                 int64_t cl, float sign, int threads) {
    rotary_args a = {x, cos, sin, out, length, heads, dim, sb, sh, sl, cb, cl, sign};
    parallel(rotary_tokens, &a, batch * length, threads, 32);
}

/* ---- products with a LoRA rank on one side, on AMX tiles ----

   A LoRA step makes a dozen products per layer whose one side is the adapter rank (16-48
   columns): x A^T, g B, and, contracting over the tokens, g^T h and grad_hidden^T x. The
   matmul library runs them at a tenth of its speed on square ones (measured ~150 GFLOP/s
   on 2 cores, ~12% of a step). These compute them on the AMX tile unit directly: bf16
   inputs, fp32 sums, fp32 output; 1.3-2.6x faster (kernels.py). Built only where the
   compiler targets AMX (-march=native on a CPU that has it); hone_amx_ready() says whether
   they are here and the OS lets this process use the tiles. */

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BW__) && defined(__linux__)
#include <immintrin.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

int hone_amx_ready(void) { return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0; }

/* The 16 values at `first` and the 16 at `second` side by side in pairs: first[0], second[0],
   first[1], ... (the tile unit takes bf16 pairs along the summed dimension). */
static inline __m512i interleaved(const uint16_t *first, const uint16_t *second) {
    const __m512i pairs = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                           21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)first)),
                                      _mm256_loadu_si256((const __m256i *)second), 1);
    return _mm512_permutexvar_epi16(pairs, both);
}

/* Byte offsets 0, step, 2 step, ... 15 step: a 32-bit gather over 16 strided pairs. */
static inline __m512i offsets_of(int64_t step) {
    const __m512i lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    return _mm512_mullo_epi32(lanes, _mm512_set1_epi32((int)step));
}

/* Every tile 16 rows of 64 bytes: 16 x 32 bf16 or 16 x 16 fp32. Loaded on each thread that
   uses tiles, released after, as the matmul library does around its own kernels. */
static void tiles_on(void) {
    struct { uint8_t palette, start, reserved[14]; uint16_t bytes[16]; uint8_t rows[16]; } config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int i = 0; i < 8; i++) {
        config.rows[i] = 16;
        config.bytes[i] = 64;
    }
    _tile_loadconfig(&config);
}

/* out (T, R) fp32 = x (T, K) @ w (K, R); x rows `sx` apart; w packed as the tile unit takes
   it (pack_pairs): pairs of k side by side, one 16 x 16-pair tile per 32 k and 16 r.
   Tiles: 0-2 sums, 3 x, 4-6 w. */
typedef struct {
    const uint16_t *x;
    const uint32_t *packed;
    float *out;
    int64_t sx, K, R;
} nn_args;

static void lora_nn_rows(const void *p, int64_t begin, int64_t end) {
    const nn_args *a = (const nn_args *)p;
    const int64_t blocks = a->R / 16;
    tiles_on();
    for (int64_t b = begin; b < end; b++) {  /* 16 rows of x */
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        for (int64_t k = 0; k < a->K / 32; k++) {
            const uint32_t *w = a->packed + k * blocks * 256;
            _tile_loadd(3, a->x + b * 16 * a->sx + k * 32, a->sx * 2);
            _tile_loadd(4, w, 64);
            _tile_dpbf16ps(0, 3, 4);
            if (blocks > 1) {
                _tile_loadd(5, w + 256, 64);
                _tile_dpbf16ps(1, 3, 5);
            }
            if (blocks > 2) {
                _tile_loadd(6, w + 512, 64);
                _tile_dpbf16ps(2, 3, 6);
            }
        }
        float *out = a->out + b * 16 * a->R;
        _tile_stored(0, out, a->R * 4);
        if (blocks > 1) _tile_stored(1, out + 16, a->R * 4);
        if (blocks > 2) _tile_stored(2, out + 32, a->R * 4);
    }
    _tile_release();
}

/* w[k][r] at w + k * sk + r * sr packed for lora_nn_rows: packed[((k / 32) * (R / 16) + r / 16) * 256
   + (k % 32 / 2) * 16 + r % 16] holds the pair (w[k][r], w[k + 1][r]) for even k. */
static void pack_pairs(const uint16_t *w, int64_t sk, int64_t sr, uint32_t *packed, int64_t K, int64_t R) {
    const int64_t blocks = R / 16;
    const __m512i offsets = offsets_of(sr * 2);
    for (int64_t k = 0; k < K; k += 2)
        for (int64_t rb = 0; rb < blocks; rb++) {
            uint32_t *to = packed + ((k / 32) * blocks + rb) * 256 + (k % 32 / 2) * 16;
            const uint16_t *from = w + k * sk + rb * 16 * sr;
            if (sr == 1) {  /* two runs of 16 ranks, interleaved */
                _mm512_storeu_si512((__m512i *)to, interleaved(from, from + sk));
            } else if (sk == 1) {  /* each pair already side by side: one 32-bit gather */
                _mm512_storeu_si512((__m512i *)to, _mm512_i32gather_epi32(offsets, from, 1));
            } else {
                for (int64_t j = 0; j < 16; j++) to[j] = (uint32_t)from[j * sr] | (uint32_t)from[j * sr + sk] << 16;
            }
        }
}

/* T % 16 == 0, K % 32 == 0, R one of 16, 32, 48. 0 when out of memory (nothing done). */
int hone_lora_nn(const uint16_t *x, int64_t sx, const uint16_t *w, int64_t sk, int64_t sr, float *out, int64_t T,
                 int64_t K, int64_t R, int threads) {
    uint32_t *packed = aligned_alloc(64, (size_t)K * R * 2);
    if (packed == NULL) return 0;
    pack_pairs(w, sk, sr, packed, K, R);
    nn_args a = {x, packed, out, sx, K, R};
    parallel(lora_nn_rows, &a, T / 16, threads, 4);
    free(packed);
    return 1;
}

/* out = x^T y, (M, R) fp32, or its transpose (R, M) when `transposed`; x (T, M) with rows sx
   apart, y (T, R): a sum over the T tokens. Computed as y^T x, 16 columns of x at a time:
   y^T is packed in 32-token tiles first, and each 32 x 16 block of x is interleaved into pairs
   of tokens as it is read. Tiles: 0-2 sums, 3, 5, 6 y^T, 4 x. */
typedef struct {
    const uint16_t *x, *yt;
    float *out;
    int64_t sx, T, M, R;
    int transposed;
} tn_args;

static void lora_tn_columns(const void *p, int64_t begin, int64_t end) {
    const tn_args *a = (const tn_args *)p;
    const int64_t blocks = a->R / 16;
    __attribute__((aligned(64))) uint16_t tile[16 * 32];
    __attribute__((aligned(64))) float sums[16 * 16];
    tiles_on();
    for (int64_t c = begin; c < end; c++) {  /* columns 16c .. 16c + 15 of x */
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        for (int64_t t = 0; t < a->T; t += 32) {
            for (int64_t i = 0; i < 16; i++) {
                const uint16_t *row = a->x + (t + 2 * i) * a->sx + c * 16;
                _mm512_store_si512((__m512i *)(tile + i * 32), interleaved(row, row + a->sx));
            }
            const uint16_t *yt = a->yt + t * a->R;
            _tile_loadd(4, tile, 64);
            _tile_loadd(3, yt, 64);
            _tile_dpbf16ps(0, 3, 4);
            if (blocks > 1) {
                _tile_loadd(5, yt + 16 * 32, 64);
                _tile_dpbf16ps(1, 5, 4);
            }
            if (blocks > 2) {
                _tile_loadd(6, yt + 32 * 32, 64);
                _tile_dpbf16ps(2, 6, 4);
            }
        }
        for (int64_t rb = 0; rb < blocks; rb++) {  /* sums: rows r = 16 rb + i, columns 16 c + j */
            if (a->transposed) {
                float *out = a->out + rb * 16 * a->M + c * 16;
                if (rb == 0) _tile_stored(0, out, a->M * 4);
                if (rb == 1) _tile_stored(1, out, a->M * 4);
                if (rb == 2) _tile_stored(2, out, a->M * 4);
                continue;
            }
            if (rb == 0) _tile_stored(0, sums, 64);
            if (rb == 1) _tile_stored(1, sums, 64);
            if (rb == 2) _tile_stored(2, sums, 64);
            for (int64_t i = 0; i < 16; i++)
                for (int64_t j = 0; j < 16; j++) a->out[(c * 16 + j) * a->R + rb * 16 + i] = sums[i * 16 + j];
        }
    }
    _tile_release();
}

/* y (T, R), rows sy apart, as y^T in 32-token tiles: yt[(t / 32) * R * 32 + r * 32 + t % 32]. Two
   ranks at a time: a 32-bit gather over 16 tokens takes (y[t][r], y[t][r + 1]) for each. */
static void pack_transposed(const uint16_t *y, int64_t sy, uint16_t *yt, int64_t T, int64_t R) {
    const __m512i offsets = offsets_of(sy * 2);
    __m512i even = _mm512_set_epi16(62, 60, 58, 56, 54, 52, 50, 48, 46, 44, 42, 40, 38, 36, 34, 32, 30, 28, 26, 24, 22,
                                    20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    __m512i odd = _mm512_add_epi16(even, _mm512_set1_epi16(1));
    for (int64_t t = 0; t < T; t += 32)
        for (int64_t r = 0; r < R; r += 2) {
            const uint16_t *from = y + t * sy + r;
            __m512i low = _mm512_i32gather_epi32(offsets, from, 1);            /* tokens t .. t + 15 */
            __m512i high = _mm512_i32gather_epi32(offsets, from + 16 * sy, 1); /* tokens t + 16 .. t + 31 */
            uint16_t *to = yt + t * R + r * 32;
            _mm512_storeu_si512((__m512i *)to, _mm512_permutex2var_epi16(low, even, high));
            _mm512_storeu_si512((__m512i *)(to + 32), _mm512_permutex2var_epi16(low, odd, high));
        }
}

/* T % 32 == 0, M % 16 == 0, R one of 16, 32, 48. 0 when out of memory (nothing done). */
int hone_lora_tn(const uint16_t *x, int64_t sx, const uint16_t *y, int64_t sy, float *out, int64_t T, int64_t M,
                 int64_t R, int transposed, int threads) {
    uint16_t *yt = aligned_alloc(64, (size_t)T * R * 2);
    if (yt == NULL) return 0;
    pack_transposed(y, sy, yt, T, R);
    tn_args a = {x, yt, out, sx, T, M, R, transposed};
    parallel(lora_tn_columns, &a, M / 16, threads, 4);
    free(yt);
    return 1;
}
#else
int hone_amx_ready(void) { return 0; }
int hone_lora_nn(const uint16_t *x, int64_t sx, const uint16_t *w, int64_t sk, int64_t sr, float *out, int64_t T,
                 int64_t K, int64_t R, int threads) { return 0; }
int hone_lora_tn(const uint16_t *x, int64_t sx, const uint16_t *y, int64_t sy, float *out, int64_t T, int64_t M,
                 int64_t R, int transposed, int threads) { return 0; }
#endif
