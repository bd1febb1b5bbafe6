#include "trainer_node/grad_sync.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace kennel::trainer {
namespace {
constexpr int64_t kFirstBucketCapBytes = 1 << 20;  // As DDP: the first bucket starts early.
}  // namespace

absl::StatusOr<std::unique_ptr<GradientSynchronizer>> GradientSynchronizer::Create(
    std::vector<torch::Tensor> params, Communicator* comm, int64_t bucket_cap_bytes,
    torch::ScalarType wire_type) {
  if (wire_type != torch::kFloat32 && wire_type != torch::kHalf && wire_type != torch::kBFloat16) {
    return absl::InvalidArgumentError("gradients travel as float32, float16 or bfloat16");
  }
  std::unique_ptr<GradientSynchronizer> sync(new GradientSynchronizer(comm, wire_type));
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
    sync->slots_.push_back({p, b, bucket_numels[b]});
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
      previous = error_;
    }
    // After a failure the group is broken; later buckets are not sent.
    buckets_[b].reduce_start = Clock::now();
    absl::Status status = previous.ok() ? Reduce(buckets_[b]) : previous;
    buckets_[b].reduce_end = Clock::now();
    absl::MutexLock lock(&mu_);
    if (!status.ok() && error_.ok()) error_ = status;
    ++reduced_;
  }
}

absl::Status GradientSynchronizer::Reduce(Bucket& bucket) {
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
    const torch::Tensor& sent = b.wire.defined() ? b.wire : b.flat;
    times.push_back({sent.numel() * static_cast<int64_t>(sent.element_size()), b.ready, b.reduce_start, b.reduce_end});
  }
  return times;
}

}  // namespace kennel::trainer
