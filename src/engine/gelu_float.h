/* GPT-2's GELU of one float, shared by gelu.c (training) and decode_step.c (generating); gelu.c explains it:

       gelu(x) = 0.5 x (1 + tanh(z / 2)) = x sigmoid(z) = x / (1 + e^-z),    z = 2 sqrt(2 / pi) (x + 0.044715 x^3)

   where z > 87, gelu(x) = x; where z < -87, 0 (the true values, to float32; e^-z would overflow there). */
#ifndef GELU_FLOAT_H
#define GELU_FLOAT_H
#include "exp_float.h"

#define GELU_K 1.5957691216057308f  /* 2 sqrt(2 / pi) */
#define GELU_A 0.044715f

static inline float gelu_one(float x) {
    float z = GELU_K * x * (1.0f + GELU_A * x * x), y = x / (1.0f + exp_float(-z));
    return z > 87.0f ? x : (z < -87.0f ? 0.0f : y);
}
#endif
