#include "core/ml/fused_ops.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace kennel::core {
namespace {

// Window positions in the order the reference scans them: (0,0), (0,1), (1,0), (1,1).
// kNone marks an output whose maximum is <= 0: ReLU passes no gradient there.
constexpr int32_t kNone = 4;

// Four lanes with GCC/Clang vector extensions: SSE on x86-64, NEON on arm64, no intrinsics.
// Pooling is branchy as scalar code and branch misses dominate on real (not repeated) data.
using F4 = float __attribute__((vector_size(16)));
using I4 = int32_t __attribute__((vector_size(16)));
using U4 = uint8_t __attribute__((vector_size(4)));
constexpr int kLanes = 4;

inline F4 Load(const float* p) {
  F4 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void Store(float* p, F4 v) { std::memcpy(p, &v, sizeof(v)); }
inline F4 Even(F4 lo, F4 hi) { return __builtin_shufflevector(lo, hi, 0, 2, 4, 6); }
inline F4 Odd(F4 lo, F4 hi) { return __builtin_shufflevector(lo, hi, 1, 3, 5, 7); }

// Lane masks (-1 / 0): `b` replaces `a` when strictly greater or NaN, so the first maximum
// wins ties as in the reference's scan, and a NaN anywhere reaches the output.
inline I4 Takes(F4 b, F4 a) { return (b > a) | (b != b); }

// Four windows: `top` holds 8 floats of the upper row, `bottom` 8 of the lower one.
struct Pooled {
  F4 value;
  I4 position;  // 0..3, or kNone.
};
inline Pooled PoolFour(const float* top, const float* bottom) {
  const F4 t0 = Load(top), t1 = Load(top + kLanes), b0 = Load(bottom), b1 = Load(bottom + kLanes);
  const F4 a = Even(t0, t1), b = Odd(t0, t1), c = Even(b0, b1), d = Odd(b0, b1);
  const I4 take_b = Takes(b, a), take_d = Takes(d, c);
  const F4 upper = take_b ? b : a, lower = take_d ? d : c;
  const I4 take_lower = Takes(lower, upper);
  const F4 m = take_lower ? lower : upper;
  const I4 live = (m > 0.0f) | (m != m);  // ReLU keeps positives and NaN.
  const I4 position = take_lower ? (take_d ? 3 : 2) : (take_b ? 1 : 0);
  return {live ? m : F4{}, live ? position : I4{} + kNone};
}

// Where each group of four outputs of a row starts. A row of at least four ends with a group
// that overlaps the one before (it recomputes, and rewrites, the same values), so every group
// is a full one; shorter rows go through zero-padded copies.
template <typename Fn>
inline void ForEachGroup(int64_t ow, Fn&& fn) {
  if (ow < kLanes) {
    fn(int64_t{0}, ow);
    return;
  }
  for (int64_t x = 0; x < ow; x += kLanes) fn(std::min(x, ow - kLanes), int64_t{kLanes});
}

// One plane: in [h, w] -> out [h/2, w/2] (+ index when `index` is not null).
void ForwardPlane(const float* in, int64_t h, int64_t w, float* out, uint8_t* index) {
  const int64_t oh = h / 2, ow = w / 2;
  for (int64_t y = 0; y < oh; ++y) {
    const float* r0 = in + 2 * y * w;
    const float* r1 = r0 + w;
    float* o = out + y * ow;
    uint8_t* k = index != nullptr ? index + y * ow : nullptr;
    ForEachGroup(ow, [&](int64_t x, int64_t n) {
      Pooled p;
      if (n == kLanes) {
        p = PoolFour(r0 + 2 * x, r1 + 2 * x);
        Store(o + x, p.value);  // Fixed-size copies are single stores; variable ones are calls.
        const U4 position = __builtin_convertvector(p.position, U4);
        if (k != nullptr) std::memcpy(k + x, &position, kLanes);
        return;
      }
      float top[2 * kLanes] = {}, bottom[2 * kLanes] = {};
      std::copy_n(r0 + 2 * x, 2 * n, top);
      std::copy_n(r1 + 2 * x, 2 * n, bottom);
      p = PoolFour(top, bottom);
      for (int64_t i = 0; i < n; ++i) {
        o[x + i] = p.value[i];
        if (k != nullptr) k[x + i] = static_cast<uint8_t>(p.position[i]);
      }
    });
  }
}

// Scatters each output's gradient to its window position; every other input element (and
// the odd row / column floor mode drops) gets zero.
void BackwardPlane(const float* grad_out, const uint8_t* index, int64_t h, int64_t w, float* grad_in) {
  const int64_t oh = h / 2, ow = w / 2;
  for (int64_t y = 0; y < oh; ++y) {
    float* r0 = grad_in + 2 * y * w;
    float* r1 = r0 + w;
    const float* go = grad_out + y * ow;
    const uint8_t* ko = index + y * ow;
    ForEachGroup(ow, [&](int64_t x, int64_t n) {
      F4 g{};
      I4 k = I4{} + kNone;
      if (n == kLanes) {
        g = Load(go + x);
        U4 bytes;
        std::memcpy(&bytes, ko + x, kLanes);
        k = __builtin_convertvector(bytes, I4);
      } else {
        for (int64_t i = 0; i < n; ++i) {
          g[i] = go[x + i];
          k[i] = ko[x + i];
        }
      }
      const F4 a = k == 0 ? g : F4{}, b = k == 1 ? g : F4{}, c = k == 2 ? g : F4{}, d = k == 3 ? g : F4{};
      const F4 top[2] = {__builtin_shufflevector(a, b, 0, 4, 1, 5), __builtin_shufflevector(a, b, 2, 6, 3, 7)};
      const F4 bottom[2] = {__builtin_shufflevector(c, d, 0, 4, 1, 5), __builtin_shufflevector(c, d, 2, 6, 3, 7)};
      if (n == kLanes) {
        Store(r0 + 2 * x, top[0]);
        Store(r0 + 2 * x + kLanes, top[1]);
        Store(r1 + 2 * x, bottom[0]);
        Store(r1 + 2 * x + kLanes, bottom[1]);
      } else {
        std::memcpy(r0 + 2 * x, top, static_cast<size_t>(2 * n) * sizeof(float));
        std::memcpy(r1 + 2 * x, bottom, static_cast<size_t>(2 * n) * sizeof(float));
      }
    });
    if (w % 2 != 0) r0[w - 1] = r1[w - 1] = 0.0f;
  }
  if (h % 2 != 0) std::fill(grad_in + (h - 1) * w, grad_in + h * w, 0.0f);
}

// Planes per parallel task: enough work (a 28x28 plane is ~1 us) to amortise scheduling.
constexpr int64_t kGrain = 16;

at::Tensor Forward(const at::Tensor& input, at::Tensor* index) {
  const at::Tensor x = input.contiguous();
  const int64_t planes = x.size(0) * x.size(1), h = x.size(2), w = x.size(3);
  at::Tensor out = at::empty({x.size(0), x.size(1), h / 2, w / 2}, x.options());
  if (index != nullptr) *index = at::empty(out.sizes(), x.options().dtype(at::kByte));
  const float* in = x.data_ptr<float>();
  float* o = out.data_ptr<float>();
  uint8_t* k = index != nullptr ? index->data_ptr<uint8_t>() : nullptr;
  const int64_t in_plane = h * w, out_plane = (h / 2) * (w / 2);
  at::parallel_for(0, planes, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      ForwardPlane(in + p * in_plane, h, w, o + p * out_plane, k != nullptr ? k + p * out_plane : nullptr);
    }
  });
  return out;
}

class ReluMaxPool2x2Function : public torch::autograd::Function<ReluMaxPool2x2Function> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x) {
    at::Tensor index;
    at::Tensor out = Forward(x, &index);
    ctx->save_for_backward({index});
    ctx->saved_data["h"] = x.size(2);
    ctx->saved_data["w"] = x.size(3);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor index = ctx->get_saved_variables()[0];
    const at::Tensor grad_out = grads[0].contiguous();
    const int64_t h = ctx->saved_data["h"].toInt(), w = ctx->saved_data["w"].toInt();
    at::Tensor grad_in = at::empty({index.size(0), index.size(1), h, w}, grad_out.options());
    const int64_t planes = index.size(0) * index.size(1), in_plane = h * w, out_plane = (h / 2) * (w / 2);
    const float* g = grad_out.data_ptr<float>();
    const uint8_t* k = index.data_ptr<uint8_t>();
    float* gi = grad_in.data_ptr<float>();
    at::parallel_for(0, planes, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        BackwardPlane(g + p * out_plane, k + p * out_plane, h, w, gi + p * in_plane);
      }
    });
    return {grad_in};
  }
};

}  // namespace

at::Tensor ReluMaxPool2x2(const at::Tensor& x) {
  if (!x.device().is_cpu() || x.scalar_type() != at::kFloat || x.dim() != 4 || x.size(2) < 2 ||
      x.size(3) < 2 || x.is_mkldnn() || x.is_sparse()) {
    return torch::max_pool2d(torch::relu(x), 2);
  }
  if (x.requires_grad() && torch::autograd::GradMode::is_enabled()) {
    return ReluMaxPool2x2Function::apply(x);
  }
  return Forward(x, nullptr);
}

}  // namespace kennel::core
