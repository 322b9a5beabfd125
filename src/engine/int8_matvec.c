/* int8 weights times a few vectors, reading each weight once: the kernel behind engine/int8_matvec.py.

       y[b, j] = scale[j] * sum_i float(W[j, i]) * x[b, i]      W (out, in) int8, x (batch, in) float32

   Decoding multiplies one vector by every weight matrix, one multiply-add per weight, so the time goes into
   reading W: one byte per weight here. The only other work is turning each byte into a float. With AVX2
   that is two instructions for 8 weights (sign-extend 8 bytes to 8 int32, convert those to 8 floats), then
   one fused multiply-add; four sums run side by side, so that no addition waits for the one before it, and
   the bytes 2 KiB ahead are requested before they are needed.
   Elsewhere the plain loop does the same sums and the compiler vectorizes what it can.

   x stays float32: nothing but the weights is rounded. OpenMP shares the rows of W between `threads`
   threads (PyTorch's count); each y[b, j] is one thread's sum, in a fixed order, so the result does not
   depend on the number of threads. Compiled with -DINT8_MATVEC_PLAIN, the plain loop is used everywhere
   (the tests check it on machines with AVX2 too). */
#include <stdint.h>

#if defined(__AVX2__) && defined(__FMA__) && !defined(INT8_MATVEC_PLAIN)
#include <immintrin.h>
#define VERSION "avx2"

/* 8 int8 weights -> 8 floats */
static inline __m256 load_8_weights(const int8_t *w) {
    __m128i bytes = _mm_loadl_epi64((const __m128i *)w);     /* 8 bytes, the rest of the register zero */
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));  /* -> 8 int32 (sign kept) -> 8 floats */
}

/* sum_i float(w[i]) * x[i] */
static float dot(const int8_t *w, const float *x, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;  /* 4 x 8 sums */
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        /* Ask for the bytes 2 KiB ahead (in this row or the next ones: rows follow each other in memory) now,
           so that they are on their way while these are multiplied. Only a hint: no fault past the end of W
           (the address is computed as an integer, since C forbids a pointer that far past an array). The
           matrices alone went from 17.9-21.5 to 19.7-24.1 GB/s here (1 and 4 KiB ahead: less). */
        _mm_prefetch((const char *)((uintptr_t)(w + i) + 2048), _MM_HINT_T0);
        s0 = _mm256_fmadd_ps(load_8_weights(w + i), _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(load_8_weights(w + i + 8), _mm256_loadu_ps(x + i + 8), s1);
        s2 = _mm256_fmadd_ps(load_8_weights(w + i + 16), _mm256_loadu_ps(x + i + 16), s2);
        s3 = _mm256_fmadd_ps(load_8_weights(w + i + 24), _mm256_loadu_ps(x + i + 24), s3);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    float sum = 0;
    for (int l = 0; l < 8; l++) sum += lanes[l];
    for (; i < n; i++) sum += (float)w[i] * x[i];  /* the last n % 32 weights */
    return sum;
}

#else
#define VERSION "plain"

/* sum_i float(w[i]) * x[i] */
static float dot(const int8_t *w, const float *x, int64_t n) {
    float lanes[8] = {0};  /* 8 sums side by side, like one vector register */
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) lanes[l] += (float)w[i + l] * x[i + l];
    float sum = 0;
    for (int l = 0; l < 8; l++) sum += lanes[l];
    for (; i < n; i++) sum += (float)w[i] * x[i];  /* the last n % 8 weights */
    return sum;
}

#endif

void int8_matvec(const int8_t *weight, const float *scale, const float *x, float *y, int64_t batch,
                 int64_t out, int64_t in, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t j = 0; j < out; j++)
        for (int64_t b = 0; b < batch; b++)  /* row j of W is read from memory once, then from the cache */
            y[b * out + j] = scale[j] * dot(weight + j * in, x + b * in, in);
}

/* Which of the two versions was compiled: "avx2" or "plain" (for the tests and the benchmark). */
const char *int8_matvec_version(void) { return VERSION; }
