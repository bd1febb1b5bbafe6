// The inference node with its model on a CUDA GPU (ctest -L gpu): fp16 answers agree with
// the CPU's fp32 ones, and a corrupt image inside a GPU batch fails only its own request.
// Without a GPU every test is skipped, saying why.
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "inference_node/inference_node.h"
#include "kennel/v1/inference.grpc.pb.h"
#include "tests/testing/serving_helpers.h"

namespace kennel {
namespace {

using inference::InferenceNode;
using inference::InferenceNodeOptions;

// Every request on one stream, all in flight; responses by request id.
std::map<std::string, v1::ClassifyResponse> Classify(InferenceNode& node, const std::vector<v1::ClassifyRequest>& requests) {
  auto stub = v1::Inference::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", node.port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  auto stream = stub->ClassifyStream(&context);
  std::map<std::string, v1::ClassifyResponse> out;
  std::thread reader([&] {
    v1::ClassifyResponse r;
    while (stream->Read(&r)) out[r.request_id()] = r;
  });
  for (const auto& r : requests) EXPECT_TRUE(stream->Write(r));
  stream->WritesDone();
  reader.join();
  EXPECT_TRUE(stream->Finish().ok());
  return out;
}

std::unique_ptr<InferenceNode> Start(const std::string& model_dir, const std::string& device, const std::string& precision) {
  InferenceNodeOptions options;
  options.listen_address = "127.0.0.1:0";
  options.metrics_port = -1;
  options.model_dir = model_dir;
  options.engine.model.device = device;
  options.engine.model.precision = precision;
  options.engine.model.instances = 1;
  options.engine.model.batcher.max_batch_size = 32;
  auto node = InferenceNode::Create(options);
  EXPECT_TRUE(node.ok()) << node.status();
  return node.ok() ? std::move(*node) : nullptr;
}

TEST(GpuServingTest, Fp16OnTheGpuAgreesWithTheCpuAndACorruptImageFailsOnlyItself) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "needs a CUDA GPU; none is visible";
  const std::string dir = (std::filesystem::path(::testing::TempDir()) / "gpu-serving").string();
  const std::string model = testing::WriteSmallCnn(dir + "/model", 3);
  const auto pngs = testing::FashionPngs(96);
  std::vector<v1::ClassifyRequest> requests;
  for (size_t i = 0; i < pngs.size(); ++i) {
    requests.push_back(testing::ImageRequest(absl::StrCat("r", i), pngs[i], 10));
  }
  std::string corrupt = pngs[5];
  corrupt.resize(corrupt.size() / 2);  // Truncated: rejected while its batch-mates are served.
  requests.push_back(testing::ImageRequest("corrupt", corrupt, 10));

  auto gpu = Start(model, "cuda", "fp16");
  auto cpu = Start(model, "cpu", "fp32");
  ASSERT_TRUE(gpu && cpu);
  auto on_gpu = Classify(*gpu, requests);
  auto on_cpu = Classify(*cpu, requests);
  ASSERT_EQ(on_gpu.size(), requests.size());
  EXPECT_EQ(on_gpu["corrupt"].error_code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  int batched = 0;
  for (size_t i = 0; i < pngs.size(); ++i) {
    const auto& g = on_gpu[absl::StrCat("r", i)];
    const auto& c = on_cpu[absl::StrCat("r", i)];
    ASSERT_EQ(g.error_code(), 0) << g.error_message();
    ASSERT_EQ(g.predictions_size(), 10);
    std::map<int, float> cpu_p;
    for (const auto& p : c.predictions()) cpu_p[p.class_index()] = p.probability();
    // float16 keeps 11 bits: the GPU's logits are ~5e-4 of their scale from the CPU's float32
    // ones, and a probability moves by at most half the largest logit difference.
    for (const auto& p : g.predictions()) EXPECT_NEAR(p.probability(), cpu_p[p.class_index()], 1e-2);
    batched += g.batch_size() > 1;
  }
  EXPECT_GT(batched, 0);
}

}  // namespace
}  // namespace kennel
