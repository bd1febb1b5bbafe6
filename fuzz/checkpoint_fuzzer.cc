// Restoring a training checkpoint (downloaded from the coordinator's store when a job resumes
// or re-forms): any blob restores or gives DATA_LOSS / INVALID_ARGUMENT, never a crash.
// Inputs not starting with a checkpoint magic get a valid format-2 header and checksum
// wrapped around them, so the fuzzer reaches the payload and the restore logic behind the
// checksum. (Format-1 payloads go to LibTorch's TorchScript loader, which this target found
// crashing on crafted input: Kennel no longer writes them; see trainer_node/checkpoint.h.)
#include <cstddef>
#include <cstdint>

#include "fuzz/seeds.h"
#include "trainer_node/checkpoint.h"

namespace {

// A classifier small enough for quick restores and short seeds.
class TinyClassifier : public kennel::core::Classifier {
 public:
  TinyClassifier() : Classifier(kennel::v1::ModelSpec()) {
    fc_ = register_module("fc", torch::nn::Linear(4, 2));
  }
  torch::Tensor forward(torch::Tensor x) override { return fc_->forward(x); }

 private:
  torch::nn::Linear fc_{nullptr};
};

struct Trainee {
  std::shared_ptr<TinyClassifier> model = std::make_shared<TinyClassifier>();
  torch::optim::SGD optimizer{model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9)};
};

std::vector<std::string> Seeds() {
  Trainee t;
  // One step, so the optimizer holds momentum buffers.
  t.model->forward(torch::ones({3, 4})).sum().backward();
  t.optimizer.step();
  kennel::trainer::TrainingPosition position;
  position.epoch = 2;
  position.step_in_epoch = 5;
  position.global_step = 41;
  position.world_size = 2;
  auto blob = kennel::trainer::SerializeCheckpoint(*t.model, t.optimizer, position);
  return {blob->substr(48), *blob};  // The payload alone (wrapped when fuzzed), and whole.
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kennel::fuzz::WriteSeedsIfAsked(Seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string blob(reinterpret_cast<const char*>(data), size);
  if (blob.rfind("KNLCKPT", 0) != 0) blob = kennel::trainer::SealCheckpoint(blob);
  static Trainee* trainee = new Trainee;
  kennel::trainer::TrainingPosition position;
  absl::Status status = kennel::trainer::RestoreCheckpoint(blob, *trainee->model, trainee->optimizer, &position);
  kennel::fuzz::Check(status.ok() || status.code() == absl::StatusCode::kDataLoss ||
                          status.code() == absl::StatusCode::kInvalidArgument,
                      "a bad checkpoint is DATA_LOSS or INVALID_ARGUMENT");
  return 0;
}
