/* A weight row times a float32 vector, reading the row once: the inner loop of int8_matvec.c and decode_step.c.

       dot_float(w, x, n) = sum_i w[i] * x[i]             w: n float32 weights
       dot_bf16(w, x, n)  = sum_i float(w[i]) * x[i]      w: n bfloat16 weights (the top 16 bits of a float32)
       dot_int8(w, x, n)  = sum_i float(w[i]) * x[i]      w: n int8 weights

   Decoding uses each weight for one multiply-add, so these loops wait for memory, not for arithmetic; what
   they must not do is add work per weight or let the loads wait on each other. With AVX2: four sums of 8
   floats side by side, so that no addition waits for the one before it; int8 and bfloat16 weights become
   floats in two instructions per 8 (int8: sign-extend 8 bytes to 8 int32, convert those to floats; bfloat16:
   widen 8 halves to 32 bits, shift them 16 places up), and the int8 bytes 2 KiB ahead are requested before
   they are needed. Elsewhere plain loops do the same sums and the compiler vectorizes what it can. Compiled
   with -DDOT_PLAIN, the plain loops are used everywhere (the tests check them on machines with AVX2 too). */
#ifndef DOT_H
#define DOT_H
#include <stdint.h>
#include <string.h>

static inline float bf16_to_float(uint16_t h) {  /* a bfloat16's 16 bits, as the top half of a float32's */
    const uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

#if defined(__AVX2__) && defined(__FMA__) && !defined(DOT_PLAIN)
#include <immintrin.h>
#define DOT_VERSION "avx2"

/* Ask for the bytes 2 KiB after p now, so that they are on their way while these are multiplied (in this row
   or the next ones: the rows follow each other in memory). Only a hint: no fault past the end of the weights
   (the address is computed as an integer, since C forbids a pointer that far past an array). int8 matrices
   alone went from 17.9-21.5 to 19.7-24.1 GB/s here with it (1 and 4 KiB ahead: less). */
static inline void prefetch_ahead(const void *p) {
    _mm_prefetch((const char *)((uintptr_t)p + 2048), _MM_HINT_T0);
}

/* 8 int8 weights -> 8 floats */
static inline __m256 load_8_weights(const int8_t *w) {
    __m128i bytes = _mm_loadl_epi64((const __m128i *)w);     /* 8 bytes, the rest of the register zero */
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));  /* -> 8 int32 (sign kept) -> 8 floats */
}

/* 8 bfloat16 weights -> 8 floats: a bfloat16 is the top half of a float32's bits */
static inline __m256 load_8_bf16(const uint16_t *w) {
    __m128i halves = _mm_loadu_si128((const __m128i *)w);                       /* 8 x 16 bits */
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));  /* -> 8 x 32, << 16 */
}

/* the 4 x 8 sums -> one float */
static inline float add_lanes(__m256 s0, __m256 s1, __m256 s2, __m256 s3) {
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    float sum = 0;
    for (int l = 0; l < 8; l++) sum += lanes[l];
    return sum;
}

static inline float dot_int8(const int8_t *w, const float *x, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {  /* 32 bytes: half a cache line */
        prefetch_ahead(w + i);
        s0 = _mm256_fmadd_ps(load_8_weights(w + i), _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(load_8_weights(w + i + 8), _mm256_loadu_ps(x + i + 8), s1);
        s2 = _mm256_fmadd_ps(load_8_weights(w + i + 16), _mm256_loadu_ps(x + i + 16), s2);
        s3 = _mm256_fmadd_ps(load_8_weights(w + i + 24), _mm256_loadu_ps(x + i + 24), s3);
    }
    float sum = add_lanes(s0, s1, s2, s3);
    for (; i < n; i++) sum += (float)w[i] * x[i];  /* the last n % 32 weights */
    return sum;
}

/* Unlike int8's, float32 weights are not asked for ahead: the processor's own prefetcher keeps up with their
   rows, and the hints only took load slots (a 124M token in decode_step.c: 43.7-46.3 tokens/s with them,
   51.6-52.7 without, the two alternating in one process, twice). */
static inline float dot_float(const float *w, const float *x, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {  /* 128 bytes: two cache lines */
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), s3);
    }
    float sum = add_lanes(s0, s1, s2, s3);
    for (; i < n; i++) sum += w[i] * x[i];  /* the last n % 32 weights */
    return sum;
}

static inline float dot_bf16(const uint16_t *w, const float *x, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {  /* 64 bytes: one cache line */
        s0 = _mm256_fmadd_ps(load_8_bf16(w + i), _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(load_8_bf16(w + i + 8), _mm256_loadu_ps(x + i + 8), s1);
        s2 = _mm256_fmadd_ps(load_8_bf16(w + i + 16), _mm256_loadu_ps(x + i + 16), s2);
        s3 = _mm256_fmadd_ps(load_8_bf16(w + i + 24), _mm256_loadu_ps(x + i + 24), s3);
    }
    float sum = add_lanes(s0, s1, s2, s3);
    for (; i < n; i++) sum += bf16_to_float(w[i]) * x[i];  /* the last n % 32 weights */
    return sum;
}

#else
#define DOT_VERSION "plain"

/* weight i of a row in one of the three formats (the other two pointers NULL) */
static inline float weight_at(const float *wf, const uint16_t *wb, const int8_t *w8, int64_t i) {
    return wf ? wf[i] : wb ? bf16_to_float(wb[i]) : (float)w8[i];
}

/* sum_i weight_i * x[i]: 8 sums side by side, like one vector register, then the last n % 8 weights. Inlined
   with two of the pointers NULL, the tests on them go. */
static inline float plain_dot(const float *wf, const uint16_t *wb, const int8_t *w8, const float *x, int64_t n) {
    float lanes[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) lanes[l] += weight_at(wf, wb, w8, i + l) * x[i + l];
    float sum = 0;
    for (int l = 0; l < 8; l++) sum += lanes[l];
    for (; i < n; i++) sum += weight_at(wf, wb, w8, i) * x[i];
    return sum;
}

static inline float dot_float(const float *w, const float *x, int64_t n) { return plain_dot(w, 0, 0, x, n); }
static inline float dot_bf16(const uint16_t *w, const float *x, int64_t n) { return plain_dot(0, w, 0, x, n); }
static inline float dot_int8(const int8_t *w, const float *x, int64_t n) { return plain_dot(0, 0, w, x, n); }

#endif
#endif
