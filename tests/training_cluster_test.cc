// A coordinator and trainers as real processes on loopback, driven with kennelctl.
#include <gtest/gtest.h>
#include <signal.h>
#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <set>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/ml/artifact.h"
#include "core/ml/dataset.h"
#include "core/ml/image.h"
#include "core/ml/weights.h"

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include "core/subprocess.h"
#include "core/testing/eventually.h"
#include "core/testing/paths.h"

namespace kennel {
namespace {

using core::Process;

using core::testing::BuildDir;
using core::testing::Eventually;

class TrainingClusterTest : public ::testing::Test {
 protected:
  // A passed test's folder goes (logs, data: hundreds of MB a run); a failed one's stays.
  ~TrainingClusterTest() override {
    coordinator_.reset();
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           absl::StrCat("cluster-", ::testing::UnitTest::GetInstance()->current_test_info()->name(), "-", ::getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    StartCoordinator("127.0.0.1:0", "coordinator.log");
  }

  // Starts the coordinator on `listen` over dir_/coord: a restart passes address_ and keeps
  // the address and the data.
  void StartCoordinator(const std::string& listen, const std::string& log) {
    auto c = Process::Start({BuildDir() + "/coordinator/kennel-coordinator", "--listen", listen,
                             "--data_dir", (dir_ / "coord").string(), "--heartbeat_timeout_s", "5"},
                            (dir_ / log).string());
    ASSERT_TRUE(c.ok()) << c.status();
    coordinator_ = std::move(*c);
    auto line = coordinator_->WaitForLine("listening on port ", absl::Seconds(30));
    ASSERT_TRUE(line.ok()) << line.status() << coordinator_->Log();
    address_ = absl::StrCat("127.0.0.1:", line->substr(line->rfind(' ') + 1));
  }

  std::unique_ptr<Process> StartTrainer(const std::string& name) {
    auto t = Process::Start({BuildDir() + "/trainer_node/kennel-trainer", "--coordinator", address_,
                             "--name", name, "--work_dir", (dir_ / name).string()},
                            (dir_ / (name + ".log")).string(), {"OPENBLAS_NUM_THREADS=1"});
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? std::move(*t) : nullptr;
  }

  // An inference node named inference-1 following the coordinator; `server` is its address.
  std::unique_ptr<Process> StartInference(std::string* server) {
    auto node = Process::Start({BuildDir() + "/inference_node/kennel-inference", "--coordinator", address_, "--name",
                                "inference-1", "--listen", "127.0.0.1:0", "--cache_dir", (dir_ / "cache").string()},
                               (dir_ / "inference.log").string());
    EXPECT_TRUE(node.ok()) << node.status();
    if (!node.ok()) return nullptr;
    auto line = (*node)->WaitForLine("listening on port ", absl::Seconds(30));
    EXPECT_TRUE(line.ok()) << line.status();
    if (!line.ok()) return nullptr;
    const std::string rest = line->substr(line->find("port ") + 5);
    *server = absl::StrCat("127.0.0.1:", rest.substr(0, rest.find(' ')));
    return std::move(*node);
  }

  // kennelctl train's flags for the user's own model: a TorchScript CNN with batch norm for
  // 1x28x28 Fashion-MNIST and 10 classes (tests/fixtures: scripted_fashion.pt).
  std::vector<std::string> ScriptedFashionFlags() {
    return {"--model-file", BuildDir() + "/testdata/scripted_fashion.pt", "--in-channels", "1", "--image-size", "28",
            "--resize-shorter", "0", "--mean", "0.286", "--std", "0.353"};
  }

  // An elastic job (min world size 1) of the model `model_flags` gives (built-in when none) on
  // two trainers: one is killed after step 25, the job goes on alone from its checkpoint, a
  // third trainer joins and the job finishes on two, every epoch on every sample, ranks equal.
  void ExpectElasticRecovery(const std::vector<std::string>& model_flags) {
    auto a = StartTrainer("trainer-a");
    auto b = StartTrainer("trainer-b");
    WaitForIdleTrainers(2);
    std::vector<std::string> train = {"train", "--name", "elastic", "--epochs", "3", "--max-train-samples", "12000",
                                      "--max-eval-samples", "1000", "--checkpoint-every", "20", "--min-world-size", "1",
                                      "--detach"};
    train.insert(train.end(), model_flags.begin(), model_flags.end());
    auto [code, submitted] = Ctl(train);
    ASSERT_EQ(code, 0);
    const std::string id = submitted["id"];
    ASSERT_TRUE(WaitPastStep(id, 25, absl::Seconds(120)));
    b->Signal(SIGKILL);
    ASSERT_TRUE(b->Wait(absl::Seconds(10)).ok());
    nlohmann::json job;
    ASSERT_TRUE(Eventually([&] {
      job = Ctl({"job", id}).second;
      return job["state"] == "RUNNING" && job["nodes"].size() == 1;
    }, absl::Seconds(60))) << job.dump(2) << coordinator_->Log();
    auto c = StartTrainer("trainer-c");
    job = WaitForJobEnd(id, absl::Seconds(240));
    ASSERT_EQ(job["state"], "SUCCEEDED") << job.dump(2) << coordinator_->Log();
    ASSERT_EQ(job["memberships"].size(), 3u) << job.dump(2);
    EXPECT_EQ(job["memberships"][0]["world_size"], 2);
    EXPECT_EQ(job["memberships"][1]["world_size"], 1);
    // The kill came after step 25; the checkpoint it resumed from was one of every 20 steps,
    // in whichever epoch the job had reached (a small model runs far past step 25 first).
    const nlohmann::json& resumed = job["memberships"][1];
    EXPECT_GE(std::stoll(resumed.value("epoch", std::string("0"))) * 12000 +
                  std::stoll(resumed["epoch_start_sample"].get<std::string>()),
              20 * 2 * 64)
        << resumed.dump();
    EXPECT_EQ(job["memberships"][2]["world_size"], 2);
    std::set<std::string> ranks(job["nodes"].begin(), job["nodes"].end());
    EXPECT_EQ(ranks, (std::set<std::string>{"trainer-a", "trainer-c"}));
    ASSERT_EQ(job["epochs"].size(), 3u);
    for (const auto& e : job["epochs"]) EXPECT_EQ(e["train_samples"], "12000") << e.dump();
    EXPECT_EQ(job["rank_param_digests"][0], job["rank_param_digests"][1]);
  }

  // kennelctl -o json ARGS...; returns (exit code, parsed stdout).
  std::pair<int, nlohmann::json> Ctl(std::vector<std::string> args, absl::Duration timeout = absl::Minutes(5)) {
    std::vector<std::string> argv = {BuildDir() + "/cli/kennelctl", "-c", address_, "-o", "json"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto result = core::RunCommand(argv, timeout, ::testing::TempDir());
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return {-1, {}};
    return {result->first, nlohmann::json::parse(result->second, nullptr, false)};
  }

  // A small dogImages-style folder: 3 breeds of solid colour plus noise, 16/4/4 images of
  // rows x cols per class in train/valid/test.
  static void WriteDogImages(const std::filesystem::path& dogs, int rows, int cols) {
    const char* breeds[] = {"001.Affenpinscher", "002.Afghan_hound", "003.Airedale_terrier"};
    const cv::Scalar colours[] = {{30, 30, 220}, {40, 200, 40}, {210, 60, 30}};
    int n = 0;
    for (const auto& [split, count] : std::vector<std::pair<std::string, int>>{{"train", 16}, {"valid", 4}, {"test", 4}}) {
      for (int b = 0; b < 3; ++b) {
        std::filesystem::create_directories(dogs / split / breeds[b]);
        for (int i = 0; i < count; ++i) {
          cv::Mat img(rows, cols, CV_8UC3, colours[b]);
          cv::Mat noise(img.size(), CV_8UC3);
          cv::randn(noise, 0, 25);
          img += noise;
          cv::imwrite((dogs / split / breeds[b] / absl::StrCat("img_", n++, ".jpg")).string(), img);
        }
      }
    }
  }

  // The node named `name` in kennelctl status, or null.
  nlohmann::json NodeStatus(const std::string& name) {
    auto [code, status] = Ctl({"status"});
    if (code != 0) return nullptr;
    for (const auto& n : status["nodes"]) {
      if (n["name"] == name) return n;
    }
    return nullptr;
  }

  // The job's newest global step (0 before the first report).
  static int64_t GlobalStep(const nlohmann::json& job) {
    return job.contains("last_step") ? std::stoll(job["last_step"].value("global_step", "0")) : 0;
  }

  // Polls the job until its newest global step is past `step`.
  bool WaitPastStep(const std::string& id, int64_t step, absl::Duration timeout) {
    return Eventually([&] {
      auto [c, job] = Ctl({"job", id});
      return c == 0 && GlobalStep(job) > step;
    }, timeout);
  }

  // Polls the job until it ended (SUCCEEDED or FAILED) or `timeout` passed; its last status.
  nlohmann::json WaitForJobEnd(const std::string& id, absl::Duration timeout) {
    nlohmann::json job;
    Eventually([&] {
      job = Ctl({"job", id}).second;
      return job["state"] == "SUCCEEDED" || job["state"] == "FAILED";
    }, timeout);
    return job;
  }

  // Waits until `count` trainers are idle.
  void WaitForIdleTrainers(int count) {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline) {
      auto [code, status] = Ctl({"status"});
      int idle = 0;
      if (code == 0) {
        for (const auto& n : status["nodes"]) idle += n.value("state", "") == "IDLE";
      }
      if (idle >= count) return;
      absl::SleepFor(absl::Milliseconds(100));
    }
    FAIL() << "trainers did not register";
  }

  std::filesystem::path dir_;
  std::unique_ptr<Process> coordinator_;
  std::string address_;
};

TEST_F(TrainingClusterTest, TwoTrainersTrainRegisterAndStayInSync) {
  auto a = StartTrainer("trainer-a");
  auto b = StartTrainer("trainer-b");
  WaitForIdleTrainers(2);
  auto [code, job] = Ctl({"train", "--name", "itest", "--epochs", "2", "--max-train-samples", "8000",
                          "--max-eval-samples", "2000", "--wait"});
  ASSERT_EQ(code, 0) << job.dump(2) << coordinator_->Log();
  EXPECT_EQ(job["state"], "SUCCEEDED");
  // Both ranks ended with bit-identical parameters.
  ASSERT_EQ(job["rank_param_digests"].size(), 2u);
  EXPECT_EQ(job["rank_param_digests"][0], job["rank_param_digests"][1]);
  EXPECT_EQ(job["rank_param_digests"][0].get<std::string>().size(), 64u);
  ASSERT_EQ(job["epochs"].size(), 2u);
  EXPECT_EQ(job["epochs"][1]["eval_count"], "2000");  // int64 is a string in proto3 JSON.
  EXPECT_GT(job["epochs"][1]["eval_accuracy"].get<double>(), 0.6);  // Chance: 0.1.

  // The model is registered, and the artifact loads and classifies unseen test images.
  auto [models_code, models] = Ctl({"models", "itest"});
  ASSERT_EQ(models_code, 0);
  ASSERT_EQ(models["models"].size(), 1u);
  EXPECT_EQ(models["models"][0]["version"], "1");
  auto loaded = core::LoadArtifact((dir_ / "coord/artifacts/models/itest/1").string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->manifest.class_names(0), "T-shirt/top");
  auto test = *core::IndexFashionMnist(core::kDebianFashionMnistRoot, "test");
  auto reader = *core::DatasetReader::Create(test, core::kDebianFashionMnistRoot);
  const auto& spec = loaded->manifest.preprocess();
  torch::Tensor images = torch::empty({500, 1, 28, 28});
  torch::Tensor labels = torch::empty({500}, torch::kInt64);
  for (int i = 0; i < 500; ++i) {
    ASSERT_TRUE(core::PreprocessInto(*reader->Load(9000 + i, 1), spec, images[i].data_ptr<float>()).ok());
    labels[i] = reader->label(9000 + i);
  }
  torch::NoGradGuard no_grad;
  const double accuracy = loaded->model->forward(images).argmax(1).eq(labels).to(torch::kFloat64).mean().item<double>();
  EXPECT_GT(accuracy, 0.6);

  // kennelctl status lists both trainers.
  auto [status_code, status] = Ctl({"status"});
  ASSERT_EQ(status_code, 0);
  std::set<std::string> names;
  for (const auto& n : status["nodes"]) names.insert(n["name"]);
  EXPECT_EQ(names, (std::set<std::string>{"trainer-a", "trainer-b"}));
}

// The user's own model end to end: a TorchScript module (tests/fixtures: scripted_fashion.pt, a
// CNN with batch norm for 1x28x28 and 10 classes) trained on two trainers, registered as
// TorchScript, deployed and served.
TEST_F(TrainingClusterTest, AScriptedModelTrainsRegistersDeploysAndServes) {
  auto a = StartTrainer("trainer-a");
  auto b = StartTrainer("trainer-b");
  std::string server;
  auto inference = StartInference(&server);
  ASSERT_NE(inference, nullptr);
  WaitForIdleTrainers(2);
  std::vector<std::string> train = {"train", "--name", "scripted", "--epochs", "1", "--max-train-samples", "4000",
                                    "--max-eval-samples", "1000", "--wait"};
  const std::vector<std::string> model = ScriptedFashionFlags();
  train.insert(train.end(), model.begin(), model.end());
  auto [code, job] = Ctl(train);
  ASSERT_EQ(code, 0) << job.dump(2) << coordinator_->Log();
  EXPECT_EQ(job["state"], "SUCCEEDED");
  EXPECT_EQ(job["spec"]["model"]["architecture"], "TORCHSCRIPT");
  ASSERT_EQ(job["rank_param_digests"].size(), 2u);
  EXPECT_EQ(job["rank_param_digests"][0], job["rank_param_digests"][1]);
  EXPECT_GT(job["epochs"][0]["eval_accuracy"].get<double>(), 0.6);  // Chance: 0.1.
  auto loaded = core::LoadArtifact((dir_ / "coord/artifacts/models/scripted/1").string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_NE(loaded->script, nullptr);
  EXPECT_EQ(loaded->manifest.weights_file(), core::kScriptFile);

  auto [deploy_code, deployed] = Ctl({"deploy", "scripted"});
  ASSERT_EQ(deploy_code, 0) << deployed.dump(2);
  EXPECT_EQ(deployed["results"][0]["ok"], true);
  auto [bench_code, bench] = Ctl({"bench", "-s", server, "--fashion-mnist", "1000", "--duration", "2",
                                  "--concurrency", "2"});
  ASSERT_EQ(bench_code, 0) << bench.dump(2);
  EXPECT_EQ(bench["failed"], 0);
  EXPECT_GT(bench["accuracy"].get<double>(), 0.6);
}

TEST_F(TrainingClusterTest, LostTrainerIsReplacedAndTheJobResumesFromItsCheckpoint) {
  auto a = StartTrainer("trainer-a");
  auto b = StartTrainer("trainer-b");
  WaitForIdleTrainers(2);
  auto [code, submitted] = Ctl({"train", "--name", "recover", "--epochs", "3", "--max-train-samples", "6000",
                                "--max-eval-samples", "1000", "--checkpoint-every", "20", "--detach"});
  ASSERT_EQ(code, 0);
  const std::string id = submitted["id"];
  // Kill a trainer once the job is past its first checkpoint.
  ASSERT_TRUE(WaitPastStep(id, 25, absl::Seconds(120)));
  b->Signal(SIGKILL);
  ASSERT_TRUE(b->Wait(absl::Seconds(10)).ok());
  auto c = StartTrainer("trainer-c");
  const nlohmann::json job = WaitForJobEnd(id, absl::Seconds(240));
  ASSERT_EQ(job["state"], "SUCCEEDED") << job.dump(2) << coordinator_->Log();
  EXPECT_EQ(job["generation"], "2");
  std::set<std::string> ranks(job["nodes"].begin(), job["nodes"].end());
  EXPECT_EQ(ranks, (std::set<std::string>{"trainer-a", "trainer-c"}));
  EXPECT_EQ(job["rank_param_digests"][0], job["rank_param_digests"][1]);
  EXPECT_NE(coordinator_->Log().find("resuming"), std::string::npos);
  auto [sc, status] = Ctl({"status"});
  for (const auto& n : status["nodes"]) {
    if (n["name"] == "trainer-b") {
      EXPECT_EQ(n["state"], "DEAD");
    }
  }
}

// The dog-breed path on a small generated folder in the dogImages layout: torchvision
// ResNet-18 weights (from Debian's torchvision, see tests/fixtures), the seed's MLP head on a
// frozen backbone, two trainers; then a deploy through the coordinator to an inference node
// and classification of the test split with kennelctl classify.
TEST_F(TrainingClusterTest, DogImagesFolderTransferLearningDeployAndClassify) {
  const std::filesystem::path dogs = dir_ / "dogImages";
  WriteDogImages(dogs, 90, 120);
  // Made by the ctest fixture (tests/fixtures/make_torchvision_fixtures.py).
  const std::string weights = BuildDir() + "/testdata/resnet18.pth";
  auto a = StartTrainer("trainer-a");
  auto b = StartTrainer("trainer-b");
  std::string server;
  auto inference = StartInference(&server);
  ASSERT_NE(inference, nullptr);
  WaitForIdleTrainers(2);
  auto [code, job] = Ctl({"train", "--name", "dogs", "--dataset", dogs.string(), "--arch", "resnet18",
                          "--head", "mlp", "--init-weights", weights, "--freeze-backbone", "--image-size", "64",
                          "--resize-shorter", "72", "--epochs", "3", "--batch-size", "8", "--lr", "0.01", "--wait"});
  ASSERT_EQ(code, 0) << job.dump(2) << coordinator_->Log();
  EXPECT_EQ(job["spec"]["model"]["num_classes"], 3);
  EXPECT_EQ(job["rank_param_digests"][0], job["rank_param_digests"][1]);
  auto loaded = core::LoadArtifact((dir_ / "coord/artifacts/models/dogs/1").string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->manifest.class_names(1), "Afghan hound");
  EXPECT_EQ(loaded->manifest.lineage().init_weights(), weights);
  // The frozen backbone is torchvision's, unchanged by training.
  auto source = *core::ReadWeightsFile(weights);
  EXPECT_TRUE(torch::equal(loaded->model->named_parameters()["layer3.0.conv1.weight"], source["layer3.0.conv1.weight"]));

  auto [deploy_code, deployed] = Ctl({"deploy", "dogs"});
  ASSERT_EQ(deploy_code, 0) << deployed.dump(2);
  EXPECT_EQ(deployed["results"][0]["node"], "inference-1");
  EXPECT_EQ(deployed["results"][0]["ok"], true);
  auto [status_code, status] = Ctl({"status"});
  bool listed = false;
  for (const auto& node : status["nodes"]) {
    if (node["name"] == "inference-1") {
      listed = true;
      EXPECT_EQ(node["role"], "INFERENCE");
      EXPECT_EQ(node.value("model", ""), "dogs:1");
    }
  }
  EXPECT_TRUE(listed);
  auto result = core::RunCommand({BuildDir() + "/cli/kennelctl", "-o", "json", "classify", "-s", server, "-k", "1",
                                  (dogs / "test").string()}, absl::Minutes(2), ::testing::TempDir());
  ASSERT_TRUE(result.ok());
  ASSERT_EQ(result->first, 0) << result->second;
  auto classified = nlohmann::json::parse(result->second);
  ASSERT_EQ(classified.size(), 12u);
  int correct = 0;
  for (const auto& r : classified) {
    const std::string file = r["file"];
    const std::string label = r["predictions"][0]["label"];
    EXPECT_EQ(r["model_name"], "dogs");
    correct += (file.find("Afghan_hound") != std::string::npos && label == "Afghan hound") ||
               (file.find("Affenpinscher") != std::string::npos && label == "Affenpinscher") ||
               (file.find("Airedale") != std::string::npos && label == "Airedale terrier");
  }
  EXPECT_GE(correct, 8);  // Solid colours per class: far above chance (4 of 12).

  // The node dies and comes back (a spot reclaim, a reboot): it serves dogs:1 again without
  // anyone deploying (the coordinator keeps the version wanted on each node).
  inference->Signal(SIGKILL);
  ASSERT_TRUE(inference->Wait(absl::Seconds(10)).ok());
  auto restarted = Process::Start({BuildDir() + "/inference_node/kennel-inference", "--coordinator", address_,
                                   "--name", "inference-1", "--listen", "127.0.0.1:0", "--cache_dir",
                                   (dir_ / "cache2").string()},
                                  (dir_ / "inference2.log").string());
  ASSERT_TRUE(restarted.ok());
  EXPECT_TRUE(Eventually([&] {
    auto n = NodeStatus("inference-1");
    return n != nullptr && n["state"] != "DEAD" && n.value("model", "") == "dogs:1" && n.value("serving", false);
  }, absl::Seconds(90))) << (*restarted)->Log() << coordinator_->Log();
}

// SIGSTOP past the heartbeat timeout (a VM pause), then SIGCONT: the trainer used to stay
// "dead" while alive and the job waited in RECOVERING. Now it is closed out, reconnects, and
// the job re-forms and finishes. The trainer left waiting in an all-reduce for the stalled one
// is freed by the coordinator's abort when its operation is still pending (the usual case), and
// otherwise by the collective timeout (30 s here): Debian's Gloo cannot wake an operation
// already under way (GlooCommunicatorTest.AbortFreesCollectivesWaitingForAStalledPeer).
TEST_F(TrainingClusterTest, AStalledTrainerComesBackAndTheJobFinishes) {
  auto a = StartTrainer("trainer-a");
  auto b = StartTrainer("trainer-b");
  WaitForIdleTrainers(2);
  auto [code, submitted] = Ctl({"train", "--name", "stall", "--epochs", "2", "--max-train-samples", "6000",
                                "--max-eval-samples", "1000", "--checkpoint-every", "20",
                                "--collective-timeout", "30", "--detach"});
  ASSERT_EQ(code, 0);
  const std::string id = submitted["id"];
  ASSERT_TRUE(WaitPastStep(id, 25, absl::Seconds(120)));
  ::kill(b->pid(), SIGSTOP);
  EXPECT_TRUE(Eventually([&] {
    auto n = NodeStatus("trainer-b");
    return n != nullptr && n["state"] == "DEAD";
  }, absl::Seconds(30)));  // The coordinator runs with a 5 s heartbeat timeout.
  EXPECT_TRUE(Eventually([&] {
    auto n = NodeStatus("trainer-a");
    return n != nullptr && n["state"] == "IDLE";
  }, absl::Seconds(60))) << a->Log();
  ::kill(b->pid(), SIGCONT);
  EXPECT_TRUE(Eventually([&] {
    auto n = NodeStatus("trainer-b");
    return n != nullptr && n["state"] != "DEAD";
  }, absl::Seconds(60))) << b->Log();
  const nlohmann::json job = WaitForJobEnd(id, absl::Seconds(240));
  ASSERT_EQ(job["state"], "SUCCEEDED") << job.dump(2) << coordinator_->Log();
  EXPECT_GE(std::stoll(job["generation"].get<std::string>()), 2);
  std::set<std::string> ranks(job["nodes"].begin(), job["nodes"].end());
  EXPECT_EQ(ranks, (std::set<std::string>{"trainer-a", "trainer-b"}));
}

// A second process under a live node's name is refused; the live one keeps working.
TEST_F(TrainingClusterTest, ADuplicateNameIsRefusedNotEvicted) {
  auto a = StartTrainer("trainer-a");
  WaitForIdleTrainers(1);
  const std::string first = NodeStatus("trainer-a").value("incarnation", "");
  ASSERT_FALSE(first.empty());
  auto twin = Process::Start({BuildDir() + "/trainer_node/kennel-trainer", "--coordinator", address_, "--name",
                              "trainer-a", "--work_dir", (dir_ / "twin").string()},
                             (dir_ / "twin.log").string());
  ASSERT_TRUE(twin.ok());
  auto refused = (*twin)->WaitForLine("already connected", absl::Seconds(30));
  ASSERT_TRUE(refused.ok()) << (*twin)->Log();
  auto n = NodeStatus("trainer-a");
  EXPECT_EQ(n["state"], "IDLE");
  EXPECT_EQ(n.value("incarnation", ""), first);  // Still the first process.
  // SIGTERM ends the refused twin promptly too.
  (*twin)->Signal(SIGTERM);
  auto code = (*twin)->Wait(absl::Seconds(20));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

// SIGTERM while a ResNet-18 job runs (slow steps): the trainer used to die with SIGSEGV (its
// control stream was torn down while the job thread still reported through it).
TEST_F(TrainingClusterTest, SigtermMidJobStopsTheTrainerCleanly) {
  const std::filesystem::path dogs = dir_ / "dogImages";
  WriteDogImages(dogs, 120, 160);
  auto a = StartTrainer("trainer-a");
  WaitForIdleTrainers(1);
  auto [code, submitted] = Ctl({"train", "--name", "dogs", "--dataset", dogs.string(), "--arch", "resnet18",
                                "--world-size", "1", "--epochs", "20", "--batch-size", "4", "--detach"});
  ASSERT_EQ(code, 0);
  const std::string id = submitted["id"];
  ASSERT_TRUE(WaitPastStep(id, 0, absl::Seconds(120))) << a->Log();
  a->Signal(SIGTERM);
  auto exit_code = a->Wait(absl::Seconds(60));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 0) << a->Log();  // Not 128 + SIGSEGV.
  EXPECT_NE(a->Log().find("stopping the job"), std::string::npos);
}

// With the coordinator unreachable, members still stop promptly on SIGTERM (the control
// stream used to hold its locks through a wait-for-ready connect, so Stop blocked).
TEST_F(TrainingClusterTest, MembersStopOnSigtermWhileTheCoordinatorIsUnreachable) {
  for (const std::vector<std::string>& argv : std::vector<std::vector<std::string>>{
           {BuildDir() + "/trainer_node/kennel-trainer", "--coordinator", "127.0.0.1:1", "--name", "lonely",
            "--work_dir", (dir_ / "lonely").string()},
           {BuildDir() + "/inference_node/kennel-inference", "--coordinator", "127.0.0.1:1", "--name", "lonely-inf",
            "--listen", "127.0.0.1:0", "--metrics_port", "-1", "--cache_dir", (dir_ / "lonely-cache").string()}}) {
    auto p = Process::Start(argv, (dir_ / "lonely.log").string());
    ASSERT_TRUE(p.ok());
    absl::SleepFor(absl::Seconds(2));  // Trying to connect by now.
    (*p)->Signal(SIGTERM);
    auto code = (*p)->Wait(absl::Seconds(20));
    ASSERT_TRUE(code.ok()) << argv[0] << ": " << code.status() << (*p)->Log();
    EXPECT_EQ(*code, 0) << argv[0] << (*p)->Log();
  }
}

// A coordinator SIGTERM used to throw away the running job's work since its last checkpoint
// (288 steps in the issue), and its restart re-formed the group even though the trainers had
// trained on. Now it checkpoints running jobs before stopping, and trainers that come back
// with their generation carry on: nothing is repeated, and the finished job's checkpoint is
// deleted.
TEST_F(TrainingClusterTest, ACoordinatorRestartCheckpointsFirstAndTrainersCarryOn) {
  auto a = StartTrainer("trainer-a");
  auto b = StartTrainer("trainer-b");
  WaitForIdleTrainers(2);
  auto [code, submitted] = Ctl({"train", "--name", "outage", "--epochs", "3", "--max-train-samples", "12000",
                                "--max-eval-samples", "1000", "--detach"});
  ASSERT_EQ(code, 0);
  const std::string id = submitted["id"];
  ASSERT_TRUE(WaitPastStep(id, 20, absl::Seconds(120)));
  coordinator_->Signal(SIGTERM);
  auto stopped = coordinator_->Wait(absl::Seconds(60));
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(*stopped, 0);
  EXPECT_NE(coordinator_->Log().find("1 of 1 running jobs checkpointed before stopping"), std::string::npos)
      << coordinator_->Log();
  EXPECT_TRUE(std::filesystem::exists(dir_ / "coord" / "artifacts" / "checkpoints" / id / "checkpoint.bin"));
  // Back on the same address with the same data.
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(address_, "coordinator-2.log"));
  const nlohmann::json job = WaitForJobEnd(id, absl::Seconds(240));
  ASSERT_EQ(job["state"], "SUCCEEDED") << job.dump(2) << coordinator_->Log();
  EXPECT_EQ(job["generation"], "1");  // Never re-formed.
  EXPECT_NE(coordinator_->Log().find("registered again after the coordinator restart; training went on"),
            std::string::npos) << coordinator_->Log();
  EXPECT_EQ(a->Log().find("resumed at"), std::string::npos);
  EXPECT_EQ(job["epochs"].size(), 3u);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "coord" / "artifacts" / "checkpoints" / id));
}

// A job whose training ends while the coordinator is down: rank 0 keeps the trained model and
// waits for the coordinator, which takes it once it is back. Rank 0 used to fail the upload at
// once; the job then recovered (training again from its last checkpoint), and a trainer that
// registered again as still busy with it (its Idle lost in the outage) held it waiting forever
// (CI, stop 18: a tuning trial RECOVERING for 300 s, "waiting for 1 trainer of generation 1 to
// stop").
TEST_F(TrainingClusterTest, AModelFinishedWhileTheCoordinatorIsDownIsTakenWhenItIsBack) {
  auto a = StartTrainer("trainer-a");
  WaitForIdleTrainers(1);
  auto [code, submitted] = Ctl({"train", "--name", "late", "--world-size", "1", "--epochs", "2",
                                "--max-train-samples", "12000", "--max-eval-samples", "1000", "--detach"});
  ASSERT_EQ(code, 0) << submitted.dump(2);
  const std::string id = submitted["id"];
  ASSERT_TRUE(WaitPastStep(id, 20, absl::Seconds(120)));
  coordinator_->Signal(SIGTERM);
  ASSERT_TRUE(coordinator_->Wait(absl::Seconds(60)).ok());
  // Training goes on to its end; the model waits for the coordinator.
  auto ended = a->WaitForLine(": epoch 2 eval accuracy", absl::Seconds(240));
  ASSERT_TRUE(ended.ok()) << ended.status() << a->Log();
  auto waiting = a->WaitForLine("the coordinator is unreachable to take the model", absl::Seconds(60));
  EXPECT_TRUE(waiting.ok()) << waiting.status() << a->Log();
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(address_, "coordinator-2.log"));
  const nlohmann::json job = WaitForJobEnd(id, absl::Seconds(120));
  ASSERT_EQ(job["state"], "SUCCEEDED") << job.dump(2) << coordinator_->Log() << a->Log();
  EXPECT_EQ(job["generation"], "1");  // Never recovered: nothing trained twice.
  EXPECT_EQ(job["epochs"].size(), 2u);
  EXPECT_EQ(job["model_name"], "late");
  EXPECT_EQ(job["model_version"], "1");
  EXPECT_TRUE(core::LoadArtifact((dir_ / "coord/artifacts/models/late/1").string()).ok());
  // And the trainer is free for the next job.
  EXPECT_TRUE(Eventually([&] {
    auto node = NodeStatus("trainer-a");
    return node != nullptr && node.value("state", "") == "IDLE";
  }, absl::Seconds(30)));
}

// A tuning job on real processes: ASHA's trials are ordinary jobs on the two trainers; the
// coordinator is restarted mid-search and the search goes on where it was; the best trial's
// model is registered under the search's name with its lineage, and every trial's job is
// recorded with its values and seed.
TEST_F(TrainingClusterTest, ATuningJobGoesOnAcrossACoordinatorRestartAndRegistersTheBestTrial) {
  auto a = StartTrainer("trainer-a");
  auto b = StartTrainer("trainer-b");
  WaitForIdleTrainers(2);
  auto [code, submitted] = Ctl({"tune", "--name", "search", "--max-trials", "4", "--parallelism", "2",
                                "--epochs", "3", "--max-train-samples", "3000", "--max-eval-samples", "500",
                                "--space", "learning_rate=log:1e-3:1e-1", "--space", "batch_size=choice:32,64",
                                "--seed", "3", "--detach"});
  ASSERT_EQ(code, 0) << submitted.dump(2);
  const std::string id = submitted["id"];
  EXPECT_EQ(submitted["trials"].size(), 2u);  // Parallelism 2.
  // Once a trial has been judged at its first rung, the coordinator restarts.
  ASSERT_TRUE(Eventually([&] {
    auto t = Ctl({"tune", "status", id}).second;
    for (const auto& trial : t["trials"]) {
      if (trial.contains("rungs") && !trial["rungs"].empty()) return true;
    }
    return false;
  }, absl::Seconds(120)));
  coordinator_->Signal(SIGTERM);
  ASSERT_TRUE(coordinator_->Wait(absl::Seconds(60)).ok());
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(address_, "coordinator-2.log"));
  EXPECT_NE(coordinator_->Log().find("continuing after a coordinator restart"), std::string::npos)
      << coordinator_->Log();
  nlohmann::json t;
  EXPECT_TRUE(Eventually([&] {
    t = Ctl({"tune", "status", id}).second;
    return t["state"] == "SUCCEEDED" || t["state"] == "FAILED" || t["state"] == "CANCELLED";
  }, absl::Seconds(300)));
  ASSERT_EQ(t["state"], "SUCCEEDED") << t.dump(2) << coordinator_->Log();
  ASSERT_EQ(t["trials"].size(), 4u) << t.dump(2);
  int completed = 0;
  std::set<std::string> jobs;
  for (const auto& trial : t["trials"]) {
    completed += trial["state"] == "TRIAL_COMPLETED";
    jobs.insert(trial["job_id"].get<std::string>());
    // Each trial's job trained with the values and seed the search recorded.
    auto job = Ctl({"job", trial["job_id"]}).second;
    EXPECT_EQ(job["spec"]["name"], absl::StrCat("search-trial-", trial["number"].get<int>()));
    EXPECT_EQ(job["spec"]["training"]["seed"], trial["seed"]);
    EXPECT_EQ(absl::StrCat(job["spec"]["training"]["batch_size"].get<int>()), trial["params"]["batch_size"]);
  }
  EXPECT_GE(completed, 1);
  EXPECT_EQ(jobs.size(), 4u);  // No trial ran twice across the restart.
  // The best trial's model, registered under the search's name with its lineage.
  auto [models_code, models] = Ctl({"models", "search"});
  ASSERT_EQ(models_code, 0);
  ASSERT_EQ(models["models"].size(), 1u) << models.dump(2);
  const auto& lineage = models["models"][0]["manifest"]["lineage"];
  EXPECT_EQ(lineage["tuning_id"], id);
  EXPECT_EQ(lineage["trial"], t["best_trial"]);
  EXPECT_TRUE(lineage["hyperparameters"].contains("learning_rate")) << lineage.dump(2);
  auto loaded = core::LoadArtifact((dir_ / "coord/artifacts/models/search/1").string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  // The table view names the best trial and its model.
  auto table = core::RunCommand({BuildDir() + "/cli/kennelctl", "-c", address_, "tune", "status", id},
                                absl::Seconds(30), ::testing::TempDir());
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(table->first, 0);
  EXPECT_NE(table->second.find("model search version 1"), std::string::npos) << table->second;
  EXPECT_NE(table->second.find("LEARNING_RATE"), std::string::npos) << table->second;
}

// Elastic training on real processes: a trainer killed with no replacement, the job goes on
// with the one left (min_world_size 1) from the checkpoint's place in the epoch; a new trainer
// joins and the job grows back after an epoch. Every epoch trains on exactly the dataset.
TEST_F(TrainingClusterTest, AnElasticJobGoesOnWithTheTrainerLeftAndGrowsBack) { ExpectElasticRecovery({}); }

// The same with the user's own model: a TorchScript module's checkpoint restored on the
// trainer left, then on the one that joins, and both ranks end identical.
TEST_F(TrainingClusterTest, AnElasticScriptedJobGoesOnWithTheTrainerLeftAndGrowsBack) {
  ExpectElasticRecovery(ScriptedFashionFlags());
}

// A run that diverges (lr 99) fails with a clear message instead of registering a NaN model.
TEST_F(TrainingClusterTest, ADivergedRunFailsAndRegistersNothing) {
  auto a = StartTrainer("trainer-a");
  WaitForIdleTrainers(1);
  auto [code, job] = Ctl({"train", "--name", "diverged", "--world-size", "1", "--lr", "99", "--epochs", "2",
                          "--max-train-samples", "2000", "--max-eval-samples", "200", "--wait"});
  EXPECT_EQ(code, 4);
  EXPECT_EQ(job["state"], "FAILED");
  EXPECT_NE(job.value("message", "").find("diverged"), std::string::npos) << job.dump(2);
  auto [mc, models] = Ctl({"models", "diverged"});
  EXPECT_TRUE(models["models"].empty()) << models.dump(2);
}

TEST_F(TrainingClusterTest, BadSpecsAreRefusedWithClearErrors) {
  auto [code, out] = Ctl({"train", "--dataset", "/nonexistent/data", "--format", "folder", "--detach"});
  EXPECT_EQ(code, 2);
  auto [code2, out2] = Ctl({"train", "--classes", "7", "--detach"});
  EXPECT_EQ(code2, 2);
  auto [code3, out3] = Ctl({"job", "job-999"});
  EXPECT_EQ(code3, 2);
  auto [code4, out4] = Ctl({"cancel", "job-999"});
  EXPECT_EQ(code4, 2);
}

}  // namespace
}  // namespace kennel
