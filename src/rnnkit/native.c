/* The arithmetic between one stream's matrix products, for rnnkit's stepper (see native.py).

   After the product of a 2 x 512 LSTM's weights, the next dozen torch calls of a step each cost
   three to five times what they cost alone, because reading the weights pushed torch's and
   Python's own data out of the caches; these functions do a layer's gates, or the output layer
   and the draw, in one call each. Every pointer is to a contiguous buffer the stepper owns;
   bf16 values are held as their 16 bits. */

#include <stdint.h>
#include <string.h>

/* one copy per instruction set, chosen when the library loads (the default runs anywhere) */
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif

static inline float from_bf16(uint16_t v) {
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* round to nearest even, as torch rounds fp32 to bf16 (a NaN stays a NaN) */
static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : rounded);
}

/* e^x to about 2 ulp: x = n ln 2 + r, |r| <= ln 2 / 2, e^r by Cephes' polynomial for expf,
   2^n built in the exponent bits; written without branches, so that the loops vectorize */
static inline float exp_(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float shifted = x * 1.44269504088896341f + 12582912.0f; /* 1.5 x 2^23: rounds to an integer */
    int32_t n_bits;
    memcpy(&n_bits, &shifted, 4);
    float n = shifted - 12582912.0f;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f; /* ln 2 in two parts */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    int32_t scale_bits = (n_bits - 0x4b400000 + 127) << 23;
    float scale;
    memcpy(&scale, &scale_bits, 4);
    return (p * r * r + r + 1.0f) * scale;
}

static inline float sigmoid_(float x) { return 1.0f / (1.0f + exp_(-x)); }

/* tanh(x) = 2 sigmoid(2 x) - 1 */
static inline float tanh_(float x) { return 2.0f * sigmoid_(2.0f * x) - 1.0f; }

/* One LSTM layer of one stream: gates = sigmoid(y + b) for the pre-activations y (4H, bf16,
   the product) and b (4H: the bias, or layer 0's row of the input table), in torch's order
   i, f, g, o with g's rows doubled, so that tanh(g) = 2 sigmoid(2 g) - 1 = 2 s - 1; then
   c = f c + i (2 s - 1) and h = o tanh(c) in place, and h rounded to bf16 into h16, where
   the next products read it. */
CLONES void lstm_layer(const uint16_t *restrict y, const float *restrict b, float *restrict c,
                       float *restrict h, uint16_t *restrict h16, float *restrict gates, int H) {
    for (int j = 0; j < 4 * H; j++)
        gates[j] = sigmoid_(from_bf16(y[j]) + b[j]);
    const float *i = gates, *f = gates + H, *s = gates + 2 * H, *o = gates + 3 * H;
    for (int j = 0; j < H; j++) {
        float c_next = f[j] * c[j] + i[j] * (2.0f * s[j] - 1.0f);
        c[j] = c_next;
        h[j] = o[j] * tanh_(c_next);
        h16[j] = to_bf16(h[j]);
    }
}

/* One tanh RNN layer of one stream: h = tanh(y + b), and h rounded to bf16 into h16. */
CLONES void rnn_layer(const uint16_t *restrict y, const float *restrict b, float *restrict h,
                      uint16_t *restrict h16, int H) {
    for (int j = 0; j < H; j++) {
        h[j] = tanh_(from_bf16(y[j]) + b[j]);
        h16[j] = to_bf16(h[j]);
    }
}

/* One GRU layer of one stream, in torch's order r, z, n: gi = yi + bi, the input's term (3H),
   where yi (bf16, the product) is NULL for layer 0, whose bi is then its row of the input
   table; gh = yh + bh, the hidden state's; r = sigmoid(gi_r + gh_r), z likewise, and
   h = (1 - z) tanh(gi_n + r gh_n) + z h in place, rounded to bf16 into h16. */
static inline float gru_unit(float gi_r, float gi_z, float gi_n, float gh_r, float gh_z,
                             float gh_n, float h) {
    float r = sigmoid_(gi_r + gh_r), z = sigmoid_(gi_z + gh_z);
    return (1.0f - z) * tanh_(gi_n + r * gh_n) + z * h;
}

CLONES void gru_layer(const uint16_t *restrict yi, const float *restrict bi,
                      const uint16_t *restrict yh, const float *restrict bh, float *restrict h,
                      uint16_t *restrict h16, int H) {
    const float *bi_z = bi + H, *bi_n = bi + 2 * H, *bh_z = bh + H, *bh_n = bh + 2 * H;
    const uint16_t *yh_z = yh + H, *yh_n = yh + 2 * H;
    if (yi) { /* a loop for each case, so that both vectorize */
        const uint16_t *yi_z = yi + H, *yi_n = yi + 2 * H;
        for (int j = 0; j < H; j++)
            h[j] = gru_unit(from_bf16(yi[j]) + bi[j], from_bf16(yi_z[j]) + bi_z[j],
                            from_bf16(yi_n[j]) + bi_n[j], from_bf16(yh[j]) + bh[j],
                            from_bf16(yh_z[j]) + bh_z[j], from_bf16(yh_n[j]) + bh_n[j], h[j]);
    } else {
        for (int j = 0; j < H; j++)
            h[j] = gru_unit(bi[j], bi_z[j], bi_n[j], from_bf16(yh[j]) + bh[j],
                            from_bf16(yh_z[j]) + bh_z[j], from_bf16(yh_n[j]) + bh_n[j], h[j]);
    }
    for (int j = 0; j < H; j++)
        h16[j] = to_bf16(h[j]);
}

/* The output layer of one stream: out = b + W h for W (V, H) row-major, in fp32 (eight
   partial sums per row, so that the loop vectorizes). */
CLONES void logits_row(const float *restrict W, const float *restrict b, const float *restrict h,
                       float *restrict out, int V, int H) {
    for (int v = 0; v < V; v++) {
        const float *w = W + (long)v * H;
        float sums[8] = {0}, rest = 0.0f;
        int j = 0;
        for (; j + 8 <= H; j += 8)
            for (int k = 0; k < 8; k++)
                sums[k] += w[j + k] * h[j + k];
        for (; j < H; j++)
            rest += w[j] * h[j];
        out[v] = b[v] + (((sums[0] + sums[4]) + (sums[1] + sums[5]))
                         + ((sums[2] + sums[6]) + (sums[3] + sums[7])) + rest);
    }
}

/* The draw of one symbol from softmax(logits / temperature): the race that torch.multinomial
   runs for one sample, argmax of p / q with q ~ Exp(1) given, on the unnormalised
   p = exp((logit - max) / temperature), as the normalising sum changes no order. */
CLONES int race(const float *restrict logits, const float *restrict q, int V, float temperature) {
    float top = logits[0];
    for (int v = 1; v < V; v++)
        top = logits[v] > top ? logits[v] : top;
    int best = 0;
    float best_score = -1.0f;
    for (int v = 0; v < V; v++) {
        float score = exp_((logits[v] - top) / temperature) / q[v];
        if (score > best_score) {
            best_score = score;
            best = v;
        }
    }
    return best;
}
