/* The depthwise modulated deformable convolution (DCNv2, one offset group, stride 1) of the DMHA's
 * Q / K / V projections, forward and backward, fused for a CPU: bilinear sampling, modulation and
 * the per-channel tap weights in one pass over the output, channels innermost.
 *
 * Why by hand: on a CPU the ecosystem's kernels (torchvision.ops.deform_conv2d, mmcv.ops) are 8-10x
 * slower than grid_sample plus elementwise products, and that path spends most of NDMHA's training
 * step in grid_sampler_2d_backward and in products of (N, C, 9, H, W) tensors
 * (docs/performance.md, "The deformable-conv backends on a CPU"). Here nothing of that
 * size is ever written.
 *
 * Compiled once per machine by ndmha/models/deform_cpu.py (no Python headers, no torch headers),
 * twice: -DSCALAR=float -DSUFFIX=f32 and -DSCALAR=double -DSUFFIX=f64.
 *
 * Layouts (all contiguous):
 *   x, out, grad_out, grad_x: (N, H, W, C)   channels last
 *   offset, grad_offset:      (N, K, 2, H, W) (dy, dx) per tap, taps row-major over the kernel
 *   mask, grad_mask:          (N, K, H, W)    the modulation, or NULL (DCNv1: every tap weighs 1)
 *   weight, grad_weight:      (K, C)          the depthwise weights, tap-major
 * Sampling positions: row y - pad + dil * ky + dy, column x - pad + dil * kx + dx, bilinear, zero
 * outside the image (torchvision's deform_conv2d and grid_sample's zeros padding).
 *
 * Work is split into units of (image, block of rows), the blocks per image set by the batch alone
 * (never by the thread count), and each unit of the backward writes its own partial gradients,
 * summed afterwards in unit order: the results are bitwise the same for any number of threads.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef SCALAR
#define SCALAR float
#define SUFFIX f32
#endif
#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)
#define FN(name) CAT(name, SUFFIX)

typedef SCALAR scalar;

typedef struct {
    const scalar *x, *offset, *mask, *weight, *grad_out;
    scalar *out, *grad_x, *grad_offset, *grad_mask, *grad_weight;
    scalar *partial_x;       /* (units, H, W, C) when blocks > 1, else NULL */
    scalar *partial_weight;  /* (units, K, C) */
    int64_t n, c, h, w, kh, kw, pad, dil, blocks, threads;
} Args;

/* The four bilinear corners of one sample: their rows of x (the zero row when outside the
 * image) and fractions; sample() returns 0 when the sample lies wholly outside the image (or a
 * coordinate is not finite). */
typedef struct {
    const scalar *r00, *r01, *r10, *r11;
    int64_t i00, i01, i10, i11;  /* pixel index of each corner, -1 outside */
    scalar ly, lx;
} Corners;

/* The corners of tap t's sample for output pixel (y, x) of image n. */
static int sample(const Args *a, const scalar *image, const scalar *zero, int64_t n, int64_t t,
                  int64_t y, int64_t x, Corners *k) {
    const int64_t h = a->h, w = a->w, c = a->c, hw = h * w, taps = a->kh * a->kw;
    const int64_t base = (n * taps + t) * 2 * hw + y * w + x;
    const scalar py = (scalar)(y - a->pad + a->dil * (t / a->kw)) + a->offset[base];
    const scalar px = (scalar)(x - a->pad + a->dil * (t % a->kw)) + a->offset[base + hw];
    if (!(py > -1 && py < h && px > -1 && px < w)) return 0;
    const scalar fy = floor(py), fx = floor(px);
    const int64_t y0 = (int64_t)fy, x0 = (int64_t)fx, y1 = y0 + 1, x1 = x0 + 1;
    k->ly = py - fy;
    k->lx = px - fx;
    const int top = y0 >= 0, bottom = y1 < h, left = x0 >= 0, right = x1 < w;
    k->i00 = top && left ? y0 * w + x0 : -1;
    k->i01 = top && right ? y0 * w + x1 : -1;
    k->i10 = bottom && left ? y1 * w + x0 : -1;
    k->i11 = bottom && right ? y1 * w + x1 : -1;
    k->r00 = k->i00 >= 0 ? image + k->i00 * c : zero;
    k->r01 = k->i01 >= 0 ? image + k->i01 * c : zero;
    k->r10 = k->i10 >= 0 ? image + k->i10 * c : zero;
    k->r11 = k->i11 >= 0 ? image + k->i11 * c : zero;
    return 1;
}

static void rows_of(const Args *a, int64_t unit, int64_t *image, int64_t *r0, int64_t *r1) {
    const int64_t block = unit % a->blocks, per = (a->h + a->blocks - 1) / a->blocks;
    *image = unit / a->blocks;
    *r0 = block * per;
    *r1 = *r0 + per < a->h ? *r0 + per : a->h;
}

static void forward_unit(const Args *a, int64_t unit) {
    const int64_t c = a->c, h = a->h, w = a->w, hw = h * w, taps = a->kh * a->kw;
    int64_t n, r0, r1;
    rows_of(a, unit, &n, &r0, &r1);
    scalar *zero = calloc((size_t)c, sizeof(scalar));
    const scalar *image = a->x + n * hw * c;
    for (int64_t y = r0; y < r1; y++) {
        for (int64_t xx = 0; xx < w; xx++) {
            const int64_t p = y * w + xx;
            scalar *restrict o = a->out + (n * hw + p) * c;
            memset(o, 0, (size_t)c * sizeof(scalar));
            for (int64_t t = 0; t < taps; t++) {
                Corners k;
                if (!sample(a, image, zero, n, t, y, xx, &k)) continue;
                const scalar m = a->mask ? a->mask[(n * taps + t) * hw + p] : (scalar)1;
                const scalar hy = 1 - k.ly, hx = 1 - k.lx;
                const scalar w00 = hy * hx, w01 = hy * k.lx, w10 = k.ly * hx, w11 = k.ly * k.lx;
                const scalar *restrict wt = a->weight + t * c;
                const scalar *restrict r00 = k.r00, *restrict r01 = k.r01;
                const scalar *restrict r10 = k.r10, *restrict r11 = k.r11;
#pragma omp simd
                for (int64_t i = 0; i < c; i++) {
                    const scalar s = w00 * r00[i] + w01 * r01[i] + w10 * r10[i] + w11 * r11[i];
                    o[i] += wt[i] * (m * s);
                }
            }
        }
    }
    free(zero);
}

static void backward_unit(const Args *a, int64_t unit) {
    const int64_t c = a->c, h = a->h, w = a->w, hw = h * w, taps = a->kh * a->kw;
    int64_t n, r0, r1;
    rows_of(a, unit, &n, &r0, &r1);
    /* a zero row to read and four rows to write for the corners outside the image (distinct, so
     * that the four written rows never alias) */
    scalar *scratch = calloc((size_t)(5 * c), sizeof(scalar));
    const scalar *zero = scratch;
    const scalar *image = a->x + n * hw * c;
    scalar *gimage = a->partial_x ? a->partial_x + unit * hw * c : a->grad_x + n * hw * c;
    scalar *gweight = a->partial_weight + unit * taps * c;
    for (int64_t y = r0; y < r1; y++) {
        for (int64_t xx = 0; xx < w; xx++) {
            const int64_t p = y * w + xx;
            const scalar *restrict go = a->grad_out + (n * hw + p) * c;
            for (int64_t t = 0; t < taps; t++) {
                const int64_t base = (n * taps + t) * 2 * hw + p;  /* its dy; dx at + hw */
                Corners k;
                if (!sample(a, image, zero, n, t, y, xx, &k)) continue;  /* gradients stay 0 */
                const scalar m = a->mask ? a->mask[(n * taps + t) * hw + p] : (scalar)1;
                const scalar ly = k.ly, lx = k.lx, hy = 1 - ly, hx = 1 - lx;
                const scalar w00 = hy * hx, w01 = hy * lx, w10 = ly * hx, w11 = ly * lx;
                const scalar *restrict wt = a->weight + t * c;
                scalar *restrict gw = gweight + t * c;
                const scalar *restrict r00 = k.r00, *restrict r01 = k.r01;
                const scalar *restrict r10 = k.r10, *restrict r11 = k.r11;
                scalar *restrict g00 = k.i00 >= 0 ? gimage + k.i00 * c : scratch + c;
                scalar *restrict g01 = k.i01 >= 0 ? gimage + k.i01 * c : scratch + 2 * c;
                scalar *restrict g10 = k.i10 >= 0 ? gimage + k.i10 * c : scratch + 3 * c;
                scalar *restrict g11 = k.i11 >= 0 ? gimage + k.i11 * c : scratch + 4 * c;
                const scalar m00 = m * w00, m01 = m * w01, m10 = m * w10, m11 = m * w11;
                scalar ds = 0, dy = 0, dx = 0;
#pragma omp simd reduction(+ : ds, dy, dx)
                for (int64_t i = 0; i < c; i++) {
                    const scalar g = go[i] * wt[i];  /* d loss / d (m * s) */
                    const scalar s = w00 * r00[i] + w01 * r01[i] + w10 * r10[i] + w11 * r11[i];
                    gw[i] += go[i] * (m * s);
                    ds += g * s;
                    dy += g * (hx * (r10[i] - r00[i]) + lx * (r11[i] - r01[i]));
                    dx += g * (hy * (r01[i] - r00[i]) + ly * (r11[i] - r10[i]));
                    g00[i] += m00 * g;
                    g01[i] += m01 * g;
                    g10[i] += m10 * g;
                    g11[i] += m11 * g;
                }
                if (a->mask) a->grad_mask[(n * taps + t) * hw + p] = ds;
                a->grad_offset[base] = m * dy;
                a->grad_offset[base + hw] = m * dx;
            }
        }
    }
    free(scratch);
}

/* grad_x of image n from its blocks' partial sums, in block order */
static void sum_blocks_unit(const Args *a, int64_t n) {
    const int64_t size = a->h * a->w * a->c;
    scalar *restrict dst = a->grad_x + n * size;
    for (int64_t b = 0; b < a->blocks; b++) {
        const scalar *restrict src = a->partial_x + (n * a->blocks + b) * size;
#pragma omp simd
        for (int64_t i = 0; i < size; i++) dst[i] += src[i];
    }
}

/* the units over OpenMP's threads, statically: the process's own OpenMP runtime (torch's, whose
 * libgomp.so.1 is loaded first), so that its thread pool is shared, not fought for */
static void run(const Args *a, void (*body)(const Args *, int64_t), int64_t units) {
    const int threads = (int)(a->threads < units ? a->threads : units);
#pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static)
    for (int64_t u = 0; u < units; u++) body(a, u);
}

static Args args_of(const scalar *x, const scalar *offset, const scalar *mask,
                    const scalar *weight, int64_t n, int64_t c, int64_t h, int64_t w,
                    int64_t kh, int64_t kw, int64_t pad, int64_t dil, int64_t blocks,
                    int64_t threads) {
    Args a;
    memset(&a, 0, sizeof a);
    a.x = x; a.offset = offset; a.mask = mask; a.weight = weight;
    a.n = n; a.c = c; a.h = h; a.w = w; a.kh = kh; a.kw = kw; a.pad = pad; a.dil = dil;
    a.blocks = blocks < 1 ? 1 : (blocks > h ? h : blocks);
    a.threads = threads;
    return a;
}

void FN(deform_depthwise_forward)(const scalar *x, const scalar *offset, const scalar *mask,
                                  const scalar *weight, scalar *out, int64_t n, int64_t c,
                                  int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t pad,
                                  int64_t dil, int64_t blocks, int64_t threads) {
    Args a = args_of(x, offset, mask, weight, n, c, h, w, kh, kw, pad, dil, blocks, threads);
    a.out = out;
    run(&a, forward_unit, n * a.blocks);
}

/* grad_x, grad_offset, grad_mask, grad_weight: written whole (zeroed here first);
 * returns 0, or 1 when the partial buffers could not be allocated (nothing written). */
int FN(deform_depthwise_backward)(const scalar *x, const scalar *offset, const scalar *mask,
                                  const scalar *weight, const scalar *grad_out, scalar *grad_x,
                                  scalar *grad_offset, scalar *grad_mask, scalar *grad_weight,
                                  int64_t n, int64_t c, int64_t h, int64_t w, int64_t kh,
                                  int64_t kw, int64_t pad, int64_t dil, int64_t blocks,
                                  int64_t threads) {
    Args a = args_of(x, offset, mask, weight, n, c, h, w, kh, kw, pad, dil, blocks, threads);
    const int64_t taps = kh * kw, units = n * a.blocks, hw = h * w;
    a.grad_out = grad_out; a.grad_x = grad_x; a.grad_offset = grad_offset;
    a.grad_mask = grad_mask; a.grad_weight = grad_weight;
    a.partial_weight = calloc((size_t)(units * taps * c), sizeof(scalar));
    if (a.blocks > 1) a.partial_x = calloc((size_t)(units * hw * c), sizeof(scalar));
    if (!a.partial_weight || (a.blocks > 1 && !a.partial_x)) {
        free(a.partial_weight);
        free(a.partial_x);
        return 1;
    }
    memset(grad_x, 0, (size_t)(n * hw * c) * sizeof(scalar));
    memset(grad_offset, 0, (size_t)(n * taps * 2 * hw) * sizeof(scalar));
    if (mask) memset(grad_mask, 0, (size_t)(n * taps * hw) * sizeof(scalar));
    run(&a, backward_unit, units);
    if (a.partial_x) run(&a, sum_blocks_unit, n);
    memset(grad_weight, 0, (size_t)(taps * c) * sizeof(scalar));
    for (int64_t u = 0; u < units; u++) {
        const scalar *src = a.partial_weight + u * taps * c;
        for (int64_t i = 0; i < taps * c; i++) grad_weight[i] += src[i];
    }
    free(a.partial_weight);
    free(a.partial_x);
    return 0;
}
