// The stratified log-marginals of mean-field Gaussian groups and their gradients, as single passes
// over the pairwise entries (topicvae.objective.native builds this file; docs/objective.md).
//
// For sample rows b (this process's items) and columns b' (the whole batch), entry (b, b', v) is
//   s = (z^b_v - mu^b'_v) / sigma^b'_v,   log q(z^b_v | x^b') = log_norm^b'_v - s^2 / 2,
// with log_norm = -log sigma - log(2 pi) / 2. The forward pass reduces the entries with the
// stratified weights log w[b, b'] (objective.md, identity 2) into three log-sum-exps over b':
// per variable, per group (the group's entries summed over its variables) and for the joint.
// The backward pass recomputes each entry and applies the three softmaxes at once, so nothing
// of size B x B is stored and each entry is visited once per pass.
//
// Layout: the columns' parameters are transposed to [V, B], so that the inner loops run over
// b' with unit stride and vectorize (8 floats in AVX2, the exp inlined), and the group sums
// accumulate vertically. Rows are processed in tiles of TILE_ROWS and columns in chunks of
// CHUNK, so a chunk's parameters (and in the backward its gradient accumulators) stay in the
// L1 cache while every row of the tile uses them. The innermost loops take the tile's rows
// together: each column's parameters (and gradient accumulators) are loaded once per tile, and
// the rows' exps are independent dependency chains that the core overlaps; a loop over one row
// waits on one chain of about twenty dependent operations per entry (on a Zen 1 core with
// 5-cycle fmas, the backward took 1.2 times as long that way; docs/benchmarks.md). A last tile
// of fewer rows is padded with copies of its last row, whose results are dropped (in the
// backward, with incoming gradients of zero).
//
// Both passes take the groups' and the joint's sums from one function (chunk_group_sums), so
// the backward's softmax weights see bit for bit the sums the forward's log-sum-exps came from.
//
// The exps take max(t, -60) (topicvae.objective.kernels.EXP_FLOOR: no subnormal results) and
// min(t, 60). Each forward log-sum-exp is shifted by the row's own (diagonal) term, known
// before the pass, instead of by the maximum, which would need a second pass; the diagonal
// term is at its largest in practice, and wherever another term exceeds it by more than 60
// nats the row is summed again, shifted by the maximum the first pass found, so the result
// never depends on the cap.
// Every input must be finite, scales positive and the standardized distances far from overflow
// (topicvae.objective.native checks; a batch of one's off-diagonal log weight, -inf, arrives as
// a large finite number): the file is built with -ffast-math, which assumes finite floats, so
// that the reductions over b' vectorize.
//
// ATen and torch's pybind11 casters rather than <torch/extension.h>, which brings in the whole
// C++ frontend: the build parses headers for about 20 s instead of 45 (measured with g++ 12).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cmath>
#include <limits>
#include <vector>

namespace {

// Measured on a 2-core AMD EPYC (benchmarks, 2026-12-02): chunks of 64 columns cost 20-25% more
// (the per-chunk horizontal reductions); tiles of 8 rows (one row per loop, as then) or chunks
// of 512 made no difference.
constexpr int64_t TILE_ROWS = 4;
static_assert(TILE_ROWS == 4, "the innermost loops are written out for four rows");
constexpr int64_t CHUNK = 256;
constexpr float FLOOR = -60.f;
constexpr float CAP = 60.f;

// exp(min(max(t, -60), 60)), inlined into the vector loops: a call to the vector library's exp
// makes the compiler spill every vector register around it, which costs more than the exp.
// Cody and Waite's reduction t = n log 2 + r, |r| <= log(2) / 2, and Cephes' degree-7 polynomial
// for e^r, 1 + r + r^2 P(r) with P of degree 5 (relative error about 1e-7, float32's rounding);
// 2^n is built in the exponent bits, valid since |n| <= 87 on the clamped range.
inline float capped_exp(float t) {
  const float x = std::min(std::max(t, FLOOR), CAP);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  // explicit fmas: -ffast-math may not merge the two parts of log 2 back into one constant
  // (which would cost |n| ulps of log 2, a relative 3e-6 at |t| = 60)
  const float r = std::fma(n, 2.12194440e-4f, std::fma(-n, 0.693359375f, x));
  // Estrin's scheme: the polynomial's chain of dependent operations is four deep instead of seven
  const float r2 = r * r, r4 = r2 * r2;
  const float low = std::fma(std::fma(8.3334519073e-3f, r, 4.1665795894e-2f), r2,
                             std::fma(1.6666665459e-1f, r, 5.0000001201e-1f));
  const float high = std::fma(1.9875691500e-4f, r, 1.3981999507e-3f);
  const float p = std::fma(std::fma(high, r4, low), r2, r + 1.f);
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * std::bit_cast<float>(bits);
}

struct Columns {
  const float *loc, *inv, *log_norm;  // [V, B]
  int64_t batch;
};

// log w[b, b'] for one row and a chunk of columns.
inline void chunk_log_weights(float *out, int64_t diagonal, int64_t c0, int64_t n, float log_w_diagonal,
                              float log_w_off) {
  for (int64_t c = 0; c < n; ++c) out[c] = (c0 + c == diagonal) ? log_w_diagonal : log_w_off;
}

// The groups' log densities, sum_v in d log q(z^b_v | x^b'), and the joint's, sum_d of those,
// for a tile of rows and a chunk of columns: group_sum[t][d][c], d = G the joint. One function,
// never inlined, serves both passes, so that the backward's softmax weights exp(sum - log q^)
// see bit for bit the sums the forward's log q^ came from: under -ffast-math an inlined copy
// may be summed in another order in each loop, and one ulp of a sum of hundreds of nats is a
// relative 1e-4 in the weights (found in review: 7e-4 in a gradient with 500 variables).
__attribute__((noinline)) void chunk_group_sums(const float *z, int64_t V, const int64_t *group_of, int64_t G,
                                                const Columns &col, int64_t c0, int64_t n, int64_t rows,
                                                float *group_sum) {
  std::fill(group_sum, group_sum + rows * (G + 1) * CHUNK, 0.f);
  for (int64_t v = 0; v < V; ++v) {
    const float *loc = col.loc + v * col.batch + c0, *inv = col.inv + v * col.batch + c0,
                *log_norm = col.log_norm + v * col.batch + c0;
    for (int64_t t = 0; t < rows; ++t) {
      const float zv = z[t * V + v];
      float *gs = group_sum + (t * (G + 1) + group_of[v]) * CHUNK;
#pragma omp simd
      for (int64_t c = 0; c < n; ++c) {
        const float s = (zv - loc[c]) * inv[c];
        gs[c] += log_norm[c] - 0.5f * s * s;
      }
    }
  }
  for (int64_t t = 0; t < rows; ++t) {
    float *joint = group_sum + (t * (G + 1) + G) * CHUNK;
    for (int64_t g = 0; g < G; ++g) {
      const float *gs = group_sum + (t * (G + 1) + g) * CHUNK;
#pragma omp simd
      for (int64_t c = 0; c < n; ++c) joint[c] += gs[c];
    }
  }
}

// Per-thread scratch space for one tile and one chunk.
struct Workspace {
  std::vector<float> log_w, group_sum;
  explicit Workspace(int64_t G) : log_w(TILE_ROWS * CHUNK), group_sum(TILE_ROWS * (G + 1) * CHUNK) {}
};

// One tile of TILE_ROWS rows: the three sums of exp(term - shift) for the given shifts, and the
// largest term - shift of each sum. sums and maxima: [TILE_ROWS][V + G + 1] (variables, groups,
// joint). (A first pass without the maxima was no faster: measured on Zen 1, docs/benchmarks.md.)
void tile_sums(const float *z, int64_t V, const std::vector<int64_t> &group_of, int64_t G, const Columns &col,
               const int64_t *diagonal, const float *shift, float log_w_diagonal, float log_w_off, Workspace &work,
               float *sums, float *maxima) {
  const int64_t width = V + G + 1;
  constexpr float LOWEST = -std::numeric_limits<float>::max();
  std::fill(sums, sums + TILE_ROWS * width, 0.f);
  std::fill(maxima, maxima + TILE_ROWS * width, LOWEST);
  float *log_w = work.log_w.data(), *group_sum = work.group_sum.data();
  for (int64_t c0 = 0; c0 < col.batch; c0 += CHUNK) {
    const int64_t n = std::min(CHUNK, col.batch - c0);
    chunk_group_sums(z, V, group_of.data(), G, col, c0, n, TILE_ROWS, group_sum);
    for (int64_t t = 0; t < TILE_ROWS; ++t)
      chunk_log_weights(&log_w[t * CHUNK], diagonal[t], c0, n, log_w_diagonal, log_w_off);
    const float *w0 = &log_w[0], *w1 = &log_w[CHUNK], *w2 = &log_w[2 * CHUNK], *w3 = &log_w[3 * CHUNK];
    for (int64_t v = 0; v < V; ++v) {
      const float *loc = col.loc + v * col.batch + c0, *inv = col.inv + v * col.batch + c0,
                  *log_norm = col.log_norm + v * col.batch + c0;
      const float z0 = z[v], z1 = z[V + v], z2 = z[2 * V + v], z3 = z[3 * V + v];
      const float h0 = shift[v], h1 = shift[width + v], h2 = shift[2 * width + v], h3 = shift[3 * width + v];
      float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
      float m0 = LOWEST, m1 = LOWEST, m2 = LOWEST, m3 = LOWEST;
#pragma omp simd reduction(+ : a0, a1, a2, a3) reduction(max : m0, m1, m2, m3)
      for (int64_t c = 0; c < n; ++c) {
        const float l = loc[c], iv = inv[c], ln = log_norm[c];
        const float s0 = (z0 - l) * iv, s1 = (z1 - l) * iv, s2 = (z2 - l) * iv, s3 = (z3 - l) * iv;
        const float t0 = ln - 0.5f * s0 * s0 + w0[c] - h0, t1 = ln - 0.5f * s1 * s1 + w1[c] - h1,
                    t2 = ln - 0.5f * s2 * s2 + w2[c] - h2, t3 = ln - 0.5f * s3 * s3 + w3[c] - h3;
        m0 = std::max(m0, t0), m1 = std::max(m1, t1), m2 = std::max(m2, t2), m3 = std::max(m3, t3);
        a0 += capped_exp(t0), a1 += capped_exp(t1), a2 += capped_exp(t2), a3 += capped_exp(t3);
      }
      const float a[TILE_ROWS] = {a0, a1, a2, a3}, m[TILE_ROWS] = {m0, m1, m2, m3};
      for (int64_t t = 0; t < TILE_ROWS; ++t) {
        sums[t * width + v] += a[t];
        maxima[t * width + v] = std::max(maxima[t * width + v], m[t]);
      }
    }
    // the groups' and the joint's terms: G + 1 per entry (b, b') instead of V, one row at a time
    for (int64_t t = 0; t < TILE_ROWS; ++t) {
      const float *lw = &log_w[t * CHUNK];
      for (int64_t g = 0; g <= G; ++g) {
        const float *gs = &group_sum[(t * (G + 1) + g) * CHUNK];
        const float sh = shift[t * width + V + g];
        float acc = 0.f, top = LOWEST;
#pragma omp simd reduction(+ : acc) reduction(max : top)
        for (int64_t c = 0; c < n; ++c) {
          const float term = gs[c] + lw[c] - sh;
          top = std::max(top, term);
          acc += capped_exp(term);
        }
        sums[t * width + V + g] += acc;
        maxima[t * width + V + g] = std::max(maxima[t * width + V + g], top);
      }
    }
  }
}

std::vector<int64_t> groups_of(int64_t V, const std::vector<int64_t> &group_sizes) {
  std::vector<int64_t> group_of;
  group_of.reserve(V);
  for (int64_t g = 0; g < (int64_t)group_sizes.size(); ++g)
    for (int64_t i = 0; i < group_sizes[g]; ++i) group_of.push_back(g);
  TORCH_CHECK((int64_t)group_of.size() == V, "group sizes add up to ", group_of.size(), ", not ", V, " variables");
  return group_of;
}

}  // namespace

// z: [R, V] rows; loc_t, inv_t, log_norm_t: [V, B] columns. Returns log q^(z_v) [R, V],
// log q^(z_d) [R, G] and log q^(z) [R].
std::vector<at::Tensor> forward(at::Tensor z, at::Tensor loc_t, at::Tensor inv_t, at::Tensor log_norm_t,
                                int64_t first_row, double log_w_diagonal, double log_w_off,
                                std::vector<int64_t> group_sizes) {
  const int64_t R = z.size(0), V = z.size(1), B = loc_t.size(1), G = group_sizes.size(), width = V + G + 1;
  const auto group_of = groups_of(V, group_sizes);
  auto out = at::empty({R, width}, z.options());
  const float *Z = z.data_ptr<float>();
  const Columns col{loc_t.data_ptr<float>(), inv_t.data_ptr<float>(), log_norm_t.data_ptr<float>(), B};
  float *O = out.data_ptr<float>();
  const float lwd = (float)log_w_diagonal, lwo = (float)log_w_off;
  const int64_t tiles = (R + TILE_ROWS - 1) / TILE_ROWS;
  at::parallel_for(0, tiles, 1, [&](int64_t tile0, int64_t tile1) {
    Workspace work(G);
    std::vector<float> z_tile(TILE_ROWS * V), shift(TILE_ROWS * width), sums(TILE_ROWS * width),
        maxima(TILE_ROWS * width);
    int64_t diagonal[TILE_ROWS];
    for (int64_t tile = tile0; tile < tile1; ++tile) {
      const int64_t r0 = tile * TILE_ROWS, rows = std::min(TILE_ROWS, R - r0);
      for (int64_t t = 0; t < TILE_ROWS; ++t) {  // a short last tile repeats its last row
        const int64_t r = r0 + std::min(t, rows - 1), b = first_row + r;
        std::copy(Z + r * V, Z + (r + 1) * V, &z_tile[t * V]);
        diagonal[t] = b;
        float *sh = &shift[t * width];  // the shifts: each row's own term, b' = b
        std::fill(sh + V, sh + width, lwd);
        for (int64_t v = 0; v < V; ++v) {
          const float s = (Z[r * V + v] - col.loc[v * B + b]) * col.inv[v * B + b];
          const float density = col.log_norm[v * B + b] - 0.5f * s * s;
          sh[v] = density + lwd;
          sh[V + group_of[v]] += density;
          sh[V + G] += density;
        }
      }
      tile_sums(z_tile.data(), V, group_of, G, col, diagonal, shift.data(), lwd, lwo, work, sums.data(), maxima.data());
      bool again = false;
      for (int64_t i = 0; i < rows * width; ++i) {
        if (maxima[i] > CAP) {  // a term far above the row's own one: shift by the maximum instead
          shift[i] += maxima[i];
          again = true;
        }
      }
      if (again)
        tile_sums(z_tile.data(), V, group_of, G, col, diagonal, shift.data(), lwd, lwo, work, sums.data(), maxima.data());
      for (int64_t i = 0; i < rows * width; ++i) O[r0 * width + i] = std::log(sums[i]) + shift[i];
    }
  });
  return {out.narrow(1, 0, V).contiguous(), out.narrow(1, V, G).contiguous(), out.select(1, V + G).contiguous()};
}

// The gradients of sum(grad_v * log q^(z_v)) + sum(grad_g * log q^(z_d)) + sum(grad_j * log q^(z))
// with respect to z [R, V], and to loc and scale transposed, [V, B] (this process's share).
std::vector<at::Tensor> backward(at::Tensor z, at::Tensor loc_t, at::Tensor inv_t, at::Tensor log_norm_t,
                                 int64_t first_row, double log_w_diagonal, double log_w_off,
                                 std::vector<int64_t> group_sizes, at::Tensor log_q_variable, at::Tensor log_q_group,
                                 at::Tensor log_q_joint, at::Tensor grad_variable, at::Tensor grad_group,
                                 at::Tensor grad_joint) {
  const int64_t R = z.size(0), V = z.size(1), B = loc_t.size(1), G = group_sizes.size();
  const auto group_of = groups_of(V, group_sizes);
  const int64_t tiles = (R + TILE_ROWS - 1) / TILE_ROWS;
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), tiles));
  auto grad_z = at::zeros({R, V}, z.options());
  auto grad_loc = at::zeros({threads, V, B}, z.options());
  auto grad_scale = at::zeros({threads, V, B}, z.options());
  const float *Z = z.data_ptr<float>(), *LQV = log_q_variable.data_ptr<float>(), *LQG = log_q_group.data_ptr<float>(),
              *LQJ = log_q_joint.data_ptr<float>(), *GV = grad_variable.data_ptr<float>(),
              *GG = grad_group.data_ptr<float>(), *GJ = grad_joint.data_ptr<float>();
  const Columns col{loc_t.data_ptr<float>(), inv_t.data_ptr<float>(), log_norm_t.data_ptr<float>(), B};
  float *GZ = grad_z.data_ptr<float>();
  const float lwd = (float)log_w_diagonal, lwo = (float)log_w_off;
  // One contiguous range of tiles per thread, so that each owns one slice of the accumulators.
  at::parallel_for(0, threads, 1, [&](int64_t part0, int64_t part1) {
    Workspace work(G);
    float *log_w = work.log_w.data(), *group_sum = work.group_sum.data();
    // the tile's rows, a short last tile padded with its last row and incoming gradients of zero
    std::vector<float> z_tile(TILE_ROWS * V), lqv(TILE_ROWS * V), gv(TILE_ROWS * V), lqg(TILE_ROWS * G),
        gg(TILE_ROWS * G), gz(TILE_ROWS * V);
    float lqj[TILE_ROWS], gj[TILE_ROWS];
    for (int64_t part = part0; part < part1; ++part) {
      float *GL = grad_loc.data_ptr<float>() + part * V * B, *GS = grad_scale.data_ptr<float>() + part * V * B;
      const int64_t tile0 = tiles * part / threads, tile1 = tiles * (part + 1) / threads;
      for (int64_t tile = tile0; tile < tile1; ++tile) {
        const int64_t r0 = tile * TILE_ROWS, rows = std::min(TILE_ROWS, R - r0);
        for (int64_t t = 0; t < TILE_ROWS; ++t) {
          const int64_t r = r0 + std::min(t, rows - 1);
          const bool real = t < rows;
          std::copy(Z + r * V, Z + (r + 1) * V, &z_tile[t * V]);
          std::copy(LQV + r * V, LQV + (r + 1) * V, &lqv[t * V]);
          std::copy(LQG + r * G, LQG + (r + 1) * G, &lqg[t * G]);
          for (int64_t v = 0; v < V; ++v) gv[t * V + v] = real ? GV[r * V + v] : 0.f;
          for (int64_t g = 0; g < G; ++g) gg[t * G + g] = real ? GG[r * G + g] : 0.f;
          lqj[t] = LQJ[r];
          gj[t] = real ? GJ[r] : 0.f;
        }
        std::fill(gz.begin(), gz.end(), 0.f);
        for (int64_t c0 = 0; c0 < B; c0 += CHUNK) {
          const int64_t n = std::min(CHUNK, B - c0);
          // 1. each group's and the joint's sum over its variables, per row and column
          chunk_group_sums(z_tile.data(), V, group_of.data(), G, col, c0, n, TILE_ROWS, group_sum);
          for (int64_t t = 0; t < TILE_ROWS; ++t)
            chunk_log_weights(&log_w[t * CHUNK], first_row + r0 + std::min(t, rows - 1), c0, n, lwd, lwo);
          // 2. the group and joint softmax weights times their incoming gradients: one weight
          //    per (row, column, group), the joint's added to every group's
          for (int64_t t = 0; t < TILE_ROWS; ++t) {
            const float *lw = &log_w[t * CHUNK];
            float *joint = &group_sum[(t * (G + 1) + G) * CHUNK];
            const float lq = lqj[t], gjt = gj[t];
#pragma omp simd
            for (int64_t c = 0; c < n; ++c) joint[c] = capped_exp(joint[c] + lw[c] - lq) * gjt;
            for (int64_t g = 0; g < G; ++g) {
              float *gs = &group_sum[(t * (G + 1) + g) * CHUNK];
              const float lqgt = lqg[t * G + g], ggt = gg[t * G + g];
#pragma omp simd
              for (int64_t c = 0; c < n; ++c) gs[c] = capped_exp(gs[c] + lw[c] - lqgt) * ggt + joint[c];
            }
          }
          // 3. every entry's weight, pushed through log q = log_norm - s^2 / 2:
          //    d/dz = -w s / sigma, d/dmu = w s / sigma, d/dsigma = w (s^2 - 1) / sigma,
          //    the tile's four rows at once, each column's accumulators loaded and stored once
          const float *lw0 = &log_w[0], *lw1 = &log_w[CHUNK], *lw2 = &log_w[2 * CHUNK], *lw3 = &log_w[3 * CHUNK];
          const int64_t stride = (G + 1) * CHUNK;
          for (int64_t v = 0; v < V; ++v) {
            const float *loc = col.loc + v * B + c0, *inv = col.inv + v * B + c0, *log_norm = col.log_norm + v * B + c0;
            float *gl = GL + v * B + c0, *gsc = GS + v * B + c0;
            const float z0 = z_tile[v], z1 = z_tile[V + v], z2 = z_tile[2 * V + v], z3 = z_tile[3 * V + v];
            const float q0 = lqv[v], q1 = lqv[V + v], q2 = lqv[2 * V + v], q3 = lqv[3 * V + v];
            const float g0 = gv[v], g1 = gv[V + v], g2 = gv[2 * V + v], g3 = gv[3 * V + v];
            const float *wg0 = &group_sum[group_of[v] * CHUNK], *wg1 = wg0 + stride, *wg2 = wg1 + stride,
                        *wg3 = wg2 + stride;
            float d0 = 0.f, d1 = 0.f, d2 = 0.f, d3 = 0.f;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
            for (int64_t c = 0; c < n; ++c) {
              const float l = loc[c], iv = inv[c], ln = log_norm[c];
              const float s0 = (z0 - l) * iv, s1 = (z1 - l) * iv, s2 = (z2 - l) * iv, s3 = (z3 - l) * iv;
              const float w0 = capped_exp(ln - 0.5f * s0 * s0 + lw0[c] - q0) * g0 + wg0[c];
              const float w1 = capped_exp(ln - 0.5f * s1 * s1 + lw1[c] - q1) * g1 + wg1[c];
              const float w2 = capped_exp(ln - 0.5f * s2 * s2 + lw2[c] - q2) * g2 + wg2[c];
              const float w3 = capped_exp(ln - 0.5f * s3 * s3 + lw3[c] - q3) * g3 + wg3[c];
              const float e0 = w0 * s0 * iv, e1 = w1 * s1 * iv, e2 = w2 * s2 * iv, e3 = w3 * s3 * iv;
              d0 += e0, d1 += e1, d2 += e2, d3 += e3;
              gl[c] += (e0 + e1) + (e2 + e3);
              gsc[c] += ((e0 * s0 + e1 * s1) + (e2 * s2 + e3 * s3)) - ((w0 + w1) + (w2 + w3)) * iv;
            }
            gz[v] += d0, gz[V + v] += d1, gz[2 * V + v] += d2, gz[3 * V + v] += d3;
          }
        }
        for (int64_t t = 0; t < rows; ++t)
          for (int64_t v = 0; v < V; ++v) GZ[(r0 + t) * V + v] = -gz[t * V + v];
      }
    }
  });
  return {grad_z, grad_loc.sum(0), grad_scale.sum(0)};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "stratified log-marginals of mean-field Gaussian groups");
  m.def("backward", &backward, "their gradients with respect to z, loc and scale");
}
