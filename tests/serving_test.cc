// An inference node served in-process on 127.0.0.1:0 and driven through real gRPC stubs.
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <limits>
#include <opencv2/imgcodecs.hpp>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/ml/artifact.h"
#include "core/ml/dataset.h"
#include "core/testing/eventually.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "cli/load_generator.h"
#include "inference_node/inference_node.h"
#include "kennel/v1/inference.grpc.pb.h"
#include "tests/testing/serving_helpers.h"

namespace kennel {
namespace {

using inference::InferenceNode;
using inference::InferenceNodeOptions;
using testing::FashionPngs;
using testing::ImageRequest;
using testing::TensorRequest;
using testing::WriteSmallCnn;

class ServingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           absl::StrCat("serving-", ::testing::UnitTest::GetInstance()->current_test_info()->name());
    v1_ = WriteSmallCnn((dir_ / "v1").string(), 1);
    v2_ = WriteSmallCnn((dir_ / "v2").string(), 2);
    pngs_ = FashionPngs(64);
  }
  void Start(InferenceNodeOptions options, bool with_model = true) {
    options.listen_address = "127.0.0.1:0";
    if (with_model) options.model_dir = v1_;
    auto node = InferenceNode::Create(options);
    ASSERT_TRUE(node.ok()) << node.status();
    node_ = std::move(*node);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", node_->port()), grpc::InsecureChannelCredentials());
    stub_ = v1::Inference::NewStub(channel_);
  }
  // Sends `requests` on one stream, all in flight, and returns the responses by request id.
  std::map<std::string, std::vector<v1::ClassifyResponse>> Stream(const std::vector<v1::ClassifyRequest>& requests) {
    grpc::ClientContext context;
    auto stream = stub_->ClassifyStream(&context);
    std::map<std::string, std::vector<v1::ClassifyResponse>> out;
    std::thread reader([&] {
      v1::ClassifyResponse r;
      while (stream->Read(&r)) out[r.request_id()].push_back(r);
    });
    for (const auto& r : requests) EXPECT_TRUE(stream->Write(r));
    stream->WritesDone();
    reader.join();
    EXPECT_TRUE(stream->Finish().ok());
    return out;
  }

  std::filesystem::path dir_;
  std::string v1_, v2_;
  std::vector<std::string> pngs_;
  std::unique_ptr<InferenceNode> node_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> stub_;
};

TEST_F(ServingTest, StreamWithManyRequestsInFlightAnswersEachOnce) {
  InferenceNodeOptions options;
  options.engine.model.batcher.max_batch_size = 16;
  Start(options);
  std::vector<v1::ClassifyRequest> requests;
  for (int i = 0; i < 300; ++i) {
    requests.push_back(i % 3 == 0 ? TensorRequest(absl::StrCat("t", i), {1, 28, 28}, 784)
                                  : ImageRequest(absl::StrCat("i", i), pngs_[i % pngs_.size()]));
  }
  auto responses = Stream(requests);
  ASSERT_EQ(responses.size(), 300u);
  int batched = 0;
  for (const auto& r : requests) {
    ASSERT_EQ(responses[r.request_id()].size(), 1u) << r.request_id();
    const auto& resp = responses[r.request_id()][0];
    EXPECT_EQ(resp.error_code(), 0) << resp.error_message();
    EXPECT_EQ(resp.model_name(), "fashion");
    EXPECT_EQ(resp.model_version(), 1);
    ASSERT_EQ(resp.predictions_size(), r.top_k() > 0 ? r.top_k() : 5);
    EXPECT_GE(resp.predictions(0).probability(), resp.predictions(1).probability());
    EXPECT_FALSE(resp.predictions(0).label().empty());
    EXPECT_GT(resp.server_time().total_us(), 0);
    batched += resp.batch_size() > 1;
  }
  EXPECT_GT(batched, 0);  // With 300 in flight, the batcher formed real batches.
}

// Every class's probability for each image, from a node started with `options`.
std::vector<std::vector<float>> Probabilities(v1::Inference::Stub& stub, const std::vector<std::string>& pngs) {
  std::vector<std::vector<float>> out;
  for (size_t i = 0; i < pngs.size(); ++i) {
    grpc::ClientContext context;
    v1::ClassifyResponse r;
    EXPECT_TRUE(stub.Classify(&context, ImageRequest(std::to_string(i), pngs[i], 10), &r).ok());
    std::vector<float> p(10, -1.0f);
    for (const auto& pred : r.predictions()) p[static_cast<size_t>(pred.class_index())] = pred.probability();
    out.push_back(p);
  }
  return out;
}

TEST_F(ServingTest, Bf16OnTheCpuGivesFp32sProbabilitiesToBf16Precision) {
  Start({});
  const std::vector<std::string> pngs(pngs_.begin(), pngs_.begin() + 16);
  const auto fp32 = Probabilities(*stub_, pngs);
  InferenceNodeOptions options;
  options.engine.model.precision = "bf16";
  Start(options);
  grpc::ClientContext context;
  v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&context, {}, &info).ok());
  EXPECT_EQ(info.device(), "cpu");
  EXPECT_EQ(info.precision(), "bf16");
  const auto bf16 = Probabilities(*stub_, pngs);
  double largest = 0;
  for (size_t i = 0; i < pngs.size(); ++i) {
    float sum = 0;
    for (int c = 0; c < 10; ++c) {
      ASSERT_GE(bf16[i][c], 0.0f) << "class " << c << " missing from the top 10";
      sum += bf16[i][c];
      largest = std::max(largest, std::abs(static_cast<double>(bf16[i][c] - fp32[i][c])));
    }
    EXPECT_NEAR(sum, 1.0f, 1e-3);  // Softmax runs in float32 after the bf16 forward.
  }
  EXPECT_LT(largest, 0.02);  // bf16 keeps 8 bits of mantissa.
  EXPECT_GT(largest, 0.0);   // And it did run in bf16: fp32 would match exactly.
}

TEST(ServingStartTest, AnAddressItCannotListenOnIsAnErrorNotACrash) {
  InferenceNodeOptions options;
  options.listen_address = "256.1.1.1:7080";
  options.insecure = true;  // Past the refusal to serve plaintext off the loopback.
  options.metrics_port = -1;
  absl::Status s = InferenceNode::Create(options).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("256.1.1.1:7080"), std::string::npos) << s;
}

// /metrics on an address of its own: scraped there, not on the service's host.
TEST(ServingStartTest, MetricsListenOnTheirOwnAddress) {
  InferenceNodeOptions options;
  options.listen_address = "127.0.0.1:0";
  options.metrics_address = "127.0.0.2:0";
  auto node = InferenceNode::Create(options);
  ASSERT_TRUE(node.ok()) << node.status();
  const int port = (*node)->metrics_port();
  ASSERT_GT(port, 0);
  auto scraped = httplib::Client("127.0.0.2", port).Get("/metrics");
  ASSERT_TRUE(scraped);
  EXPECT_EQ(scraped->status, 200);
  EXPECT_NE(scraped->body.find("kennel_requests_total"), std::string::npos);
  EXPECT_FALSE(httplib::Client("127.0.0.1", port).Get("/metrics"));  // Nothing there.

  options.metrics_address = "no-port";
  EXPECT_EQ(InferenceNode::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ServingPlacementTest, UnusableDeviceOrPrecisionFailsAtStartWithWhatWasWrong) {
  auto start = [](const std::string& device, const std::string& precision) {
    InferenceNodeOptions options;
    options.listen_address = "127.0.0.1:0";
    options.metrics_port = -1;
    options.engine.model.device = device;
    options.engine.model.precision = precision;
    return InferenceNode::Create(options).status();
  };
  absl::Status s = start("tpu", "fp32");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  s = start("cuda:x", "fp32");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  s = start("cpu", "fp16");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("CUDA only"), std::string::npos) << s;
  s = start("cpu", "fp8");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  s = start("cuda", "fp16");
  if (torch::cuda::is_available()) {
    EXPECT_TRUE(s.ok()) << s;
  } else {
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_NE(s.message().find("no CUDA"), std::string::npos) << s;
  }
  EXPECT_TRUE(start("cpu", "bf16").ok());
}

TEST_F(ServingTest, BadInputsAreInvalidArgumentAndOthersKeepBeingServed) {
  Start({});
  std::string truncated = pngs_[0].substr(0, pngs_[0].size() / 2);
  std::string huge = pngs_[1];
  for (int at : {16, 20}) {
    for (int b = 0; b < 4; ++b) huge[at + b] = static_cast<char>((100000u >> (24 - 8 * b)) & 0xff);
  }
  std::vector<v1::ClassifyRequest> bad = {
      ImageRequest("empty", ""), ImageRequest("noise", std::string(1000, '\x42')),
      ImageRequest("truncated", truncated), ImageRequest("huge", huge),
      TensorRequest("shape", {3, 28, 28}, 3 * 784), TensorRequest("bytes", {1, 28, 28}, 700),
      [] { v1::ClassifyRequest r; r.set_request_id("nothing"); return r; }(),
      [&] { auto r = ImageRequest("topk", pngs_[2]); r.set_top_k(-1); return r; }()};
  // Another client is served all along.
  std::atomic<bool> done{false};
  std::atomic<int> other_ok{0}, other_failed{0};
  std::thread other([&] {
    auto stub = v1::Inference::NewStub(grpc::CreateChannel(absl::StrCat("127.0.0.1:", node_->port()),
                                                          grpc::InsecureChannelCredentials()));
    while (!done) {
      grpc::ClientContext context;
      v1::ClassifyResponse r;
      (stub->Classify(&context, ImageRequest("x", pngs_[5]), &r).ok() ? other_ok : other_failed)++;
    }
  });
  std::vector<v1::ClassifyRequest> mixed;
  for (size_t i = 0; i < bad.size(); ++i) {
    mixed.push_back(bad[i]);
    mixed.push_back(ImageRequest(absl::StrCat("good", i), pngs_[i]));
  }
  auto responses = Stream(mixed);
  done = true;
  other.join();
  for (const auto& r : bad) {
    ASSERT_EQ(responses[r.request_id()].size(), 1u) << r.request_id();
    EXPECT_EQ(responses[r.request_id()][0].error_code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT))
        << r.request_id() << ": " << responses[r.request_id()][0].error_message();
    EXPECT_FALSE(responses[r.request_id()][0].error_message().empty());
  }
  for (size_t i = 0; i < bad.size(); ++i) {
    EXPECT_EQ(responses[absl::StrCat("good", i)][0].error_code(), 0);
  }
  EXPECT_GT(other_ok.load(), 0);
  EXPECT_EQ(other_failed.load(), 0);
  // Unary: the status itself carries the error.
  grpc::ClientContext context;
  v1::ClassifyResponse r;
  grpc::Status s = stub_->Classify(&context, ImageRequest("u", "not an image"), &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("not a JPEG or PNG"), std::string::npos);
}

// Beyond what the engine's queues hold, a stream waits (reading pauses) and every request is
// answered; a unary call, which cannot be paused, is refused with RESOURCE_EXHAUSTED. (Streams
// used to be refused too: 5 streams x 256 in flight got "preprocessing queue full".)
TEST_F(ServingTest, AFullNodeMakesStreamsWaitAndRefusesUnaryCalls) {
  InferenceNodeOptions options;
  options.engine.model.instances = 1;
  options.engine.model.batcher = {.max_batch_size = 64, .max_queue_delay = absl::Seconds(1), .max_queue_size = 4};
  Start(options);
  std::vector<v1::ClassifyRequest> requests;
  for (int i = 0; i < 10; ++i) requests.push_back(TensorRequest(std::to_string(i), {1, 28, 28}, 784));
  auto responses = Stream(requests);  // The node holds 4 at a time; the rest wait their turn.
  ASSERT_EQ(responses.size(), 10u);
  for (auto& [id, rs] : responses) {
    ASSERT_EQ(rs.size(), 1u);
    EXPECT_EQ(rs[0].error_code(), 0) << id << ": " << rs[0].error_message();
  }
  // Unary calls while 4 are held by the 1 s batch delay: the rest are refused at once.
  std::vector<std::thread> callers;
  std::atomic<int> ok{0}, exhausted{0};
  for (int i = 0; i < 10; ++i) {
    callers.emplace_back([&, i] {
      grpc::ClientContext context;
      v1::ClassifyResponse r;
      const grpc::Status s = stub_->Classify(&context, TensorRequest(absl::StrCat("u", i), {1, 28, 28}, 784), &r);
      ok += s.ok();
      exhausted += s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_EQ(ok + exhausted, 10);
  EXPECT_GE(ok, 4);
  EXPECT_GT(exhausted, 0);
}

TEST_F(ServingTest, ManyDeepStreamsOnSmallQueuesAreAllServed) {
  InferenceNodeOptions options;
  options.engine.preprocess_queue = 32;
  options.engine.model.batcher.max_queue_size = 32;
  options.engine.model.batcher.max_batch_size = 16;
  options.max_in_flight_per_stream = 256;
  Start(options);
  cli::LoadOptions o;
  o.server = absl::StrCat("127.0.0.1:", node_->port());
  o.concurrency = 5;
  o.depth = 256;
  o.max_requests = 3000;
  o.duration = absl::Hours(1);
  cli::LoadReport r = cli::RunLoad(o, static_cast<int64_t>(pngs_.size()),
                                   [this](int64_t i) -> const std::string& { return pngs_[static_cast<size_t>(i)]; });
  EXPECT_EQ(r.ok, 3000);
  EXPECT_TRUE(r.errors.empty()) << r.errors.begin()->first << " " << r.errors.begin()->second;
}

// A client that writes and never reads: the node stops reading its stream once its responses
// back up, instead of answering (and holding in memory) everything it is sent.
TEST_F(ServingTest, AClientThatNeverReadsIsNotReadFurther) {
  InferenceNodeOptions options;
  options.max_in_flight_per_stream = 16;
  Start(options);
  // A client whose transport takes in little it has not read (no window growth by bandwidth
  // probing, a 16 KiB stream window): what the node writes beyond that waits on it.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 << 10);
  auto stub = v1::Inference::NewStub(grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", node_->port()),
                                                               grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext context;
  auto stream = stub->ClassifyStream(&context);
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (int i = 0; i < 20000; ++i) {
      v1::ClassifyRequest r = TensorRequest(std::to_string(i), {1, 28, 28}, 784);
      r.set_top_k(1);
      if (!stream->Write(r)) return;  // Cancelled below.
      ++written;
    }
  });
  // Let the node answer whatever it would answer (it never gets a reply read back), until the
  // count stops growing.
  auto answered_so_far = [&] {
    const std::string metrics = node_->metrics().Render();
    const std::string key = "kennel_requests_total{code=\"OK\"} ";
    const size_t at = metrics.find(key);
    return at == std::string::npos ? int64_t{0} : std::stoll(metrics.substr(at + key.size()));
  };
  int64_t answered = 0;
  for (int stable = 0, rounds = 0; stable < 10 && rounds < 600; ++rounds) {
    absl::SleepFor(absl::Milliseconds(100));
    const int64_t now = answered_so_far();
    stable = now == answered && now > 0 ? stable + 1 : 0;
    answered = now;
  }
  // 16 in flight, plus what the flow-control windows hold (a few hundred ~60-byte responses):
  // far from the 20,000 the client tried to send. (The node used to read on and queue every
  // answer in memory: 410 MB -> 914 MB in 135 s against such a client.)
  EXPECT_GT(answered, 0);
  EXPECT_LT(answered, 5000) << "the node read on although nobody read its answers";
  EXPECT_LT(written.load(), 20000);
  context.TryCancel();
  writer.join();
}

// v1's weights changed by `edit`, written as a new artifact.
std::string EditedCopy(const std::string& from, const std::string& to,
                       const std::function<void(core::Classifier&)>& edit) {
  auto loaded = core::LoadArtifact(from);
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  {
    torch::NoGradGuard no_grad;
    edit(*loaded->model);
  }
  std::filesystem::remove_all(to);
  EXPECT_TRUE(core::WriteArtifact(to, loaded->manifest, *loaded->model).ok());
  return to;
}

// A diverged model (NaN weights) used to be served, answering -nan with status OK.
TEST_F(ServingTest, NonFiniteModelsAreNotServedAndNonFiniteAnswersAreErrors) {
  Start({});
  const std::string nan = EditedCopy(v1_, (dir_ / "nan").string(), [](core::Classifier& m) {
    m.named_parameters()["fc.bias"][0] = std::numeric_limits<float>::quiet_NaN();
  });
  const absl::Status refused = node_->DeployLocal(nan);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_NE(refused.message().find("not finite"), std::string::npos) << refused;
  auto responses = Stream({ImageRequest("after", pngs_[0])});
  EXPECT_EQ(responses["after"][0].error_code(), 0);
  EXPECT_EQ(responses["after"][0].model_version(), 1);  // Still the old version.

  // Finite on the warm-up input, infinite on real images: those answers are errors.
  const std::string overflow = EditedCopy(v1_, (dir_ / "overflow").string(), [](core::Classifier& m) {
    // At zeros only the biases pass conv1: large but finite. Real pixels overflow conv2.
    m.named_parameters()["conv1.weight"].mul_(1e30);
    m.named_parameters()["conv2.weight"].mul_(1e30);
  });
  ASSERT_TRUE(node_->DeployLocal(overflow).ok());
  responses = Stream({ImageRequest("huge", pngs_[0])});
  EXPECT_EQ(responses["huge"][0].error_code(), static_cast<int>(grpc::StatusCode::INTERNAL));
  EXPECT_NE(responses["huge"][0].error_message().find("non-finite"), std::string::npos)
      << responses["huge"][0].error_message();
  EXPECT_EQ(responses["huge"][0].predictions_size(), 0);
}

TEST_F(ServingTest, ExpiredRequestsAreDeadlineExceeded) {
  InferenceNodeOptions options;
  options.engine.model.batcher = {.max_batch_size = 64, .max_queue_delay = absl::Seconds(2), .max_queue_size = 4};
  Start(options);
  // A request whose deadline passes while it waits for the batch is not run.
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  v1::ClassifyResponse r;
  EXPECT_EQ(stub_->Classify(&context, TensorRequest("late", {1, 28, 28}, 784), &r).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  absl::SleepFor(absl::Seconds(2.5));
  const std::string metrics = node_->metrics().Render();
  EXPECT_NE(metrics.find("kennel_requests_total{code=\"DEADLINE_EXCEEDED\"} 1"), std::string::npos) << metrics;
}

TEST_F(ServingTest, DeployUnderLoadLosesNoRequest) {
  Start({});
  // Four clients stream rounds of 100 requests until they have finished a round that began
  // after the deploy returned; the deploy starts once version 1 has answered, so the swap
  // happens while requests are in flight, however fast or slow the machine.
  std::atomic<bool> deployed{false};
  std::atomic<int> v1_answers{0};
  std::vector<std::vector<v1::ClassifyResponse>> results(4);
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      for (int round = 0;; ++round) {
        const bool last = deployed;
        std::vector<v1::ClassifyRequest> requests;
        for (int i = 0; i < 100; ++i) {
          requests.push_back(ImageRequest(absl::StrCat(c, "-", round, "-", i), pngs_[i % pngs_.size()]));
        }
        auto responses = Stream(requests);
        EXPECT_EQ(responses.size(), 100u);
        for (auto& [id, rs] : responses) {
          EXPECT_EQ(rs.size(), 1u) << id;
          results[c].insert(results[c].end(), rs.begin(), rs.end());
          for (const auto& r : rs) v1_answers += r.model_version() == 1;
        }
        if (last) break;
      }
    });
  }
  while (v1_answers == 0) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_TRUE(node_->DeployLocal(v2_).ok());
  deployed = true;
  for (auto& t : clients) t.join();
  std::set<int64_t> versions;
  for (int c = 0; c < 4; ++c) {
    for (const auto& r : results[c]) {
      EXPECT_EQ(r.error_code(), 0) << r.error_message();
      versions.insert(r.model_version());
    }
    EXPECT_EQ(results[c].back().model_version(), 2);
  }
  EXPECT_EQ(versions, (std::set<int64_t>{1, 2}));
}

TEST_F(ServingTest, HealthIsServingOnlyWithAWarmedModel) {
  Start({}, /*with_model=*/false);
  auto health = grpc::health::v1::Health::NewStub(channel_);
  auto check = [&](const std::string& service) {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    EXPECT_TRUE(health->Check(&context, request, &response).ok());
    return response.status();
  };
  EXPECT_EQ(check(""), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(check("kennel.v1.Inference"), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  grpc::ClientContext context;
  v1::ClassifyResponse r;
  EXPECT_EQ(stub_->Classify(&context, ImageRequest("early", pngs_[0]), &r).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(node_->DeployLocal((dir_ / "missing").string()).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(check(""), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  // The same over plain HTTP on the metrics port, for probers without a client certificate.
  httplib::Client http("127.0.0.1", node_->metrics_port());
  EXPECT_EQ(http.Get("/healthz")->status, 200);
  EXPECT_EQ(http.Get("/readyz")->status, 503);
  ASSERT_TRUE(node_->DeployLocal(v1_).ok());
  EXPECT_EQ(check(""), grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(check("kennel.v1.Inference"), grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(http.Get("/readyz")->status, 200);
  // Draining: not ready while it finishes what it took (the HTTP port closes last).
  std::thread stop([&] { node_->Shutdown(); });
  EXPECT_TRUE(core::testing::Eventually([&] {
    auto res = http.Get("/readyz");
    return res && res->status == 503;
  }, absl::Seconds(10)));
  stop.join();
}

TEST_F(ServingTest, MetricsScrapeHasTheExpectedSeries) {
  InferenceNodeOptions options;
  options.engine.model.batcher.max_batch_size = 8;
  Start(options);
  std::vector<v1::ClassifyRequest> requests;
  for (int i = 0; i < 50; ++i) requests.push_back(ImageRequest(std::to_string(i), pngs_[i]));
  requests.push_back(ImageRequest("bad", "junk"));
  Stream(requests);
  httplib::Client http("127.0.0.1", node_->metrics_port());
  auto res = http.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  const std::string& body = res->body;
  for (const char* series : {"kennel_requests_total{code=\"OK\"} 50", "kennel_requests_total{code=\"INVALID_ARGUMENT\"} 1",
                             "kennel_batch_size_bucket{le=\"8\"} ", "kennel_batch_size_count ",
                             "kennel_stage_seconds_bucket{stage=\"queue\",le=\"+Inf\"} 50",
                             "kennel_stage_seconds_count{stage=\"preprocess\"} 50", "kennel_queue_depth ",
                             "kennel_model_version{model=\"fashion\"} 1", "# TYPE kennel_batch_size histogram"}) {
    EXPECT_NE(body.find(series), std::string::npos) << series << "\n" << body;
  }
}


// kennelctl's load generator (cli/load_generator) against the real server.
class LoadGeneratorTest : public ServingTest {
 protected:
  cli::LoadReport Load(cli::LoadOptions o, std::set<int64_t>* answered = nullptr) {
    absl::Mutex mu;
    return cli::RunLoad(o, static_cast<int64_t>(pngs_.size()),
                        [this](int64_t i) -> const std::string& { return pngs_[static_cast<size_t>(i)]; },
                        [&](int64_t i, const v1::ClassifyResponse&) {
                          absl::MutexLock lock(&mu);
                          if (answered != nullptr) {
                            EXPECT_TRUE(answered->insert(i).second) << "twice: " << i;
                          }
                        });
  }
  // Starts the node and returns options aimed at it.
  cli::LoadOptions AimedAtNode(int concurrency) {
    Start({});
    cli::LoadOptions o;
    o.server = absl::StrCat("127.0.0.1:", node_->port());
    o.concurrency = concurrency;
    return o;
  }
  static int64_t Errors(const cli::LoadReport& r) {
    int64_t n = 0;
    for (const auto& [code, count] : r.errors) n += count;
    return n;
  }
};

TEST_F(LoadGeneratorTest, ClosedLoopStreamsAnswerEveryRequestOnce) {
  cli::LoadOptions o = AimedAtNode(3);
  o.depth = 5;
  o.max_requests = 200;
  std::set<int64_t> answered;
  cli::LoadReport r = Load(o, &answered);
  EXPECT_EQ(r.sent, 200);
  EXPECT_EQ(r.ok, 200);
  EXPECT_TRUE(r.errors.empty());
  ASSERT_EQ(answered.size(), 200u);
  EXPECT_EQ(*answered.begin(), 0);
  EXPECT_EQ(*answered.rbegin(), 199);
  EXPECT_GE(r.mean_batch, 1.0);
  EXPECT_GT(r.p99_ms, 0.0);
  EXPECT_GE(r.max_ms, r.p99_ms);
}

TEST_F(LoadGeneratorTest, OpenLoopAndUnaryAccountForEveryRequest) {
  cli::LoadOptions o = AimedAtNode(2);
  o.rate = 200;
  o.duration = absl::Milliseconds(500);
  cli::LoadReport r = Load(o);
  EXPECT_GT(r.sent, 0);
  EXPECT_LE(r.sent, 101);  // Paced: at most rate x duration (+ the one at time zero).
  EXPECT_EQ(r.ok, r.sent);
  EXPECT_TRUE(r.errors.empty());
  o.rate = 0;
  o.unary = true;
  o.max_requests = 20;
  r = Load(o);
  EXPECT_EQ(r.ok, 20);
  EXPECT_TRUE(r.errors.empty());
}

TEST_F(LoadGeneratorTest, AServerThatIsNotThereIsAnErrorForEveryRequestSent) {
  cli::LoadOptions o;
  o.server = "127.0.0.1:1";
  o.concurrency = 2;
  o.depth = 3;
  o.duration = absl::Seconds(1);
  for (double rate : {0.0, 100.0}) {
    o.rate = rate;
    cli::LoadReport r = Load(o);
    EXPECT_EQ(r.ok, 0);
    EXPECT_GT(r.sent, 0);
    EXPECT_EQ(Errors(r), r.sent) << "rate " << rate;
    EXPECT_GT(r.errors["UNAVAILABLE"], 0) << "rate " << rate;
  }
}

}  // namespace
}  // namespace kennel
