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

/* ---- attention: the widened operands of hone.engine.attention's matmul backward ---- */

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
   roundings of hone.engine.fused._rotate: the product to bf16, then the multiply-add. */
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

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BW__) && defined(__AVX512BF16__) && \
    defined(__linux__)
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
   uses tiles, released after, as the matmul library does around its own kernels. The
   configuration is a constant object: GCC treats ldtilecfg's operand as unread, and a
   configuration built on the stack was seen dropped as dead stores (rows and bytes left 0,
   the first tile load then faults) once tiles_on was not inlined. */
static const struct {
    uint8_t palette, start, reserved[14];
    uint16_t bytes[16];
    uint8_t rows[16];
} TILES = {1, 0, {0}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};

static void tiles_on(void) { _tile_loadconfig(&TILES); }

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

/* ---- causal attention within each example of a packed row, on AMX tiles ----

   The attention of a packed row is many small causal problems (one per example and head,
   ~100-800 tokens, head dim 32 or 64). Through the CPU flash kernel and batched products
   it ran at ~65 GFLOP/s on 2 cores, a third of a step. Here each (example, kv head) is one
   work item, longest first over the threads: keys and values are packed once for the tile
   unit, then for every 32-query block the scores, their softmax and the products with the
   values (forward) or the four gradient products (backward) run on tiles, only over the
   keys the block can see. Queries, keys and values are read in place from the row (any
   token and head strides); nothing is padded except inside the per-thread scratch. */

typedef struct {
    const uint16_t *q, *k, *v, *o, *grad;
    int64_t sq, hq, sk, hk, sv, hv, so, ho, sg, hg; /* token and head strides, in elements */
    uint16_t *out, *dq, *dk, *dv;                   /* (T, H, D) or (T, H_kv, D), contiguous */
    float *lse;                                     /* (H, T): log-sum-exp of each query's scores */
    const int64_t *bounds;                          /* examples + 1 token offsets */
    int64_t examples, tokens, heads, kv_heads, dim;
    float scale;
} attention_args;

/* Per-thread scratch, sized for the longest example (`span` tokens rounded up to 32), carved
   out of one allocation (`memory`). */
typedef struct {
    void *memory;
    uint32_t *keys, *values, *keys_by_token; /* packed K and V */
    float *scores, *grads, *rows, *grad_k, *grad_v;
    uint16_t *probs, *grad_scores, *block, *grad_block, *block_t, *grad_block_t;
    uint32_t *probs_pairs, *grad_pairs;
    float *delta, *lse, *inverse; /* per query of a block */
} attention_scratch;

static int scratch_alloc(attention_scratch *w, int64_t span, int64_t D) {
    const size_t packed = (size_t)span * D * 2, square = (size_t)32 * span, block = (size_t)32 * D;
    struct { void **at; size_t bytes; } parts[] = {
        {(void **)&w->keys, packed},             {(void **)&w->values, packed},
        {(void **)&w->keys_by_token, packed},    {(void **)&w->scores, square * 4},
        {(void **)&w->grads, square * 4},        {(void **)&w->rows, block * 4},
        {(void **)&w->grad_k, D * span * 4},     {(void **)&w->grad_v, D * span * 4},
        {(void **)&w->probs, square * 2},        {(void **)&w->grad_scores, square * 2},
        {(void **)&w->block, block * 2},         {(void **)&w->grad_block, block * 2},
        {(void **)&w->block_t, block * 2},       {(void **)&w->grad_block_t, block * 2},
        {(void **)&w->probs_pairs, square * 2},  {(void **)&w->grad_pairs, square * 2},
        {(void **)&w->delta, 32 * 4},            {(void **)&w->lse, 32 * 4},
        {(void **)&w->inverse, 32 * 4}};
    const size_t count = sizeof parts / sizeof parts[0];
    size_t total = 0;
    for (size_t i = 0; i < count; i++) total += (parts[i].bytes + 63) / 64 * 64; /* each part 64-byte aligned */
    w->memory = aligned_alloc(64, total);
    if (w->memory == NULL) return 0;
    for (size_t i = 0, offset = 0; i < count; i++) {
        *parts[i].at = (char *)w->memory + offset;
        offset += (parts[i].bytes + 63) / 64 * 64;
    }
    return 1;
}

/* Rows [0, L) of x (s apart) for products that sum over the head dim (scores = q k^T): per
   block of 16 tokens and 32 dims, one tile of 16 dim pairs x 16 tokens. Tokens >= L: 0. */
static void pack_by_dim(const uint16_t *x, int64_t s, int64_t L, int64_t Lp, int64_t D, uint32_t *to) {
    const int64_t chunks = D / 32;
    const __m512i offsets = offsets_of(s * 2);
    for (int64_t j = 0; j < Lp / 16; j++)
        for (int64_t c = 0; c < chunks; c++) {
            uint32_t *tile = to + (j * chunks + c) * 256;
            const uint16_t *from = x + j * 16 * s + c * 32;
            if ((j + 1) * 16 <= L) {
                for (int64_t r = 0; r < 16; r++)
                    _mm512_store_si512((__m512i *)(tile + r * 16), _mm512_i32gather_epi32(offsets, from + 2 * r, 1));
                continue;
            }
            for (int64_t n = 0; n < 16; n++)
                for (int64_t r = 0; r < 16; r++)
                    tile[r * 16 + n] = j * 16 + n < L ? (uint32_t)from[n * s + 2 * r] | (uint32_t)from[n * s + 2 * r + 1] << 16 : 0;
        }
}

/* Rows [0, L) of x for products that sum over the tokens (probabilities @ v): per block of 32
   tokens and 16 dims, one tile of 16 token pairs x 16 dims. Tokens >= L: 0. */
static void pack_by_token(const uint16_t *x, int64_t s, int64_t L, int64_t Lp, int64_t D, uint32_t *to) {
    const int64_t tiles = D / 16;
    for (int64_t t = 0; t < Lp / 32; t++)
        for (int64_t r = 0; r < 16; r++) {
            const int64_t a = t * 32 + 2 * r;
            for (int64_t dt = 0; dt < tiles; dt++) {
                uint32_t *row = to + ((t * tiles + dt) * 16 + r) * 16;
                const uint16_t *first = x + a * s + dt * 16;
                if (a + 1 < L) {
                    _mm512_store_si512((__m512i *)row, interleaved(first, first + s));
                    continue;
                }
                for (int64_t n = 0; n < 16; n++) row[n] = a < L ? first[n] : 0;
            }
        }
}

/* Rows [0, 32) of a row-major bf16 matrix (ld apart), columns [0, 16 blocks), as the tile unit
   takes it for a sum over those 32 rows: per block of 16 columns, 16 row pairs x 16 columns. */
static void pack_query_pairs(const uint16_t *m, int64_t ld, int64_t blocks, uint32_t *to) {
    for (int64_t j = 0; j < blocks; j++)
        for (int64_t r = 0; r < 16; r++)
            _mm512_store_si512((__m512i *)(to + (j * 16 + r) * 16),
                               interleaved(m + 2 * r * ld + j * 16, m + (2 * r + 1) * ld + j * 16));
}

/* out[i][16 j + n] = sum_d a[i][d] key[16 j + n][d] for 16 rows of a (lda apart), key blocks
   [0, blocks) of a pack_by_dim pack; fp32 rows ld apart. Tiles 4, 7: a; 5: keys; 6: sums. */
static void rows_by_keys(const uint16_t *a, int64_t lda, const uint32_t *keys, int64_t blocks, int64_t D, float *out,
                         int64_t ld) {
    _tile_loadd(4, a, lda * 2);
    if (D == 64) _tile_loadd(7, a + 32, lda * 2);
    for (int64_t j = 0; j < blocks; j++) {
        _tile_zero(6);
        _tile_loadd(5, keys + j * (D / 32) * 256, 64);
        _tile_dpbf16ps(6, 4, 5);
        if (D == 64) {
            _tile_loadd(5, keys + (j * 2 + 1) * 256, 64);
            _tile_dpbf16ps(6, 7, 5);
        }
        _tile_stored(6, out + j * 16, ld * 4);
    }
}

/* out (16 x D fp32) = p @ x for 16 rows of p (bf16, ldp apart) over tokens [0, 32 chunks) and x
   packed by pack_by_token. Tiles 0-3: sums; 4: p; 5: x. */
static void rows_by_tokens(const uint16_t *p, int64_t ldp, const uint32_t *x, int64_t chunks, int64_t D, float *out) {
    const int64_t tiles = D / 16;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t t = 0; t < chunks; t++) {
        const uint32_t *xt = x + t * tiles * 256;
        _tile_loadd(4, p + t * 32, ldp * 2);
        _tile_loadd(5, xt, 64);
        _tile_dpbf16ps(0, 4, 5);
        _tile_loadd(5, xt + 256, 64);
        _tile_dpbf16ps(1, 4, 5);
        if (tiles == 4) {
            _tile_loadd(5, xt + 512, 64);
            _tile_dpbf16ps(2, 4, 5);
            _tile_loadd(5, xt + 768, 64);
            _tile_dpbf16ps(3, 4, 5);
        }
    }
    _tile_stored(0, out, D * 4);
    _tile_stored(1, out + 16, D * 4);
    if (tiles == 4) {
        _tile_stored(2, out + 32, D * 4);
        _tile_stored(3, out + 48, D * 4);
    }
}

/* acc[d][key] (fp32, ld apart) += sum over 32 queries of at[d][query] pairs[query][key], for
   at the (D x 32) transpose of a query block and pairs from pack_query_pairs over `blocks`
   16-key blocks. Tiles 0-3: at; 5: pairs; 6: sums. */
static void sum_over_queries(const uint16_t *at, const uint32_t *pairs, int64_t blocks, int64_t D, float *acc,
                             int64_t ld) {
    const int64_t tiles = D / 16;
    _tile_loadd(0, at, 64);
    _tile_loadd(1, at + 16 * 32, 64);
    if (tiles == 4) {
        _tile_loadd(2, at + 32 * 32, 64);
        _tile_loadd(3, at + 48 * 32, 64);
    }
    for (int64_t j = 0; j < blocks; j++) {
        _tile_loadd(5, pairs + j * 256, 64);
        float *c = acc + j * 16;
        _tile_loadd(6, c, ld * 4);
        _tile_dpbf16ps(6, 0, 5);
        _tile_stored(6, c, ld * 4);
        _tile_loadd(6, c + 16 * ld, ld * 4);
        _tile_dpbf16ps(6, 1, 5);
        _tile_stored(6, c + 16 * ld, ld * 4);
        if (tiles == 4) {
            _tile_loadd(6, c + 32 * ld, ld * 4);
            _tile_dpbf16ps(6, 2, 5);
            _tile_stored(6, c + 32 * ld, ld * 4);
            _tile_loadd(6, c + 48 * ld, ld * 4);
            _tile_dpbf16ps(6, 3, 5);
            _tile_stored(6, c + 48 * ld, ld * 4);
        }
    }
}

/* 32 rows of x (s apart) from `first` into a (32 x D) block, rows >= valid zero; and its
   (D x 32) transpose when `t` is given. */
static void copy_block(const uint16_t *x, int64_t s, int64_t valid, int64_t D, uint16_t *block, uint16_t *t) {
    for (int64_t i = 0; i < 32; i++) {
        if (i < valid)
            memcpy(block + i * D, x + i * s, D * 2);
        else
            memset(block + i * D, 0, D * 2);
    }
    if (t != NULL)
        for (int64_t d = 0; d < D; d++)
            for (int64_t i = 0; i < 32; i++) t[d * 32 + i] = block[i * D + d];
}

/* exp(x) for 16 fp32 lanes, as 2^(x log2 e): the fraction's power by a degree-7 polynomial
   (relative error ~1e-7 plus the rounding of x log2 e, ~4e-6 at |x| = 80), scaled by
   2^round(..) with vscalefps; 0 below -87. */
static inline __m512 exp16(__m512 x) {
    const __m512 t = _mm512_mul_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(1.44269504088896341f));
    const __m512 k = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(t, k);
    __m512 p = _mm512_set1_ps(1.5252734e-5f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.5403530e-4f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3333558e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504109e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022651e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, k);
}

static inline __mmask16 lanes_below(int64_t n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1); }

static inline void store_bf16(uint16_t *to, __mmask16 mask, __m512 x) {
    _mm256_mask_storeu_epi16(to, mask, (__m256i)_mm512_cvtneps_pbh(x));
}

/* The unnormalised probabilities of a 32-query block (queries first.. of an example of L
   tokens) from its raw scores (rows ld apart): exp(scale s - max) over keys 0..query as bf16
   rows `probs` (zero beyond, up to the block's last key; zero rows past L); each query's
   log-sum-exp, and 1 / its sum in `inverse` (the output rows are scaled by it). */
static void softmax_block(const float *scores, int64_t ld, int64_t first, int64_t L, float scale, uint16_t *probs,
                          float *lse, float *inverse) {
    const int64_t seen = first + 32;
    const __m512 scales = _mm512_set1_ps(scale);
    for (int64_t i = 0; i < 32; i++) {
        const int64_t query = first + i;
        const float *s = scores + i * ld;
        uint16_t *p = probs + i * ld;
        if (query >= L) {
            memset(p, 0, seen * 2);
            continue;
        }
        __m512 top = _mm512_set1_ps(-INFINITY), sum = _mm512_setzero_ps();
        for (int64_t j = 0; j <= query; j += 16) {
            const __mmask16 m = lanes_below(query + 1 - j);
            top = _mm512_mask_max_ps(top, m, top, _mm512_maskz_loadu_ps(m, s + j));
        }
        const float shift = _mm512_reduce_max_ps(top) * scale;
        const __m512 shifts = _mm512_set1_ps(shift);
        for (int64_t j = 0; j <= query; j += 16) {
            const __mmask16 m = lanes_below(query + 1 - j);
            const __m512 e = _mm512_maskz_mov_ps(m, exp16(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(m, s + j), scales, shifts)));
            sum = _mm512_add_ps(sum, e);
            store_bf16(p + j, m, e);
        }
        const float total = _mm512_reduce_add_ps(sum);
        memset(p + query + 1, 0, (seen - query - 1) * 2);
        lse[query] = shift + logf(total);
        inverse[i] = 1.0f / total;
    }
}

/* The backward's probabilities p = exp(scale s - lse) and score gradients scale p (dp - delta)
   of a 32-query block, as bf16 rows (ld apart) over the keys each query sees, zero beyond. */
static void gradient_block(attention_scratch *w, int64_t ld, int64_t first, int64_t valid, float scale) {
    const int64_t seen = first + 32;
    const __m512 scales = _mm512_set1_ps(scale);
    for (int64_t i = 0; i < 32; i++) {
        const float *s = w->scores + i * ld, *dp = w->grads + i * ld;
        uint16_t *p = w->probs + i * ld, *ds = w->grad_scores + i * ld;
        const int64_t last = i < valid ? first + i : -1;
        const __m512 lse = _mm512_set1_ps(w->lse[i]), delta = _mm512_set1_ps(w->delta[i]);
        for (int64_t j = 0; j <= last; j += 16) {
            const __mmask16 m = lanes_below(last + 1 - j);
            const __m512 e = exp16(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(m, s + j), scales, lse));
            store_bf16(p + j, m, e);
            const __m512 g = _mm512_mul_ps(_mm512_mul_ps(e, _mm512_sub_ps(_mm512_maskz_loadu_ps(m, dp + j), delta)), scales);
            store_bf16(ds + j, m, g);
        }
        memset(p + last + 1, 0, (seen - last - 1) * 2);
        memset(ds + last + 1, 0, (seen - last - 1) * 2);
    }
}

static float row_dot(const uint16_t *x, const uint16_t *y, int64_t D) {
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t d = 0; d < D; d++) dot += bf16_to_f32(x[d]) * bf16_to_f32(y[d]);
    return dot;
}

/* rows (fp32, D wide), each times multiplier[i] when given -> bf16 rows `stride` apart. */
static void store_rows(const float *rows, const float *multiplier, int64_t count, int64_t D, uint16_t *to,
                       int64_t stride) {
    for (int64_t i = 0; i < count; i++) {
        const __m512 times = _mm512_set1_ps(multiplier != NULL ? multiplier[i] : 1.0f);
        for (int64_t d = 0; d < D; d += 16)
            store_bf16(to + i * stride + d, 0xffff, _mm512_mul_ps(_mm512_loadu_ps(rows + i * D + d), times));
    }
}

/* columns [0, L) of a (D x ld) fp32 matrix -> bf16 rows `stride` apart: to[key][d] = m[d][key]. */
static void store_transposed(const float *m, int64_t ld, int64_t L, int64_t D, uint16_t *to, int64_t stride) {
    for (int64_t key = 0; key < L; key++)
        for (int64_t d = 0; d < D; d++) to[key * stride + d] = f32_to_bf16(m[d * ld + key]);
}

static void attention_forward_item(const attention_args *a, attention_scratch *w, int64_t e, int64_t hk) {
    const int64_t D = a->dim, start = a->bounds[e], L = a->bounds[e + 1] - start, Lp = (L + 31) / 32 * 32;
    const int64_t groups = a->heads / a->kv_heads;
    pack_by_dim(a->k + start * a->sk + hk * a->hk, a->sk, L, Lp, D, w->keys);
    pack_by_token(a->v + start * a->sv + hk * a->hv, a->sv, L, Lp, D, w->values);
    for (int64_t h = hk * groups; h < (hk + 1) * groups; h++) {
        const uint16_t *q = a->q + start * a->sq + h * a->hq;
        for (int64_t first = 0; first < L; first += 32) {
            const int64_t seen = first + 32; /* keys this block can see, rounded up to 32 */
            copy_block(q + first * a->sq, a->sq, L - first, D, w->block, NULL);
            rows_by_keys(w->block, D, w->keys, seen / 16 - 1, D, w->scores, Lp);
            rows_by_keys(w->block + 16 * D, D, w->keys, seen / 16, D, w->scores + 16 * Lp, Lp);
            softmax_block(w->scores, Lp, first, L, a->scale, w->probs, a->lse + h * a->tokens + start, w->inverse);
            for (int64_t half = 0; half < 2; half++) {
                rows_by_tokens(w->probs + half * 16 * Lp, Lp, w->values, seen / 32, D, w->rows + half * 16 * D);
            }
            store_rows(w->rows, w->inverse, L - first < 32 ? L - first : 32, D, a->out + ((start + first) * a->heads + h) * D, a->heads * D);
        }
    }
}

static void attention_backward_item(const attention_args *a, attention_scratch *w, int64_t e, int64_t hk) {
    const int64_t D = a->dim, start = a->bounds[e], L = a->bounds[e + 1] - start, Lp = (L + 31) / 32 * 32;
    const int64_t groups = a->heads / a->kv_heads;
    const uint16_t *k = a->k + start * a->sk + hk * a->hk, *v = a->v + start * a->sv + hk * a->hv;
    pack_by_dim(k, a->sk, L, Lp, D, w->keys);
    pack_by_dim(v, a->sv, L, Lp, D, w->values);
    pack_by_token(k, a->sk, L, Lp, D, w->keys_by_token);
    memset(w->grad_k, 0, (size_t)D * Lp * 4);
    memset(w->grad_v, 0, (size_t)D * Lp * 4);
    for (int64_t h = hk * groups; h < (hk + 1) * groups; h++) {
        const uint16_t *q = a->q + start * a->sq + h * a->hq, *o = a->o + start * a->so + h * a->ho;
        const uint16_t *g = a->grad + start * a->sg + h * a->hg;
        for (int64_t first = 0; first < L; first += 32) {
            const int64_t seen = first + 32, valid = L - first < 32 ? L - first : 32;
            copy_block(q + first * a->sq, a->sq, valid, D, w->block, w->block_t);
            copy_block(g + first * a->sg, a->sg, valid, D, w->grad_block, w->grad_block_t);
            for (int64_t i = 0; i < valid; i++) {
                w->delta[i] = row_dot(o + (first + i) * a->so, w->grad_block + i * D, D);
                w->lse[i] = a->lse[h * a->tokens + start + first + i];
            }
            for (int64_t half = 0; half < 2; half++) {
                rows_by_keys(w->block + half * 16 * D, D, w->keys, seen / 16 - 1 + half, D, w->scores + half * 16 * Lp, Lp);
                rows_by_keys(w->grad_block + half * 16 * D, D, w->values, seen / 16 - 1 + half, D, w->grads + half * 16 * Lp, Lp);
            }
            gradient_block(w, Lp, first, valid, a->scale);
            for (int64_t half = 0; half < 2 && half * 16 < valid; half++) {
                rows_by_tokens(w->grad_scores + half * 16 * Lp, Lp, w->keys_by_token, seen / 32, D, w->rows + half * 16 * D);
            }
            store_rows(w->rows, NULL, valid, D, a->dq + ((start + first) * a->heads + h) * D, a->heads * D);
            pack_query_pairs(w->probs, Lp, seen / 16, w->probs_pairs);
            pack_query_pairs(w->grad_scores, Lp, seen / 16, w->grad_pairs);
            sum_over_queries(w->grad_block_t, w->probs_pairs, seen / 16, D, w->grad_v, Lp);
            sum_over_queries(w->block_t, w->grad_pairs, seen / 16, D, w->grad_k, Lp);
        }
    }
    store_transposed(w->grad_k, Lp, L, D, a->dk + (start * a->kv_heads + hk) * D, a->kv_heads * D);
    store_transposed(w->grad_v, Lp, L, D, a->dv + (start * a->kv_heads + hk) * D, a->kv_heads * D);
}

static inline int64_t length_of(const attention_args *a, int64_t e) { return a->bounds[e + 1] - a->bounds[e]; }

/* Every (example, kv head), longest examples first, over the threads; 0 when out of memory. */
static int attention_run(const attention_args *a, int backward, int threads) {
    const int64_t items = a->examples * a->kv_heads;
    int64_t *order = malloc(items * sizeof *order);
    if (order == NULL) return 0;
    int64_t span = 0;
    for (int64_t i = 0; i < items; i++) { /* insertion sort by example length, longest first */
        const int64_t length = length_of(a, i / a->kv_heads);
        int64_t n = i;
        for (; n > 0 && length_of(a, order[n - 1] / a->kv_heads) < length; n--) order[n] = order[n - 1];
        order[n] = i;
        span = length > span ? length : span;
    }
    span = (span + 31) / 32 * 32;
    if (threads > items) threads = (int)items;
    int failed = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads > 0 ? threads : 1) reduction(| : failed)
#endif
    {
        attention_scratch w = {NULL};
        const int ready = scratch_alloc(&w, span, a->dim); /* a thread without scratch skips its items: failed */
        failed |= !ready;
        if (ready) tiles_on();
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t i = 0; i < items; i++) {
            if (!ready) continue;
            if (backward)
                attention_backward_item(a, &w, order[i] / a->kv_heads, order[i] % a->kv_heads);
            else
                attention_forward_item(a, &w, order[i] / a->kv_heads, order[i] % a->kv_heads);
        }
        if (ready) _tile_release();
        free(w.memory);
    }
    free(order);
    return !failed;
}

/* out (T, H, D) and lse (H, T) of causal attention within each example [bounds[e], bounds[e + 1])
   of a row of T tokens; q (T, H, D), k and v (T, H_kv, D) at the given token and head strides.
   D 32 or 64. 0 when out of memory (then nothing can be relied on). */
int hone_attention_forward(const uint16_t *q, const uint16_t *k, const uint16_t *v, int64_t sq, int64_t hq, int64_t sk,
                           int64_t hk, int64_t sv, int64_t hv, uint16_t *out, float *lse, const int64_t *bounds,
                           int64_t examples, int64_t tokens, int64_t heads, int64_t kv_heads, int64_t dim, float scale,
                           int threads) {
    attention_args a = {q, k, v, NULL, NULL, sq, hq, sk, hk, sv, hv, 0, 0, 0, 0, out, NULL, NULL, NULL, lse, bounds,
                        examples, tokens, heads, kv_heads, dim, scale};
    return attention_run(&a, 0, threads);
}

/* The gradients dq (T, H, D), dk, dv (T, H_kv, D) of hone_attention_forward, given its out and
   lse and the output gradient `grad` (T, H, D) at its strides. */
int hone_attention_backward(const uint16_t *q, const uint16_t *k, const uint16_t *v, const uint16_t *o,
                            const uint16_t *grad, int64_t sq, int64_t hq, int64_t sk, int64_t hk, int64_t sv,
                            int64_t hv, int64_t so, int64_t ho, int64_t sg, int64_t hg, uint16_t *dq, uint16_t *dk,
                            uint16_t *dv, const float *lse, const int64_t *bounds, int64_t examples, int64_t tokens,
                            int64_t heads, int64_t kv_heads, int64_t dim, float scale, int threads) {
    attention_args a = {q, k, v, o, grad, sq, hq, sk, hk, sv, hv, so, ho, sg, hg, NULL, dq, dk, dv, (float *)lse,
                        bounds, examples, tokens, heads, kv_heads, dim, scale};
    return attention_run(&a, 1, threads);
}
#else
int hone_amx_ready(void) { return 0; }
int hone_lora_nn(const uint16_t *x, int64_t sx, const uint16_t *w, int64_t sk, int64_t sr, float *out, int64_t T,
                 int64_t K, int64_t R, int threads) { return 0; }
int hone_lora_tn(const uint16_t *x, int64_t sx, const uint16_t *y, int64_t sy, float *out, int64_t T, int64_t M,
                 int64_t R, int transposed, int threads) { return 0; }
int hone_attention_forward(const uint16_t *q, const uint16_t *k, const uint16_t *v, int64_t sq, int64_t hq, int64_t sk,
                           int64_t hk, int64_t sv, int64_t hv, uint16_t *out, float *lse, const int64_t *bounds,
                           int64_t examples, int64_t tokens, int64_t heads, int64_t kv_heads, int64_t dim, float scale,
                           int threads) { return 0; }
int hone_attention_backward(const uint16_t *q, const uint16_t *k, const uint16_t *v, const uint16_t *o,
                            const uint16_t *grad, int64_t sq, int64_t hq, int64_t sk, int64_t hk, int64_t sv,
                            int64_t hv, int64_t so, int64_t ho, int64_t sg, int64_t hg, uint16_t *dq, uint16_t *dk,
                            uint16_t *dv, const float *lse, const int64_t *bounds, int64_t examples, int64_t tokens,
                            int64_t heads, int64_t kv_heads, int64_t dim, float scale, int threads) { return 0; }
#endif
