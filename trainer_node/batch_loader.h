// Prefetching batch loader: worker threads decode, augment and normalise samples into batch
// tensors ahead of the training loop, which takes them in order. Augmentation is seeded per
// sample from (seed, epoch, sample index), so a batch is the same whichever worker made it
// and whether or not the run was resumed.
//
// Owns its worker threads; the destructor stops and joins them. Next() is called from one
// thread.
#ifndef KENNEL_TRAINER_NODE_BATCH_LOADER_H_
#define KENNEL_TRAINER_NODE_BATCH_LOADER_H_

#include <torch/types.h>

#include <map>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/ml/dataset.h"
#include "core/ml/image.h"
#include "kennel/v1/model.pb.h"

namespace kennel::trainer {

struct Batch {
  torch::Tensor images;  // [N, C, H, W] float32.
  torch::Tensor labels;  // [N] int64.
};

struct BatchLoaderOptions {
  const core::DatasetReader* reader = nullptr;  // Not owned; outlives the loader.
  // Page-locked batches, so the copy to a GPU is asynchronous (needs CUDA at run time).
  bool pin_memory = false;
  kennel::v1::PreprocessSpec preprocess;        // Normalised.
  bool augment = false;
  uint64_t seed = 0;
  int64_t epoch = 0;
  int batch_size = 64;
  int workers = 2;
  int prefetch_batches = 4;
};

class BatchLoader {
 public:
  // Visits `indices` in order in batches of batch_size (the last may be smaller), starting at
  // batch `first_batch` (to resume mid-epoch).
  BatchLoader(BatchLoaderOptions options, std::vector<int64_t> indices, int64_t first_batch = 0);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  int64_t num_batches() const { return num_batches_; }

  // The next batch in order; blocks until a worker has made it. OUT_OF_RANGE after the last;
  // the error of a sample that could not be read (naming its file).
  absl::StatusOr<Batch> Next();

 private:
  void WorkerLoop();
  absl::StatusOr<Batch> Make(int64_t batch) const;

  const BatchLoaderOptions options_;
  const std::vector<int64_t> indices_;
  const int64_t num_batches_;
  absl::Mutex mu_;
  int64_t next_to_make_ ABSL_GUARDED_BY(mu_);
  int64_t next_to_take_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::map<int64_t, absl::StatusOr<Batch>> ready_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> workers_;
};

}  // namespace kennel::trainer

#endif  // KENNEL_TRAINER_NODE_BATCH_LOADER_H_
