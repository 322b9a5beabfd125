/* One new token through GPT-2 in one C call: the decoding step behind engine/decode_step.py.

   Why. Generating a token runs the model on one position: four matrix-vector products per block, and small
   operations around them. The products read every weight once and wait for memory; everything else is a
   few thousand numbers. In PyTorch each of the ~150 small operations, and each product, is a call that costs
   microseconds of Python and dispatch; the step compiled whole (engine/decode.py) fuses the small ones, but
   a product with int8 weights stays a call of its own through PyTorch's dispatcher (49 of them for GPT-2
   124M), and the compiled step itself costs a minute to compile. Here the whole step is one C function.

   The step, for the token at position pos (model.py's blocks with a KV cache, for one position):

       x = wte[token] + wpe[pos]                                   (for each of B texts, all at position pos)
       for each block:  h = ln_1(x);   q, k, v = c_attn(h);   k and v go into the cache at pos
                        y = softmax(q . k_j / sqrt(hs), j = 0..pos) . v_j,  for each head
                        x = x + attn.c_proj(y);   x = x + mlp.c_proj(gelu(mlp.c_fc(ln_2(x))))
       logits = lm_head(ln_f(x))

   The weights are the model's own tensors, read in place: float32, bfloat16 (engine/matvec.py's streamed
   weights), or int8 with a scale per output row (engine/quantize.py). Each product's row is dot.h's `dot`,
   the loop int8_matvec.c uses too.

   Threads. The step is one OpenMP parallel region: each product shares its rows between the threads
   (`omp for`, after which every thread waits for the others), and each text's head of attention and each
   text's layer norm (C numbers) is one thread's. Every number is one thread's sum, in a fixed order, so the
   result does not depend on the number of threads. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dot.h"
#include "exp_float.h"
#include "gelu_float.h"

/* The model, as engine/decode_step.py lays it out (ctypes structures of the same fields, in the same order). */
typedef struct {
    const void *weight;  /* (out, in), stored as `format` */
    const float *scale;  /* int8: each row's scale (engine/quantize.py); else NULL */
    const float *bias;   /* or NULL */
    int format;          /* dot.h's DOT_FLOAT32, DOT_BFLOAT16 or DOT_INT8 */
} Linear;
typedef struct { const float *weight, *bias; } Norm;
typedef struct {
    Norm ln_1;
    Linear c_attn, attn_proj;
    Norm ln_2;
    Linear c_fc, mlp_proj;
    float *k, *v;  /* this block's cache: (B, n_head, block_size, hs) each */
} Block;
typedef struct {
    int n_layer, n_head, d_model, block_size, vocab_size;
    const float *wte, *wpe;  /* (vocab_size, d_model), (block_size, d_model) */
    const Block *h;          /* n_layer blocks */
    Norm ln_f;
    Linear lm_head;
} Model;

enum then { STORE, ADD, GELU };  /* what a product does with W x + b: y = it, y += it, y = gelu(it) */

/* y[b, j] = W[j] . x[b] + bias[j] for j < out and the B rows of x (B, in), this thread's share of the rows of W,
   then `then`. Row j of W is read from memory once, then from the cache for the other texts. */
static void linear(const Linear *L, const float *x, float *y, int B, int out, int in, enum then then) {
    #pragma omp for schedule(static)
    for (int j = 0; j < out; j++)
        for (int b = 0; b < B; b++) {
            const int64_t row = (int64_t)j * in;
            const float *xb = x + (int64_t)b * in;
            /* the format spelled out as a constant for each call: each becomes its own straight loop (dot.h) */
            float s = L->format == DOT_INT8 ? L->scale[j] * dot((const int8_t *)L->weight + row, DOT_INT8, xb, in)
                    : L->format == DOT_BFLOAT16 ? dot((const uint16_t *)L->weight + row, DOT_BFLOAT16, xb, in)
                    : dot((const float *)L->weight + row, DOT_FLOAT32, xb, in);
            if (L->bias) s += L->bias[j];
            float *out_bj = y + (int64_t)b * out + j;
            *out_bj = then == ADD ? *out_bj + s : then == GELU ? gelu_one(s) : s;
        }
}

/* y = (x - mean(x)) / sqrt(var(x) + 1e-5) * weight + bias, over the C numbers of each of x's B rows, a row
   per thread */
static void layer_norm(const Norm *n, const float *x, float *y, int B, int C) {
    #pragma omp for schedule(static)
    for (int b = 0; b < B; b++) {
        const float *xb = x + (int64_t)b * C;
        float *yb = y + (int64_t)b * C;
        float mean = 0.0f, var = 0.0f;
        for (int i = 0; i < C; i++) mean += xb[i];
        mean /= C;
        for (int i = 0; i < C; i++) var += (xb[i] - mean) * (xb[i] - mean);
        const float inv = 1.0f / sqrtf(var / C + 1e-5f);
        for (int i = 0; i < C; i++) yb[i] = (xb[i] - mean) * inv * n->weight[i] + n->bias[i];
    }
}

/* One head: its k and v (hs numbers each) into the cache at pos, then y = softmax(q . k_j / sqrt(hs)) . v_j
   over the keys j = 0..pos. keys, values: the head's (block_size, hs) cache; s: pos + 1 floats of room. */
static void attend(const float *q, const float *k, const float *v, float *keys, float *values, int pos, int hs,
                   float *s, float *y) {
    memcpy(keys + (int64_t)pos * hs, k, sizeof(float) * hs);
    memcpy(values + (int64_t)pos * hs, v, sizeof(float) * hs);
    const float scale = 1.0f / sqrtf((float)hs);
    float m = -INFINITY;  /* the largest score, subtracted before e^x so that none overflows */
    for (int j = 0; j <= pos; j++) {
        float dot = 0.0f;
        #pragma omp simd reduction(+:dot)
        for (int d = 0; d < hs; d++) dot += q[d] * keys[(int64_t)j * hs + d];
        s[j] = dot * scale;
        m = s[j] > m ? s[j] : m;
    }
    float l = 0.0f;
    #pragma omp simd reduction(+:l)
    for (int j = 0; j <= pos; j++) l += s[j] = exp_float(s[j] - m);
    for (int d = 0; d < hs; d++) y[d] = 0.0f;
    for (int j = 0; j <= pos; j++) {
        const float p = s[j] / l;
        for (int d = 0; d < hs; d++) y[d] += p * values[(int64_t)j * hs + d];
    }
}

/* The logits (B, vocab_size) of the tokens after tokens[0..B-1], B texts that are all at position pos <
   block_size; writes their keys and values into the cache at pos. */
void decode_step(const Model *m, const int64_t *tokens, int B, int pos, float *logits, int threads) {
    const int C = m->d_model, nh = m->n_head, hs = C / nh, T = m->block_size;
    const size_t row = sizeof(float) * B * C;
    float *x = malloc(row), *h = malloc(row), *y = malloc(row), *qkv = malloc(3 * row), *f = malloc(4 * row);
    float *scores = malloc(sizeof(float) * B * nh * T);  /* room for every head's scores */
    for (int b = 0; b < B; b++)
        for (int i = 0; i < C; i++) x[b * C + i] = m->wte[tokens[b] * C + i] + m->wpe[(int64_t)pos * C + i];
    #pragma omp parallel num_threads(threads)
    {
        for (int l = 0; l < m->n_layer; l++) {
            const Block *bl = m->h + l;
            layer_norm(&bl->ln_1, x, h, B, C);
            linear(&bl->c_attn, h, qkv, B, 3 * C, C, STORE);  /* per text: q, then k, then v, C numbers each */
            #pragma omp for schedule(static)
            for (int bh = 0; bh < B * nh; bh++) {  /* text b, head hd */
                const int b = bh / nh, hd = bh % nh;
                const float *q = qkv + (int64_t)b * 3 * C + hd * hs;
                const int64_t cache = (int64_t)bh * T * hs;  /* where this text's head starts in the cache */
                attend(q, q + C, q + 2 * C, bl->k + cache, bl->v + cache, pos, hs, scores + (int64_t)bh * T,
                       y + (int64_t)b * C + hd * hs);
            }
            linear(&bl->attn_proj, y, x, B, C, C, ADD);  /* the residual stream: x += */
            layer_norm(&bl->ln_2, x, h, B, C);
            linear(&bl->c_fc, h, f, B, 4 * C, C, GELU);
            linear(&bl->mlp_proj, f, x, B, C, 4 * C, ADD);
        }
        layer_norm(&m->ln_f, x, h, B, C);
        linear(&m->lm_head, h, logits, B, m->vocab_size, C, STORE);
    }
    free(x), free(h), free(y), free(qkv), free(f), free(scores);
}

/* Which version of dot.h was compiled: "avx2" or "plain" (for the tests and the benchmark). */
const char *decode_step_version(void) { return DOT_VERSION; }
