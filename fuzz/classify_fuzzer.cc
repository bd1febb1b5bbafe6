// Classify's request handling on an inference node serving a real (small, randomly
// initialised) model: any request — a serialized ClassifyRequest, or any bytes as its image —
// gets an answer (top-k of the model's classes, probabilities in [0, 1], best first) or
// INVALID_ARGUMENT, never a crash, a hang or an out-of-bounds read in decoding or
// preprocessing.
//
// Input: first byte 0: the rest is a serialized kennel.v1.ClassifyRequest; otherwise the rest
// is the image and (first byte % 8) - 1 the top_k asked for.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <future>

#include <opencv2/imgcodecs.hpp>

#include "core/ml/artifact.h"
#include "fuzz/seeds.h"
#include "inference_node/engine.h"

namespace fs = std::filesystem;
using kennel::v1::ClassifyRequest;

namespace {

kennel::v1::ModelManifest Manifest() {
  kennel::v1::ModelManifest m;
  m.set_name("fuzz");
  m.set_version(1);
  m.mutable_model()->set_architecture(kennel::v1::SMALL_CNN);
  m.mutable_model()->set_num_classes(10);
  m.mutable_model()->set_in_channels(3);
  for (int i = 0; i < 10; ++i) m.add_class_names("class" + std::to_string(i));
  // RGB with a resize of the shorter side and a center crop: every preprocessing step runs.
  m.mutable_preprocess()->set_height(28);
  m.mutable_preprocess()->set_width(28);
  m.mutable_preprocess()->set_resize_shorter(32);
  m.mutable_preprocess()->set_channels(3);
  return m;
}

std::vector<std::string> Seeds() {
  std::vector<std::string> out;
  cv::Mat color(30, 40, CV_8UC3);
  cv::randu(color, 0, 255);
  cv::Mat gray(9, 7, CV_8UC1, cv::Scalar(128));
  for (const auto& [image, ext] : std::vector<std::pair<cv::Mat, std::string>>{
           {color, ".jpg"}, {color, ".png"}, {gray, ".jpg"}, {gray, ".png"}}) {
    std::vector<uchar> bytes;
    cv::imencode(ext, image, bytes);
    out.push_back(std::string(1, '\x04') + std::string(bytes.begin(), bytes.end()));
  }
  ClassifyRequest tensor;
  tensor.set_request_id("t");
  tensor.set_top_k(3);
  tensor.mutable_tensor()->add_shape(3);
  tensor.mutable_tensor()->add_shape(28);
  tensor.mutable_tensor()->add_shape(28);
  tensor.mutable_tensor()->set_data(std::string(3 * 28 * 28 * 4, '\0'));
  out.push_back(std::string(1, '\0') + tensor.SerializeAsString());
  ClassifyRequest image;
  image.set_request_id("i");
  image.set_image(out[0].substr(1));
  out.push_back(std::string(1, '\0') + image.SerializeAsString());
  return out;
}

kennel::inference::Engine* engine = nullptr;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kennel::fuzz::WriteSeedsIfAsked(Seeds);
  kennel::fuzz::QuietProtobuf();
  const fs::path dir = fs::temp_directory_path() / ("classify-fuzz-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  auto model = kennel::core::CreateModel(Manifest().model());
  kennel::fuzz::Check(model.ok(), "the model builds");
  kennel::fuzz::Check(kennel::core::WriteArtifact(dir.string(), Manifest(), **model).ok(), "artifact written");
  kennel::inference::EngineOptions options;
  options.model.batcher.max_batch_size = 1;
  // Limits that keep one input's decode small (the defaults allow 50-megapixel photos).
  options.limits.max_side = 2048;
  options.limits.max_pixels = 1 << 20;
  static kennel::inference::Metrics metrics;
  auto created = kennel::inference::Engine::Create(options, &metrics);
  kennel::fuzz::Check(created.ok(), "the engine starts");
  engine = created->release();
  kennel::fuzz::Check(engine->Deploy(dir.string()).ok(), "the model deploys");
  fs::remove_all(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  ClassifyRequest request;
  if (data[0] == 0) {
    if (!request.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  } else {
    request.set_image(reinterpret_cast<const char*>(data + 1), size - 1);
    request.set_top_k(data[0] % 8 - 1);
  }
  std::promise<std::pair<absl::Status, kennel::v1::ClassifyResponse>> answered;
  engine->Classify(request, absl::Now() + absl::Seconds(60),
                   [&](const absl::Status& status, kennel::v1::ClassifyResponse response) {
                     answered.set_value({status, std::move(response)});
                   });
  auto [status, response] = answered.get_future().get();
  if (!status.ok()) {
    // (A tensor of NaNs gives a non-finite output: refused as INTERNAL, by design.)
    kennel::fuzz::Check(status.code() == absl::StatusCode::kInvalidArgument ||
                            (request.has_tensor() && status.code() == absl::StatusCode::kInternal),
                        "a bad request is INVALID_ARGUMENT");
    return 0;
  }
  const int k = request.top_k() > 0 ? std::min(request.top_k(), 10) : 5;
  kennel::fuzz::Check(response.predictions_size() == k, "top-k predictions");
  for (int i = 0; i < response.predictions_size(); ++i) {
    const auto& p = response.predictions(i);
    kennel::fuzz::Check(p.class_index() >= 0 && p.class_index() < 10, "a class of the model");
    kennel::fuzz::Check(p.probability() >= 0 && p.probability() <= 1, "a probability");
    kennel::fuzz::Check(i == 0 || p.probability() <= response.predictions(i - 1).probability(),
                        "best first");
  }
  return 0;
}
