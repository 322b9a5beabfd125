/* A weight row times a float32 vector, reading the row once: the inner loop of int8_matvec.c and decode_step.c.

       dot(w, format, x, n) = sum_i float(w[i]) * x[i]      w: n weights, stored as `format`:
                                                            float32, bfloat16 (the top 16 bits of a float32)
                                                            or int8

   Decoding uses each weight for one multiply-add, so this loop waits for memory, not for arithmetic; what it
   must not do is add work per weight or let the loads wait on each other. With AVX2: four sums of 8 floats
   side by side, so that no addition waits for the one before it; int8 and bfloat16 weights become floats in
   two instructions per 8 (int8: sign-extend 8 bytes to 8 int32, convert those to floats; bfloat16: widen 8
   halves to 32 bits, shift them 16 places up), and the int8 bytes 2 KiB ahead are requested before they are
   needed. Elsewhere a plain loop does the same sums and the compiler vectorizes what it can. Compiled with
   -DDOT_PLAIN, the plain loop is used everywhere (the tests check it on machines with AVX2 too).

   Callers pass `format` as a constant (DOT_INT8, ...): the function is inlined, and the tests on the format
   inside the loop are decided when compiling, leaving one straight loop per format. */
#ifndef DOT_H
#define DOT_H
#include <stdint.h>
#include <string.h>

enum dot_format { DOT_FLOAT32, DOT_BFLOAT16, DOT_INT8 };

static inline float bf16_to_float(uint16_t h) {  /* a bfloat16's 16 bits, as the top half of a float32's */
    const uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* weight i of a row stored as `format` */
static inline float weight_at(const void *w, int format, int64_t i) {
    return format == DOT_INT8 ? (float)((const int8_t *)w)[i]
         : format == DOT_BFLOAT16 ? bf16_to_float(((const uint16_t *)w)[i])
         : ((const float *)w)[i];
}

#if defined(__AVX2__) && defined(__FMA__) && !defined(DOT_PLAIN)
#include <immintrin.h>
#define DOT_VERSION "avx2"

/* weights i..i+7 of a row stored as `format`, as 8 floats */
static inline __m256 load_8(const void *w, int format, int64_t i) {
    if (format == DOT_INT8) {
        __m128i bytes = _mm_loadl_epi64((const __m128i *)((const int8_t *)w + i));  /* 8 bytes, the rest 0 */
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));  /* -> 8 int32 (sign kept) -> 8 floats */
    }
    if (format == DOT_BFLOAT16) {
        __m128i halves = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));  /* 8 x 16 bits */
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));  /* -> 8 x 32, << 16 */
    }
    return _mm256_loadu_ps((const float *)w + i);
}

static inline float dot(const void *w, int format, const float *x, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        /* int8: ask for the bytes 2 KiB ahead now (in this row or the next ones: the rows follow each other in
           memory), so that they are on their way while these are multiplied; only a hint, no fault past the
           end of the weights (the address is computed as an integer: C forbids a pointer that far past an
           array). The int8 matrices alone went from 17.9-21.5 to 19.7-24.1 GB/s here (1 and 4 KiB ahead:
           less). float32 and bfloat16 are not asked for ahead: the processor's own prefetcher keeps up with
           their rows, and the hints only took load slots (a 124M float32 token in decode_step.c: 43.7-46.3
           tokens/s with them, 51.6-52.7 without, the two alternating in one process, twice). */
        if (format == DOT_INT8) _mm_prefetch((const char *)((uintptr_t)((const int8_t *)w + i) + 2048), _MM_HINT_T0);
        s0 = _mm256_fmadd_ps(load_8(w, format, i), _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(load_8(w, format, i + 8), _mm256_loadu_ps(x + i + 8), s1);
        s2 = _mm256_fmadd_ps(load_8(w, format, i + 16), _mm256_loadu_ps(x + i + 16), s2);
        s3 = _mm256_fmadd_ps(load_8(w, format, i + 24), _mm256_loadu_ps(x + i + 24), s3);
    }
    float lanes[8], sum = 0;
    _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (int l = 0; l < 8; l++) sum += lanes[l];
    for (; i < n; i++) sum += weight_at(w, format, i) * x[i];  /* the last n % 32 weights */
    return sum;
}

#else
#define DOT_VERSION "plain"

static inline float dot(const void *w, int format, const float *x, int64_t n) {
    float lanes[8] = {0};  /* 8 sums side by side, like one vector register */
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) lanes[l] += weight_at(w, format, i + l) * x[i + l];
    float sum = 0;
    for (int l = 0; l < 8; l++) sum += lanes[l];
    for (; i < n; i++) sum += weight_at(w, format, i) * x[i];  /* the last n % 8 weights */
    return sum;
}

#endif
#endif
