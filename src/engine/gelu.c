/* GPT-2's GELU and its derivative, one pass over memory each: the kernel behind engine/fused_gelu.py.

       gelu(x) = 0.5 x (1 + tanh(z / 2)) = x sigmoid(z),      z = 2 sqrt(2 / pi) (x + 0.044715 x^3)

   (1 + tanh(z / 2)) / 2 is the sigmoid of z, which needs one exponential: e^-z. PyTorch computes tanh and
   exp with library routines that, on the CPUs here, take several times longer than the multiply-adds
   around them, and a backward pass written in PyTorch operations would go over memory once per operation.
   Here each element is read once and written once, and e^x is a short polynomial: with AVX2, 8 floats at
   a time, four groups of 8 side by side so that no instruction waits for the one before it (left to the
   compiler, the same loop ran about 4x slower in a one-off test on the Zen 3 machine: each vector waited on
   the last); elsewhere a plain loop, which the compiler vectorizes as it can.

   The derivative, for the backward pass (dy: the gradient of the loss with respect to gelu(x)):
       d gelu / dx = s + x s (1 - s) z',      s = sigmoid(z),   z' = 2 sqrt(2 / pi) (1 + 3 * 0.044715 x^2)
   and since 1 - s = s e^-z:    d gelu / dx = s (1 + x s e^-z z')

   Far from 0 the formulas are not used: where z > 87, gelu(x) = x and its slope is 1; where z < -87, both
   are 0 (the true values, to float32; e^-z would overflow there), and the gradient is dy * 0, so that a NaN
   or infinite dy still gives a NaN. A NaN stays a NaN, in x or in dy (the training loop's check for a broken
   step relies on it). OpenMP shares the elements
   between `threads` threads (PyTorch's count); each element is computed alone, so the result does not
   depend on the number of threads. Compiled with -DGELU_PLAIN, the plain loop is used everywhere (the tests
   check it on machines with AVX2 too). */
#include "exp_float.h"
#include "gelu_float.h"  /* gelu_one(x), one element (decode_step.c uses it too) */

#define K GELU_K  /* 2 sqrt(2 / pi) */
#define A GELU_A  /* 0.044715 */

/* One element's dy * gelu'(x), z = K (x + A x^3), with s (1 - s) written s * s e^-z: 1 - s itself would
   lose the digits that matter where s is near 1. */
static inline float gelu_backward_one(float x, float dy) {
    float z = K * x * (1.0f + A * x * x), e = exp_float(-z), s = 1.0f / (1.0f + e);
    float dx = dy * s * (1.0f + x * s * e * K * (1.0f + 3.0f * A * x * x));
    return z > 87.0f ? dy : (z < -87.0f ? dy * 0.0f : dx);
}

#if defined(__AVX2__) && defined(__FMA__) && !defined(GELU_PLAIN)
#include <immintrin.h>
#define VERSION "avx2"
#define BLOCK 32  /* floats per step of the loop: four vectors of 8 */

/* exp_float for 8 floats */
static inline __m256 exp_8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);  /* x - n LN2_HI */
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

/* z = K (x + A x^3) for 8 floats */
static inline __m256 z_8(__m256 x) {
    __m256 cubic = _mm256_fmadd_ps(_mm256_mul_ps(x, x), _mm256_set1_ps(A), _mm256_set1_ps(1.0f));  /* 1 + A x^2 */
    return _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(K)), cubic);
}

/* where z > 87: high; where z < -87: low; elsewhere (a NaN too): value */
static inline __m256 far_ends_8(__m256 z, __m256 value, __m256 high, __m256 low) {
    __m256 above = _mm256_cmp_ps(z, _mm256_set1_ps(87.0f), _CMP_GT_OQ);
    __m256 below = _mm256_cmp_ps(z, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
    return _mm256_blendv_ps(_mm256_blendv_ps(value, high, above), low, below);
}

static inline __m256 gelu_8(__m256 x) {
    __m256 z = z_8(x);
    __m256 y = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), exp_8(_mm256_sub_ps(_mm256_setzero_ps(), z))));
    return far_ends_8(z, y, x, _mm256_setzero_ps());
}

static inline __m256 gelu_backward_8(__m256 x, __m256 dy) {
    __m256 one = _mm256_set1_ps(1.0f), z = z_8(x), e = exp_8(_mm256_sub_ps(_mm256_setzero_ps(), z));
    __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, e));
    __m256 slope = _mm256_fmadd_ps(_mm256_mul_ps(x, x), _mm256_set1_ps(3.0f * A), one);  /* 1 + 3 A x^2 */
    __m256 t = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(x, s), e), _mm256_mul_ps(slope, _mm256_set1_ps(K)));
    return far_ends_8(z, _mm256_mul_ps(_mm256_mul_ps(dy, s), _mm256_add_ps(one, t)), dy,
                      _mm256_mul_ps(dy, _mm256_setzero_ps()));
}

static void forward_block(const float *x, float *y) {
    __m256 a = gelu_8(_mm256_loadu_ps(x)), b = gelu_8(_mm256_loadu_ps(x + 8));
    __m256 c = gelu_8(_mm256_loadu_ps(x + 16)), d = gelu_8(_mm256_loadu_ps(x + 24));
    _mm256_storeu_ps(y, a), _mm256_storeu_ps(y + 8, b), _mm256_storeu_ps(y + 16, c), _mm256_storeu_ps(y + 24, d);
}

static void backward_block(const float *x, const float *dy, float *dx) {
    __m256 a = gelu_backward_8(_mm256_loadu_ps(x), _mm256_loadu_ps(dy));
    __m256 b = gelu_backward_8(_mm256_loadu_ps(x + 8), _mm256_loadu_ps(dy + 8));
    __m256 c = gelu_backward_8(_mm256_loadu_ps(x + 16), _mm256_loadu_ps(dy + 16));
    __m256 d = gelu_backward_8(_mm256_loadu_ps(x + 24), _mm256_loadu_ps(dy + 24));
    _mm256_storeu_ps(dx, a), _mm256_storeu_ps(dx + 8, b), _mm256_storeu_ps(dx + 16, c), _mm256_storeu_ps(dx + 24, d);
}

#else
#define VERSION "plain"
#define BLOCK 8

static void forward_block(const float *x, float *y) {
    for (int l = 0; l < BLOCK; l++) y[l] = gelu_one(x[l]);
}

static void backward_block(const float *x, const float *dy, float *dx) {
    for (int l = 0; l < BLOCK; l++) dx[l] = gelu_backward_one(x[l], dy[l]);
}

#endif

/* Whole blocks shared between the threads, then the last n % BLOCK elements one at a time. */
void gelu_forward(const float *x, float *y, int64_t n, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t b = 0; b < n / BLOCK; b++) forward_block(x + b * BLOCK, y + b * BLOCK);
    for (int64_t i = n / BLOCK * BLOCK; i < n; i++) y[i] = gelu_one(x[i]);
}

void gelu_backward(const float *x, const float *dy, float *dx, int64_t n, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t b = 0; b < n / BLOCK; b++) backward_block(x + b * BLOCK, dy + b * BLOCK, dx + b * BLOCK);
    for (int64_t i = n / BLOCK * BLOCK; i < n; i++) dx[i] = gelu_backward_one(x[i], dy[i]);
}

/* Which of the two versions was compiled: "avx2" or "plain" (for the tests and the benchmark). */
const char *gelu_version(void) { return VERSION; }
