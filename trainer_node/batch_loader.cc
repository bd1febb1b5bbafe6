#include "trainer_node/batch_loader.h"

#include "absl/strings/str_cat.h"
#include "core/shard_plan.h"
#include "core/status_macros.h"

namespace kennel::trainer {

BatchLoader::BatchLoader(BatchLoaderOptions options, std::vector<int64_t> indices,
                         int64_t first_batch)
    : options_(std::move(options)),
      indices_(std::move(indices)),
      num_batches_((static_cast<int64_t>(indices_.size()) + options_.batch_size - 1) /
                   options_.batch_size),
      next_to_make_(first_batch),
      next_to_take_(first_batch) {
  for (int i = 0; i < std::max(1, options_.workers); ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
}

BatchLoader::~BatchLoader() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  for (auto& w : workers_) w.join();
}

void BatchLoader::WorkerLoop() {
  while (true) {
    int64_t batch;
    {
      absl::MutexLock lock(&mu_);
      auto can_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || (next_to_make_ < num_batches_ &&
                         next_to_make_ < next_to_take_ + options_.prefetch_batches);
      };
      mu_.Await(absl::Condition(&can_work));
      if (stop_ || next_to_make_ >= num_batches_) return;
      batch = next_to_make_++;
    }
    absl::StatusOr<Batch> made = Make(batch);
    absl::MutexLock lock(&mu_);
    ready_.emplace(batch, std::move(made));
  }
}

absl::StatusOr<Batch> BatchLoader::Make(int64_t batch) const {
  const auto& spec = options_.preprocess;
  const int64_t begin = batch * options_.batch_size;
  const int64_t n = std::min<int64_t>(options_.batch_size, static_cast<int64_t>(indices_.size()) - begin);
  const int64_t per_sample = core::PreprocessedSize(spec);
  const auto host = torch::TensorOptions().pinned_memory(options_.pin_memory);
  Batch out{torch::empty({n, spec.channels(), spec.height(), spec.width()}, host.dtype(torch::kFloat32)),
            torch::empty({n}, host.dtype(torch::kInt64))};
  float* images = out.images.data_ptr<float>();
  int64_t* labels = out.labels.data_ptr<int64_t>();
  const core::Augmentation augmentation;
  const int decode_hint = options_.augment ? 0 : core::DecodeHint(spec);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t sample = indices_[static_cast<size_t>(begin + i)];
    ASSIGN_OR_RETURN(cv::Mat image, options_.reader->Load(sample, spec.channels(), decode_hint));
    float* dst = images + i * per_sample;
    if (options_.augment) {
      std::mt19937_64 rng(core::MixSeed(options_.seed, static_cast<uint64_t>(options_.epoch),
                                        static_cast<uint64_t>(sample)));
      RETURN_IF_ERROR(core::AugmentInto(image, spec, augmentation, rng, dst));
    } else {
      RETURN_IF_ERROR(core::PreprocessInto(image, spec, dst));
    }
    labels[i] = options_.reader->label(sample);
  }
  return out;
}

absl::StatusOr<Batch> BatchLoader::Next() {
  absl::MutexLock lock(&mu_);
  if (next_to_take_ >= num_batches_) return absl::OutOfRangeError("no more batches this epoch");
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return ready_.contains(next_to_take_); };
  mu_.Await(absl::Condition(&ready));
  auto node = ready_.extract(next_to_take_);
  ++next_to_take_;
  return std::move(node.mapped());
}

}  // namespace kennel::trainer
