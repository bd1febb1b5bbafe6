#include "coordinator/job_datasets.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/dataset_index.h"
#include "core/job_spec.h"
#include "core/shard_plan.h"
#include "core/status_macros.h"

namespace kennel::coordinator {
namespace {

absl::StatusOr<v1::DatasetIndex> Index(const v1::DatasetSpec& data, const std::string& split) {
  if (data.format() == v1::DatasetIndex::IDX) return core::IndexFashionMnist(data.root(), split);
  return core::IndexImageFolder(data.root(), split);
}

// Keeps a seeded random subset of `limit` samples (in index order).
absl::Status Limit(v1::DatasetIndex& index, int64_t limit, uint64_t seed) {
  if (limit <= 0 || limit >= index.samples_size()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::vector<int64_t> order,
                   core::ShardIndices({.seed = seed, .epoch = -1, .world_size = 1,
                                       .dataset_size = index.samples_size()}));
  order.resize(static_cast<size_t>(limit));
  std::sort(order.begin(), order.end());
  google::protobuf::RepeatedPtrField<v1::Sample> kept;
  for (int64_t i : order) *kept.Add() = index.samples(static_cast<int>(i));
  index.mutable_samples()->Swap(&kept);
  core::Fingerprint(index);
  return absl::OkStatus();
}

absl::Status WithContext(const absl::Status& s, absl::string_view what) {
  return absl::Status(s.code() == absl::StatusCode::kNotFound ? absl::StatusCode::kInvalidArgument : s.code(),
                      absl::StrCat(what, ": ", s.message()));
}

}  // namespace

absl::StatusOr<StoredJob> PrepareJob(v1::JobSpec spec) {
  // Validate everything but the class count before the (slow) indexing.
  v1::JobSpec probe = spec;
  if (probe.model().num_classes() == 0) probe.mutable_model()->set_num_classes(1);
  ASSIGN_OR_RETURN(probe, core::NormalizeJobSpec(probe));
  const v1::DatasetSpec& data = probe.dataset();

  StoredJob job;
  auto train = Index(data, data.train_split());
  if (!train.ok()) return WithContext(train.status(), "training split");
  auto eval = Index(data, data.eval_split());
  if (!eval.ok()) return WithContext(eval.status(), "evaluation split");
  job.train = *std::move(train);
  job.eval = *std::move(eval);
  const uint64_t seed = probe.training().seed();
  RETURN_IF_ERROR(Limit(job.train, data.max_train_samples(), seed));
  RETURN_IF_ERROR(Limit(job.eval, data.max_eval_samples(), seed + 1));

  const int classes = job.train.class_names_size();
  if (spec.model().num_classes() == 0) spec.mutable_model()->set_num_classes(classes);
  if (spec.model().num_classes() != classes) {
    return absl::InvalidArgumentError(absl::StrCat("the model has ", spec.model().num_classes(),
                                                   " classes but the dataset ", classes));
  }
  if (job.eval.class_names_size() != classes) {
    return absl::InvalidArgumentError("training and evaluation splits have different classes");
  }
  if (job.train.samples_size() < spec.world_size()) {
    return absl::InvalidArgumentError(absl::StrCat("the training split has ", job.train.samples_size(),
                                                   " samples, fewer than world_size"));
  }
  ASSIGN_OR_RETURN(*job.status.mutable_spec(), core::NormalizeJobSpec(spec));
  job.status.set_train_samples(job.train.samples_size());
  job.status.set_eval_samples(job.eval.samples_size());
  return job;
}

}  // namespace kennel::coordinator
