/* int8 weights times a few vectors, reading each weight once: the kernel behind engine/int8_matvec.py.

       y[b, j] = scale[j] * sum_i float(W[j, i]) * x[b, i]      W (out, in) int8, x (batch, in) float32

   Decoding multiplies one vector by every weight matrix, one multiply-add per weight, so the time goes into
   reading W: one byte per weight here. The only other work is turning each byte into a float. The row's
   sum is dot.h's `dot` (shared with decode_step.c): with AVX2, two instructions for 8 weights
   (sign-extend 8 bytes to 8 int32, convert those to 8 floats), then one fused multiply-add; four sums run
   side by side, so that no addition waits for the one before it, and the bytes 2 KiB ahead are requested
   before they are needed. Elsewhere a plain loop does the same sums and the compiler vectorizes what it can.

   x stays float32: nothing but the weights is rounded. OpenMP shares the rows of W between `threads`
   threads (PyTorch's count); each y[b, j] is one thread's sum, in a fixed order, so the result does not
   depend on the number of threads. Compiled with -DDOT_PLAIN, the plain loop is used everywhere (the tests
   check it on machines with AVX2 too). */
#include <stdint.h>

#include "dot.h"

void int8_matvec(const int8_t *weight, const float *scale, const float *x, float *y, int64_t batch,
                 int64_t out, int64_t in, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t j = 0; j < out; j++)
        for (int64_t b = 0; b < batch; b++)  /* row j of W is read from memory once, then from the cache */
            y[b * out + j] = scale[j] * dot(weight + j * in, DOT_INT8, x + b * in, in);
}

/* Which of the two versions was compiled: "avx2" or "plain" (for the tests and the benchmark). */
const char *int8_matvec_version(void) { return DOT_VERSION; }
