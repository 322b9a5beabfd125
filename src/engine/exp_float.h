/* e^x in float32 from multiply-adds only, shared by gelu.c and attention.c.

   The C library's expf is a function call per element that the compiler cannot vectorize; this one is a
   few multiply-adds that it can (and that gelu.c also writes out with AVX2 instructions). Within about
   1 ulp of float32 for x in [-87, 88], clamped there (e^-87 ~ 1.6e-38, the smallest normal float is
   1.2e-38): e^x = 2^n e^r with n = round(x / ln 2) and |r| <= ln(2) / 2, where e^r is its Taylor series up
   to r^7 (the next term is below 1e-8 relative), and 2^n is built from its bits. A NaN becomes e^-87:
   the callers decide what a NaN input gives. */
#ifndef EXP_FLOAT_H
#define EXP_FLOAT_H
#include <stdint.h>
#include <string.h>

#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693145751953125f  /* ln 2 in two parts: n * LN2_HI is exact for the n here */
#define LN2_LO 1.428606765330187045e-06f

static inline float exp_float(float x) {
    x = x > -87.0f ? (x < 88.0f ? x : 88.0f) : -87.0f;  /* a NaN becomes -87: no undefined cast below */
    float n = (x * LOG2E + 12582912.0f) - 12582912.0f;  /* round to nearest: adding 1.5 * 2^23 drops the fraction */
    float r = (x - n * LN2_HI) - n * LN2_LO;
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;  /* the float 2^n: n + 127 in the exponent's bits */
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return p * two_n;
}
#endif
