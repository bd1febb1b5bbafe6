// manifest.json of a model artifact (uploaded by trainers and `kennelctl import`, read by
// inference nodes): any text gives a valid manifest or DATA_LOSS / INVALID_ARGUMENT; a
// manifest that passes writes back to JSON that passes to the same manifest.
#include <cstddef>
#include <cstdint>

#include <google/protobuf/util/message_differencer.h>

#include "core/ml/artifact.h"
#include "fuzz/seeds.h"

namespace {

std::vector<std::string> Seeds() {
  kennel::v1::ModelManifest m;
  m.set_format_version(kennel::core::kArtifactFormatVersion);
  m.set_name("fashion");
  m.set_version(3);
  m.set_weights_file(kennel::core::kWeightsFile);
  m.set_weights_bytes(1234);
  m.set_weights_sha256(std::string(64, 'a'));
  m.mutable_model()->set_architecture(kennel::v1::SMALL_CNN);
  m.mutable_model()->set_num_classes(3);
  m.mutable_model()->set_in_channels(1);
  for (const char* c : {"a", "b", "c"}) m.add_class_names(c);
  m.mutable_preprocess()->set_height(28);
  m.mutable_preprocess()->set_width(28);
  m.mutable_preprocess()->set_channels(1);
  m.mutable_preprocess()->add_mean(0.286f);
  m.mutable_preprocess()->add_std(0.353f);
  m.mutable_metrics()->set_test_accuracy(0.91);
  m.mutable_lineage()->set_job_id("job-7");
  kennel::v1::ModelManifest resnet = m;
  resnet.mutable_model()->set_architecture(kennel::v1::RESNET50);
  resnet.mutable_model()->set_num_classes(133);
  resnet.mutable_model()->set_in_channels(3);
  resnet.mutable_model()->set_head(kennel::v1::MLP);
  resnet.clear_class_names();
  for (int i = 0; i < 133; ++i) resnet.add_class_names("breed" + std::to_string(i));
  resnet.mutable_preprocess()->set_height(224);
  resnet.mutable_preprocess()->set_width(224);
  resnet.mutable_preprocess()->set_resize_shorter(256);
  resnet.mutable_preprocess()->set_channels(3);
  return {kennel::core::ManifestToJson(m), kennel::core::ManifestToJson(resnet)};
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kennel::fuzz::WriteSeedsIfAsked(Seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view json(reinterpret_cast<const char*>(data), size);
  auto manifest = kennel::core::ParseManifest(json, "fuzz");
  if (!manifest.ok()) {
    const auto code = manifest.status().code();
    kennel::fuzz::Check(code == absl::StatusCode::kDataLoss || code == absl::StatusCode::kInvalidArgument,
                        "a bad manifest is DATA_LOSS or INVALID_ARGUMENT");
    return 0;
  }
  auto again = kennel::core::ParseManifest(kennel::core::ManifestToJson(*manifest), "fuzz");
  kennel::fuzz::Check(again.ok(), "a valid manifest written back parses");
  kennel::fuzz::Check(google::protobuf::util::MessageDifferencer::Equals(*manifest, *again),
                      "a valid manifest round-trips");
  return 0;
}
