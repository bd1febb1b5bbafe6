// The first user's hyperparameter search as a TuningSpec, for tests of the tuning rules and of
// the tuner: learning rate 1e-3..1e-1 log-uniform, batch {32, 64, 128, 256}, momentum
// 0.5..0.99, over the small CNN on Debian's Fashion-MNIST.
#ifndef KENNEL_CORE_TESTING_TUNING_SPECS_H_
#define KENNEL_CORE_TESTING_TUNING_SPECS_H_

#include "kennel/v1/tuning.pb.h"

namespace kennel::core::testing {

// Named "fmnist", 16 trials of 9 epochs, seed 7, strategy and objective left to the defaults.
inline kennel::v1::TuningSpec SeedSearch() {
  namespace v1 = kennel::v1;
  v1::TuningSpec spec;
  spec.set_name("fmnist");
  spec.set_max_trials(16);
  spec.set_seed(7);
  v1::JobSpec& trial = *spec.mutable_trial();
  trial.set_name("t");
  trial.mutable_model()->set_architecture(v1::SMALL_CNN);
  trial.mutable_model()->set_num_classes(10);
  trial.mutable_model()->set_in_channels(1);
  trial.mutable_preprocess()->set_height(28);
  trial.mutable_preprocess()->set_width(28);
  trial.mutable_dataset()->set_format(v1::DatasetIndex::IDX);
  trial.mutable_dataset()->set_root("/usr/share/datasets/fashion-mnist");
  trial.mutable_training()->set_epochs(9);
  auto* lr = spec.add_space();
  lr->set_field("learning_rate");
  lr->set_kind(v1::SearchDimension::LOG_UNIFORM);
  lr->set_min(1e-3);
  lr->set_max(1e-1);
  auto* batch = spec.add_space();
  batch->set_field("batch_size");
  batch->set_kind(v1::SearchDimension::CHOICE);
  for (const char* b : {"32", "64", "128", "256"}) batch->add_choices(b);
  auto* momentum = spec.add_space();
  momentum->set_field("momentum");
  momentum->set_kind(v1::SearchDimension::UNIFORM);
  momentum->set_min(0.5);
  momentum->set_max(0.99);
  return spec;
}

}  // namespace kennel::core::testing

#endif  // KENNEL_CORE_TESTING_TUNING_SPECS_H_
