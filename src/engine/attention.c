/* Causal self-attention for CPU training, forward and backward: the kernel behind engine/fused_attention.py.

   For one head, with the queries, keys and values of T positions as rows of Q, K, V (T x hs):
       S = Q K^T / sqrt(hs),   P = softmax(S) row by row over keys j <= i,   Y = P V
   and backward, given dY (the gradient of the loss with respect to Y):
       dV = P^T dY,   dP = dY V^T,   dS = P * (dP - D) / sqrt(hs) with D_i = dY_i . Y_i,   dQ = dS K,   dK = dS^T Q
   (dS is the softmax's gradient: P_ij (dP_ij - sum_j' P_ij' dP_ij'), and sum_j' P_ij' dP_ij' = dY_i . Y_i.)
   The forward pass keeps each row's log-sum-exp L_i = log sum_j e^S_ij, so the backward pass rebuilds P as
   e^(S - L) without keeping a T x T matrix per head between the two.

   Why our own. At the small heads this project trains on a CPU (hs = 32, T = 128), PyTorch's fused
   attention and the copies around it took about a quarter of a training step. Here the data comes
   straight from the layer's qkv tensor (B, T, 3C) and the output goes straight to (B, T, C): no copies to
   split the heads and put them together again, either way. Each head is one task for one thread, its rows
   copied into small buffers that stay in the cache; the products are blocks of R rows x W columns kept in
   vector registers (`mm` below); the future (keys j > i) is skipped in whole blocks and set to 0 inside
   the last one. Each head is computed alone, in a fixed order, so the result does not depend on the
   number of threads.

   A NaN or infinity in a row's scores makes that row's output NaN (the training loop's check for a
   broken step relies on it). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "exp_float.h"

#define R 6   /* rows of a block: R x 2 sums + 2 vectors of b + 1 number of a = 15 of AVX2's 16 registers */
#define W 16  /* columns of a block: two vectors of 8 floats */
#define UP(x) (((x) + W - 1) / W * W)  /* rounded up to whole blocks of columns */
#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* 8 floats that the compiler maps to one AVX register (or two SSE ones); aligned(4): loads from any float */
typedef float v8 __attribute__((vector_size(32), aligned(4)));

/* c[r][n] = sum over k < K of a[r * a_row + k * a_col] b[k * ldb + n], for rows r < R and columns n < N (a
   multiple of W). With a_col = 1, a is read row by row (A B); with a_row = 1, column by column (A^T B). The
   R x W sums stay in 12 registers while k runs: each step loads 2 vectors of b and R numbers of a, then
   does 2R vector multiply-adds. Why 6 rows (the shape of BLIS's AVX2 kernel): with 4, GCC keeps b in
   memory and loads it again for every multiply-add, which halved the speed of this loop here (47 against
   90 GFLOP/s on one core at hs = 32). */
static void mm(const float *restrict a, int64_t a_row, int64_t a_col, const float *restrict b, int64_t ldb,
               float *restrict c, int64_t ldc, int K, int N) {
    for (int n0 = 0; n0 < N; n0 += W) {
        v8 sum[R][2] = {{{0}}};
        for (int k = 0; k < K; k++) {
            v8 b0 = *(const v8 *)(b + k * ldb + n0), b1 = *(const v8 *)(b + k * ldb + n0 + 8);
            #pragma GCC unroll 6
            for (int r = 0; r < R; r++) {
                float ar = a[r * a_row + k * a_col];
                sum[r][0] += ar * b0;
                sum[r][1] += ar * b1;
            }
        }
        #pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            *(v8 *)(c + r * ldc + n0) = sum[r][0];
            *(v8 *)(c + r * ldc + n0 + 8) = sum[r][1];
        }
    }
}

/* One head's T rows of hs floats, `stride` apart in memory, into a (Tp, hsp) buffer with zeros around. */
static void gather(const float *x, int64_t stride, int T, int hs, float *out, int Tp, int hsp) {
    memset(out, 0, sizeof(float) * Tp * hsp);
    for (int t = 0; t < T; t++) memcpy(out + t * hsp, x + t * stride, sizeof(float) * hs);
}

/* out rows t < T (`stride` apart) = the first hs floats of x's rows (hsp apart) */
static void scatter(const float *x, int hsp, int T, int hs, float *out, int64_t stride) {
    for (int t = 0; t < T; t++) memcpy(out + t * stride, x + t * hsp, sizeof(float) * hs);
}

static void transpose(const float *x, int rows, int cols, float *xt) {  /* x (rows, cols) -> xt (cols, rows) */
    for (int c = 0; c < cols; c++)
        for (int r = 0; r < rows; r++) xt[c * rows + r] = x[r * cols + c];
}

/* Row i of the scores, already scaled (keys j <= i), into e^(s_j - m) with m the row's largest score, in
   place; keys i < j < n get 0. Returns the sum of the row's exponentials, l, and sets L_i = m + log l, the
   log-sum-exp (softmax = the row / l). A NaN or infinite score makes l and L_i NaN. */
static float exp_row(float *restrict s, int i, int n, float *lse) {
    float m = -INFINITY, finite = 0.0f;  /* finite stays 0 unless a score is NaN or infinite */
    #pragma omp simd reduction(max:m) reduction(+:finite)
    for (int j = 0; j <= i; j++) {
        m = s[j] > m ? s[j] : m;
        finite += s[j] * 0.0f;
    }
    float l = 0.0f;
    #pragma omp simd reduction(+:l)
    for (int j = 0; j <= i; j++) l += s[j] = exp_float(s[j] - m);
    for (int j = i + 1; j < n; j++) s[j] = 0.0f;
    if (finite != 0.0f) l = NAN;
    *lse = m + logf(l);
    return l;
}

/* Row i of P and dS, for keys j <= i, from p[j] = q_i . k_j and ds[j] = dY_i . v_j; keys i < j < n get 0. */
static void gradient_row(float *restrict p, float *restrict ds, int i, int n, float scale, float lse, float D) {
    for (int j = 0; j <= i; j++) {
        const float pj = exp_float(p[j] * scale - lse);
        p[j] = pj;
        ds[j] = pj * (ds[j] - D) * scale;
    }
    for (int j = i + 1; j < n; j++) p[j] = ds[j] = 0.0f;
}

/* qkv (B, T, 3C) with C = n_head * hs: row (b, t) holds q, then k, then v, each head hs floats in order.
   Writes y (B, T, C), the heads side by side, and lse (B, n_head, T). */
void attention_forward(const float *qkv, float *y, float *lse, int64_t B, int T, int n_head, int hs, int threads) {
    const int64_t C = (int64_t)n_head * hs, row = 3 * C;
    const int Tp = UP((T + R - 1) / R * R), hsp = UP(hs);  /* whole blocks of rows, then of columns */
    const float scale = 1.0f / sqrtf((float)hs);
    #pragma omp parallel num_threads(threads)
    {
        const size_t rows = sizeof(float) * Tp * hsp;
        float *Q = malloc(rows), *Kh = malloc(rows), *Kt = malloc(rows), *V = malloc(rows), *Y = malloc(rows);
        float *S = malloc(sizeof(float) * R * Tp);
        #pragma omp for schedule(static)
        for (int64_t bh = 0; bh < B * n_head; bh++) {
            const int64_t b = bh / n_head, h = bh % n_head;
            const float *head = qkv + b * T * row + h * hs;  /* this head's q in row 0; its k is C further, v 2C */
            gather(head, row, T, hs, Q, Tp, hsp);
            gather(head + C, row, T, hs, Kh, Tp, hsp);
            gather(head + 2 * C, row, T, hs, V, Tp, hsp);
            transpose(Kh, Tp, hsp, Kt);  /* (hsp, Tp): the rows of S come out W keys at a time */
            for (int t = 0; t < T * hsp; t++) Q[t] *= scale;  /* then S = Q K^T comes out scaled */
            for (int i0 = 0; i0 < T; i0 += R) {  /* rows i0 .. i0 + R - 1 see keys 0 .. i0 + R - 1 at most */
                const int n = UP(i0 + R);
                float l[R];
                mm(Q + i0 * hsp, hsp, 1, Kt, Tp, S, Tp, hsp, n);  /* S = Q K^T / sqrt(hs), these rows */
                for (int r = 0; r < R; r++) {
                    if (i0 + r < T) l[r] = exp_row(S + r * Tp, i0 + r, n, lse + bh * T + i0 + r);
                    else memset(S + r * Tp, 0, sizeof(float) * n), l[r] = 1.0f;  /* rows past T: padding */
                }
                mm(S, Tp, 1, V, hsp, Y + i0 * hsp, hsp, MIN(i0 + R, T), hsp);  /* e^(S - m) V, these rows */
                for (int r = 0; r < R; r++)  /* ... / l: P V */
                    for (int d = 0; d < hsp; d++) Y[(i0 + r) * hsp + d] /= l[r];
            }
            scatter(Y, hsp, T, hs, y + b * T * C + h * hs, C);
        }
        free(Q), free(Kh), free(Kt), free(V), free(Y), free(S);
    }
}

/* The gradient dqkv (B, T, 3C), laid out as qkv, from qkv, the forward pass's y and lse, and dy (B, T, C). */
void attention_backward(const float *qkv, const float *y, const float *lse, const float *dy, float *dqkv,
                        int64_t B, int T, int n_head, int hs, int threads) {
    const int64_t C = (int64_t)n_head * hs, row = 3 * C;
    const int Tp = UP((T + R - 1) / R * R), hsp = UP(hs);  /* whole blocks of rows, then of columns */
    const float scale = 1.0f / sqrtf((float)hs);
    #pragma omp parallel num_threads(threads)
    {
        const size_t rows = sizeof(float) * Tp * hsp, square = sizeof(float) * Tp * Tp;
        float *Q = malloc(rows), *Kh = malloc(rows), *Kt = malloc(rows), *V = malloc(rows), *Vt = malloc(rows);
        float *dY = malloc(rows), *G = malloc(rows), *P = malloc(square), *dS = malloc(square);
        #pragma omp for schedule(static)
        for (int64_t bh = 0; bh < B * n_head; bh++) {
            const int64_t b = bh / n_head, h = bh % n_head;
            const float *head = qkv + b * T * row + h * hs, *yh = y + b * T * C + h * hs;
            float *dhead = dqkv + b * T * row + h * hs;
            gather(head, row, T, hs, Q, Tp, hsp);
            gather(head + C, row, T, hs, Kh, Tp, hsp);
            gather(head + 2 * C, row, T, hs, V, Tp, hsp);
            gather(dy + b * T * C + h * hs, C, T, hs, dY, Tp, hsp);
            transpose(Kh, Tp, hsp, Kt);
            transpose(V, Tp, hsp, Vt);
            /* P and dS row by row, and dQ = dS K */
            for (int i0 = 0; i0 < T; i0 += R) {
                const int n = UP(i0 + R);
                mm(Q + i0 * hsp, hsp, 1, Kt, Tp, P + i0 * Tp, Tp, hsp, n);  /* q_i . k_j */
                mm(dY + i0 * hsp, hsp, 1, Vt, Tp, dS + i0 * Tp, Tp, hsp, n);  /* dY_i . v_j */
                for (int r = 0; r < R; r++) {
                    const int i = i0 + r;
                    if (i >= T) {  /* rows past T: padding */
                        memset(P + i * Tp, 0, sizeof(float) * n), memset(dS + i * Tp, 0, sizeof(float) * n);
                        continue;
                    }
                    float D = 0.0f;
                    #pragma omp simd reduction(+:D)
                    for (int d = 0; d < hs; d++) D += dY[i * hsp + d] * yh[i * C + d];
                    gradient_row(P + i * Tp, dS + i * Tp, i, n, scale, lse[bh * T + i], D);
                }
                mm(dS + i0 * Tp, Tp, 1, Kh, hsp, G + i0 * hsp, hsp, MIN(i0 + R, T), hsp);  /* dQ = dS K */
            }
            scatter(G, hsp, T, hs, dhead, row);
            /* dK = dS^T Q and dV = P^T dY: key j gets a share from every query i >= j. Rows j0.. of P and dS are
               read in columns j0 .. j0 + R - 1 only, which the loop above wrote for every row i >= j0 (it writes
               each row up to n = UP(i0 + R) > j0 + R - 1, zeros past i): nothing uninitialised is read. */
            for (int j0 = 0; j0 < T; j0 += R)
                mm(dS + j0 * Tp + j0, 1, Tp, Q + j0 * hsp, hsp, G + j0 * hsp, hsp, T - j0, hsp);
            scatter(G, hsp, T, hs, dhead + C, row);
            for (int j0 = 0; j0 < T; j0 += R)
                mm(P + j0 * Tp + j0, 1, Tp, dY + j0 * hsp, hsp, G + j0 * hsp, hsp, T - j0, hsp);
            scatter(G, hsp, T, hs, dhead + 2 * C, row);
        }
        free(Q), free(Kh), free(Kt), free(V), free(Vt), free(dY), free(G), free(P), free(dS);
    }
}
