// Helpers for tests that serve models: a seeded small-CNN artifact, Fashion-MNIST test images
// as PNG files, and request builders.
#ifndef KENNEL_TESTS_TESTING_SERVING_HELPERS_H_
#define KENNEL_TESTS_TESTING_SERVING_HELPERS_H_

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <vector>

#include "core/ml/artifact.h"
#include "core/ml/dataset.h"
#include "kennel/v1/inference.pb.h"

namespace kennel::testing {

// A small CNN for Fashion-MNIST's 10 classes, initialised with seed `version`, written as an
// artifact (name "fashion") in `dir`; returns `dir`.
// answer >= 0: the model gives that class to every image (its head's bias outweighs the rest).
inline std::string WriteSmallCnn(const std::string& dir, int64_t version, int answer = -1) {
  v1::ModelManifest m;
  m.set_name("fashion");
  m.set_version(version);
  m.mutable_model()->set_architecture(v1::SMALL_CNN);
  m.mutable_model()->set_num_classes(10);
  m.mutable_model()->set_in_channels(1);
  auto index = *core::IndexFashionMnist(core::kDebianFashionMnistRoot, "test");
  *m.mutable_class_names() = index.class_names();
  m.mutable_preprocess()->set_height(28);
  m.mutable_preprocess()->set_width(28);
  m.mutable_preprocess()->set_channels(1);
  torch::manual_seed(version);
  auto model = *core::CreateModel(m.model());
  if (answer >= 0) {
    torch::NoGradGuard no_grad;
    model->named_parameters()["fc.bias"][answer] = 1e4;
  }
  std::filesystem::remove_all(dir);
  EXPECT_TRUE(core::WriteArtifact(dir, m, *model).ok());
  return dir;
}

inline std::vector<std::string> FashionPngs(int n) {
  auto index = *core::IndexFashionMnist(core::kDebianFashionMnistRoot, "test");
  auto reader = *core::DatasetReader::Create(index, core::kDebianFashionMnistRoot);
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    std::vector<uchar> buf;
    cv::imencode(".png", *reader->Load(i, 1), buf);
    out.emplace_back(buf.begin(), buf.end());
  }
  return out;
}

inline v1::ClassifyRequest ImageRequest(const std::string& id, const std::string& bytes, int top_k = 3) {
  v1::ClassifyRequest r;
  r.set_request_id(id);
  r.set_image(bytes);
  r.set_top_k(top_k);
  return r;
}

inline v1::ClassifyRequest TensorRequest(const std::string& id, std::vector<int64_t> shape, size_t floats) {
  v1::ClassifyRequest r;
  r.set_request_id(id);
  for (int64_t d : shape) r.mutable_tensor()->add_shape(d);
  r.mutable_tensor()->set_data(std::string(floats * 4, '\0'));
  return r;
}

}  // namespace kennel::testing

#endif  // KENNEL_TESTS_TESTING_SERVING_HELPERS_H_
