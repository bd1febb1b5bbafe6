#include "trainer_node/grad_sync.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace kennel::trainer {
namespace {
constexpr int64_t kFirstBucketCapBytes = 1 << 20;  // As DDP: the first bucket starts early.
// PowerSGD leaves smaller matrices whole: their bytes take less time on a link than the second
// all-reduce's round trip costs (the small CNN's 64x288 convolution: a 7 kB bucket in two
// all-reduces waited 6-7 ms at the end of backward, against 3 ms for its 75 kB whole).
constexpr int64_t kMinLowRankElements = 1 << 16;
}  // namespace

absl::StatusOr<std::unique_ptr<GradientSynchronizer>> GradientSynchronizer::Create(
    std::vector<torch::Tensor> params, Communicator* comm, int64_t bucket_cap_bytes,
    torch::ScalarType wire_type, LowRank low_rank) {
  if (wire_type != torch::kFloat32 && wire_type != torch::kHalf && wire_type != torch::kBFloat16) {
    return absl::InvalidArgumentError("gradients travel as float32, float16 or bfloat16");
  }
  if (low_rank.rank < 0 || (low_rank.rank > 0 && wire_type != torch::kFloat32)) {
    return absl::InvalidArgumentError("PowerSGD takes float32 gradients and a rank of at least 1");
  }
  std::unique_ptr<GradientSynchronizer> sync(new GradientSynchronizer(comm, wire_type));
  sync->low_rank_ = low_rank;
  std::vector<int64_t> bucket_numels;
  int64_t bytes = 0;
  for (auto it = params.rbegin(); it != params.rend(); ++it) {
    const torch::Tensor& p = *it;
    if (!p.requires_grad()) continue;
    if (p.scalar_type() != torch::kFloat32) {
      return absl::InvalidArgumentError("gradient buckets hold float32 parameters only");
    }
    const int64_t cap = sync->buckets_.size() <= 1 ? kFirstBucketCapBytes : bucket_cap_bytes;
    if (sync->buckets_.empty() || bytes >= cap) {
      sync->buckets_.emplace_back();
      bucket_numels.push_back(0);
      bytes = 0;
    }
    const int b = static_cast<int>(sync->buckets_.size()) - 1;
    Slot slot;
    slot.param = p;
    slot.bucket = b;
    slot.offset = bucket_numels[b];
    if (low_rank.rank > 0 && p.dim() >= 2 && p.numel() >= kMinLowRankElements) {
      const int64_t n = p.size(0), m = p.numel() / p.size(0), r = std::min({int64_t{low_rank.rank}, n, m});
      if (n * m >= 2 * r * (n + m)) {  // As DDP's min_compression_rate: at least 2x fewer bytes.
        slot.n = n;
        slot.m = m;
        slot.r = r;
        auto gen = at::make_generator<at::CPUGeneratorImpl>(low_rank.seed + sync->slots_.size());
        slot.q = at::randn({m, r}, gen, torch::TensorOptions().dtype(torch::kFloat32)).to(p.device());
        slot.error = torch::zeros({n, m}, torch::TensorOptions().dtype(torch::kFloat32).device(p.device()));
      }
    }
    sync->buckets_[b].low_rank_bytes += 4 * (slot.r > 0 ? slot.r * (slot.n + slot.m) : p.numel());
    sync->buckets_[b].slots.push_back(sync->slots_.size());
    sync->slots_.push_back(std::move(slot));
    bucket_numels[b] += p.numel();
    sync->buckets_[b].size++;
    bytes += p.numel() * 4;
  }
  for (size_t b = 0; b < sync->buckets_.size(); ++b) {
    const auto& device = sync->slots_.front().param.device();
    sync->buckets_[b].flat =
        torch::zeros({bucket_numels[b]}, torch::TensorOptions().dtype(torch::kFloat32).device(device));
    if (wire_type != torch::kFloat32) {
      sync->buckets_[b].wire = torch::zeros({bucket_numels[b]}, torch::TensorOptions().dtype(wire_type).device(device));
    }
  }
  {
    absl::MutexLock lock(&sync->mu_);
    sync->arrived_.assign(sync->slots_.size(), false);
  }
  if (comm->world_size() > 1) {
    for (size_t i = 0; i < sync->slots_.size(); ++i) {
      GradientSynchronizer* self = sync.get();
      sync->slots_[i].hook = sync->slots_[i].param.register_hook(
          [self, i](torch::Tensor grad) { self->OnGradient(i, grad); });
    }
    sync->comm_thread_ = std::thread([self = sync.get()] { self->CommLoop(); });
  }
  return sync;
}

GradientSynchronizer::~GradientSynchronizer() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (!comm_thread_.joinable()) return;  // Single rank: no hooks were registered.
  comm_thread_.join();
  for (auto& slot : slots_) slot.param.remove_hook(slot.hook);
}

void GradientSynchronizer::BeginStep() {
  absl::MutexLock lock(&mu_);
  std::fill(arrived_.begin(), arrived_.end(), false);
  for (auto& b : buckets_) b.pending = b.size;
  ++steps_;
  next_to_reduce_ = 0;
  reduced_ = 0;
  in_step_ = true;
}

void GradientSynchronizer::OnGradient(size_t i, const torch::Tensor& grad) {
  const Slot& slot = slots_[i];
  // The copy runs outside the lock: each slot's region is written by its own hook only.
  buckets_[slot.bucket].flat.narrow(0, slot.offset, slot.param.numel()).copy_(grad.reshape({-1}));
  absl::MutexLock lock(&mu_);
  if (!in_step_ || arrived_[i]) return;
  arrived_[i] = true;
  if (--buckets_[slot.bucket].pending == 0) buckets_[slot.bucket].ready = Clock::now();
}

void GradientSynchronizer::CommLoop() {
  while (true) {
    int b;
    bool low_rank;
    absl::Status previous;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || (in_step_ && next_to_reduce_ < static_cast<int>(buckets_.size()) &&
                         buckets_[next_to_reduce_].pending == 0);
      };
      mu_.Await(absl::Condition(&ready));
      if (stop_) return;
      b = next_to_reduce_++;
      low_rank = low_rank_.rank > 0 && low_rank_.steps_done + steps_ > low_rank_.warmup_steps;
      previous = error_;
    }
    // After a failure the group is broken; later buckets are not sent.
    buckets_[b].reduce_start = Clock::now();
    absl::Status status = previous.ok() ? Reduce(buckets_[b], low_rank) : previous;
    buckets_[b].reduce_end = Clock::now();
    absl::MutexLock lock(&mu_);
    if (!status.ok() && error_.ok()) error_ = status;
    ++reduced_;
  }
}

absl::Status GradientSynchronizer::Reduce(Bucket& bucket, bool low_rank) {
  bucket.sent_bytes = low_rank ? bucket.low_rank_bytes : (bucket.wire.defined() ? bucket.wire : bucket.flat).nbytes();
  if (low_rank) return ReduceLowRank(bucket);
  if (wire_type_ == torch::kFloat32) {
    RETURN_IF_ERROR(comm_->AllReduceSum(bucket.flat));
    bucket.flat.div_(comm_->world_size());
    return absl::OkStatus();
  }
  // Scaled before rounding, so the sum over ranks stays in float16's range.
  bucket.flat.div_(comm_->world_size());
  bucket.wire.copy_(bucket.flat);
  RETURN_IF_ERROR(comm_->AllReduceSum(bucket.wire));
  bucket.flat.copy_(bucket.wire);
  return absl::OkStatus();
}

namespace {

// Gram-Schmidt on the columns, in place (DDP's PowerSGD does the same; a zero column stays 0).
void Orthogonalize(torch::Tensor& p) {
  const int64_t r = p.size(1);
  for (int64_t i = 0; i < r; ++i) {
    torch::Tensor col = p.narrow(1, i, 1);
    col.div_(col.norm() + 1e-8);
    if (i + 1 < r) {
      torch::Tensor rest = p.narrow(1, i + 1, r - i - 1);
      rest.sub_((col * rest).sum(0, /*keepdim=*/true) * col);
    }
  }
}

}  // namespace

absl::Status GradientSynchronizer::ReduceLowRank(Bucket& bucket) {
  torch::NoGradGuard no_grad;
  const double world = comm_->world_size();
  auto region = [&](const Slot& s) { return bucket.flat.narrow(0, s.offset, s.param.numel()); };
  // First all-reduce: each matrix's P = (M + error) Q, and the tensors sent whole.
  std::vector<torch::Tensor> first;
  for (size_t i : bucket.slots) {
    Slot& s = slots_[i];
    if (s.r == 0) {
      first.push_back(region(s));
      continue;
    }
    torch::Tensor m = region(s).view({s.n, s.m});
    m.add_(s.error);
    first.push_back(m.mm(s.q).view({-1}));
  }
  torch::Tensor sums = torch::cat(first);
  RETURN_IF_ERROR(comm_->AllReduceSum(sums));
  // Second: Q = M^T P with P orthogonalized, the same P on every rank.
  std::vector<torch::Tensor> ps(slots_.size()), second;
  int64_t at = 0;
  for (size_t i : bucket.slots) {
    Slot& s = slots_[i];
    if (s.r == 0) {
      region(s).copy_(sums.narrow(0, at, s.param.numel())).div_(world);
      at += s.param.numel();
      continue;
    }
    ps[i] = sums.narrow(0, at, s.n * s.r).view({s.n, s.r}).clone();
    at += s.n * s.r;
    Orthogonalize(ps[i]);
    second.push_back(region(s).view({s.n, s.m}).t().mm(ps[i]).view({-1}));
  }
  if (second.empty()) return absl::OkStatus();
  torch::Tensor qs = torch::cat(second);
  RETURN_IF_ERROR(comm_->AllReduceSum(qs));
  qs.div_(world);
  at = 0;
  for (size_t i : bucket.slots) {
    Slot& s = slots_[i];
    if (s.r == 0) continue;
    s.q.copy_(qs.narrow(0, at, s.m * s.r).view({s.m, s.r}));  // Next step's warm start.
    at += s.m * s.r;
    torch::Tensor m = region(s).view({s.n, s.m});
    torch::Tensor mean = ps[i].mm(s.q.t());
    torch::sub_out(s.error, m, mean);  // What this rank's gradient still holds beyond the mean.
    m.copy_(mean);
  }
  return absl::OkStatus();
}

absl::Status GradientSynchronizer::FinishStep() {
  if (comm_->world_size() == 1) return absl::OkStatus();  // Gradients are already the mean.
  {
    absl::MutexLock lock(&mu_);
    // Backward has returned, so every gradient that will come has come: the rest are zero.
    for (size_t i = 0; i < slots_.size(); ++i) {
      if (arrived_[i]) continue;
      arrived_[i] = true;
      Bucket& bucket = buckets_[slots_[i].bucket];
      bucket.flat.narrow(0, slots_[i].offset, slots_[i].param.numel()).zero_();
      if (--bucket.pending == 0) bucket.ready = Clock::now();
    }
    auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return reduced_ == static_cast<int>(buckets_.size());
    };
    mu_.Await(absl::Condition(&done));
    in_step_ = false;
    if (!error_.ok()) return error_;
  }
  torch::NoGradGuard no_grad;
  for (auto& slot : slots_) {
    torch::Tensor mean = buckets_[slot.bucket].flat.narrow(0, slot.offset, slot.param.numel())
                             .view(slot.param.sizes());
    if (slot.param.grad().defined()) {
      slot.param.mutable_grad().copy_(mean);
    } else {
      slot.param.mutable_grad() = mean.clone();
    }
  }
  return absl::OkStatus();
}

std::vector<GradientSynchronizer::BucketTimes> GradientSynchronizer::LastStepTimes() const {
  std::vector<BucketTimes> times;
  if (comm_->world_size() == 1) return times;
  for (const Bucket& b : buckets_) {
    times.push_back({b.sent_bytes, b.ready, b.reduce_start, b.reduce_end});
  }
  return times;
}

}  // namespace kennel::trainer
