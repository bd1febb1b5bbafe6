#include "cli/up_command.h"

#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "cli/client.h"
#include "cli/endpoint_watch.h"
#include "core/autoscale_spec.h"
#include "cli/load_generator.h"
#include "cli/sample_images.h"
#include "cli/serving_commands.h"
#include "cli/train_command.h"
#include "core/dataset_index.h"
#include "core/files.h"
#include "core/grpc_status.h"
#include "core/subprocess.h"

namespace kennel::cli {
namespace fs = std::filesystem;
namespace {

volatile std::sig_atomic_t g_stop = 0;

struct UpFlags {
  TrainFlags train;
  std::string data_dir = "kennel-demo";
  int inference_nodes = 1;
  int64_t classify_limit = 0;
  int concurrency = 4;
  bool keep_running = false;
  // "min=..,max=..": the coordinator's local provider starts and retires the inference nodes.
  std::string autoscale;
};

void Say(const std::string& s) { std::cerr << "\033[1m[kennel up]\033[0m " << s << std::endl; }

class LocalCluster {
 public:
  ~LocalCluster() { Stop(); }

  absl::Status Start(const UpFlags& f, int trainers) {
    logs_ = (fs::path(f.data_dir) / "logs").string();
    std::error_code ec;
    fs::create_directories(logs_, ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat("cannot create ", logs_, ": ", ec.message()));
    auto coordinator = FindKennelBinary("kennel-coordinator", "coordinator");
    auto trainer = FindKennelBinary("kennel-trainer", "trainer_node");
    auto inference = FindKennelBinary("kennel-inference", "inference_node");
    for (const auto* b : {&coordinator, &trainer, &inference}) {
      if (!b->ok()) return b->status();
    }
    std::vector<std::string> argv = {*coordinator, "--listen", "127.0.0.1:0", "--data_dir",
                                     (fs::path(f.data_dir) / "coordinator").string()};
    if (!f.autoscale.empty()) {
      argv.insert(argv.end(), {"--autoscale_provider", "local", "--autoscale_node_args", "--instances 1 --torch_threads 1"});
    }
    auto c = core::Process::Start(argv, logs_ + "/coordinator.log");
    if (!c.ok()) return c.status();
    procs_.push_back(std::move(*c));
    auto line = procs_.back()->WaitForLine("listening on port ", absl::Seconds(30));
    if (!line.ok()) return line.status();
    address_ = absl::StrCat("127.0.0.1:", line->substr(line->rfind(' ') + 1));
    Say(absl::StrCat("coordinator on ", address_, " (state in ", f.data_dir, "/coordinator, logs in ", logs_, ")"));
    for (int i = 0; i < trainers; ++i) {
      const std::string name = absl::StrCat("trainer-", i + 1);
      auto t = core::Process::Start({*trainer, "--coordinator", address_, "--name", name, "--work_dir",
                                     (fs::path(f.data_dir) / name).string()},
                                    logs_ + "/" + name + ".log", {"OPENBLAS_NUM_THREADS=1"});
      if (!t.ok()) return t.status();
      procs_.push_back(std::move(*t));
    }
    const int inference_nodes = f.autoscale.empty() ? f.inference_nodes : 0;  // The autoscaler's.
    for (int i = 0; i < inference_nodes; ++i) {
      const std::string name = absl::StrCat("inference-", i + 1);
      auto n = core::Process::Start({*inference, "--coordinator", address_, "--name", name, "--listen",
                                     "127.0.0.1:0", "--cache_dir", (fs::path(f.data_dir) / name).string()},
                                    logs_ + "/" + name + ".log", {"OPENBLAS_NUM_THREADS=1"});
      if (!n.ok()) return n.status();
      procs_.push_back(std::move(*n));
      auto l = procs_.back()->WaitForLine("listening on port ", absl::Seconds(30));
      if (!l.ok()) return l.status();
      const std::string rest = l->substr(l->find("port ") + 5);
      inference_.push_back(absl::StrCat("127.0.0.1:", rest.substr(0, rest.find(' '))));
    }
    Say(f.autoscale.empty() ? absl::StrCat(trainers, " trainers and ", f.inference_nodes, " inference node(s) starting")
                            : absl::StrCat(trainers, " trainers starting; inference nodes come from the autoscaler (",
                                           f.autoscale, ")"));
    return WaitForMembers(trainers, inference_nodes);
  }

  absl::Status WaitForMembers(int trainers, int inference) {
    auto stub = AdminStub(address_);
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline) {
      v1::ClusterStatus status;
      if (stub->GetClusterStatus(Context(5).get(), {}, &status).ok()) {
        int t = 0, n = 0;
        for (const auto& node : status.nodes()) {
          t += node.role() == v1::TRAINER && node.state() == v1::IDLE;
          n += node.role() == v1::INFERENCE && node.state() != v1::DEAD;
        }
        if (t >= trainers && n >= inference) return absl::OkStatus();
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    return absl::DeadlineExceededError(absl::StrCat("cluster members did not register; see ", logs_));
  }

  void Stop() {
    if (procs_.empty()) return;
    for (auto it = procs_.rbegin(); it != procs_.rend(); ++it) (*it)->Signal(SIGTERM);
    for (auto& p : procs_) {
      if (!p->Wait(absl::Seconds(15)).ok()) p->Signal(SIGKILL);
    }
    procs_.clear();
    Say("cluster stopped");
  }

  const std::string& address() const { return address_; }
  const std::vector<std::string>& inference() const { return inference_; }

 private:
  std::string logs_;
  std::string address_;
  std::vector<std::string> inference_;
  std::vector<std::unique_ptr<core::Process>> procs_;
};

// The test split's encoded images and labels, as clients would send them.
absl::Status TestImages(const v1::JobSpec& spec, int64_t limit, std::vector<std::string>* images,
                        std::vector<int>* labels) {
  if (spec.dataset().format() == v1::DatasetIndex::IDX) return LoadFashionMnistPngs(limit, images, labels);
  auto index = core::IndexImageFolder(spec.dataset().root(), "test");
  if (!index.ok()) return index.status();
  for (const auto& s : index->samples()) {
    if (limit > 0 && static_cast<int64_t>(images->size()) >= limit) break;
    auto bytes = core::ReadFile((fs::path(spec.dataset().root()) / s.location()).string(), int64_t{64} << 20);
    if (!bytes.ok()) return bytes.status();
    images->push_back(*std::move(bytes));
    labels->push_back(s.label());
  }
  return absl::OkStatus();
}

int Up(const UpFlags& f, const CLI::App& cmd, GlobalOptions& global) {
  auto spec = SpecFromFlags(f.train, cmd);
  if (!spec.ok()) return Fail(spec.status());
  const int trainers = spec->has_world_size() ? spec->world_size() : 1;
  if (trainers < 1 || trainers > 16) {
    return Fail(absl::InvalidArgumentError(absl::StrCat("kennelctl up starts 1 to 16 trainers, not ", trainers)));
  }
  if (!f.autoscale.empty()) {  // Refused before anything starts.
    if (auto a = core::ParseAutoscaleSpec(f.autoscale); !a.ok()) return Fail(a.status());
    if (cmd.count("--inference-nodes") > 0) {
      return Fail(absl::InvalidArgumentError("give --inference-nodes or --autoscale, not both"));
    }
  }
  LocalCluster cluster;
  if (absl::Status s = cluster.Start(f, trainers); !s.ok()) return Fail(s);
  global.coordinator = cluster.address();

  Say(absl::StrCat("training ", spec->name(), " on ", spec->dataset().root()));
  auto admin = AdminStub(cluster.address());
  v1::SubmitJobRequest submit;
  *submit.mutable_spec() = *spec;
  v1::JobStatus job;
  grpc::Status rpc = admin->SubmitJob(Context(600).get(), submit, &job);
  if (!rpc.ok()) return Fail(RpcError(rpc, Peer::kCoordinator, cluster.address()));
  if (int code = FollowJob(global, job.id(), /*quiet=*/false); code != kExitOk) return code;
  rpc = admin->GetJob(Context().get(), [&] { v1::GetJobRequest r; r.set_job_id(job.id()); return r; }(), &job);
  if (!rpc.ok() || job.state() != v1::SUCCEEDED) {
    return Fail(absl::AbortedError(absl::StrCat("training did not succeed; see kennelctl -c ", cluster.address(), " job ", job.id())));
  }

  Say(absl::StrCat("deploying ", job.model_name(), " version ", job.model_version()));
  v1::DeployRequest deploy;
  deploy.set_name(job.model_name());
  deploy.set_version(job.model_version());
  if (!f.autoscale.empty()) {
    auto autoscale = core::ParseAutoscaleSpec(f.autoscale);
    if (!autoscale.ok()) return Fail(autoscale.status());
    *deploy.mutable_autoscale() = *autoscale;
  }
  v1::DeployResponse deployed;
  rpc = admin->Deploy(Context(600).get(), deploy, &deployed);
  if (!rpc.ok()) return Fail(RpcError(rpc, Peer::kCoordinator, cluster.address()));
  for (const auto& r : deployed.results()) {
    if (!r.ok()) return Fail(absl::InternalError(absl::StrCat("deploy to ", r.node(), " failed: ", r.error())));
  }

  std::vector<std::string> images;
  std::vector<int> labels;
  if (absl::Status s = TestImages(*spec, f.classify_limit, &images, &labels); !s.ok()) return Fail(s);
  std::unique_ptr<EndpointWatch> watch;
  std::string where = f.autoscale.empty() ? cluster.inference()[0] : "";
  if (!f.autoscale.empty()) {
    // The autoscaler starts min nodes; classification follows the model's endpoint set.
    Say("waiting for the autoscaler's first node to serve");
    const absl::Time deadline = absl::Now() + absl::Minutes(5);
    absl::StatusOr<std::unique_ptr<EndpointWatch>> w = absl::NotFoundError("");
    while (absl::Now() < deadline) {
      w = EndpointWatch::Start(cluster.address(), job.model_name());
      if (w.ok() || w.status().code() != absl::StatusCode::kNotFound) break;
      absl::SleepFor(absl::Milliseconds(250));
    }
    if (!w.ok()) return Fail(w.status());
    watch = *std::move(w);
    where = absl::StrCat("the nodes serving ", job.model_name(), " (", watch->Current().first, ", followed as they change)");
  }
  Say(absl::StrCat("streaming ", images.size(), " test images through ClassifyStream on ", where));
  std::atomic<int64_t> correct{0};
  LoadOptions load{.server = f.autoscale.empty() ? cluster.inference()[0] : "", .concurrency = f.concurrency,
                   .depth = 32, .max_requests = static_cast<int64_t>(images.size()), .top_k = 1};
  load.follow = watch.get();
  load.duration = absl::Hours(24);
  LoadReport report = RunLoad(load, static_cast<int64_t>(images.size()),
                              [&](int64_t i) -> const std::string& { return images[static_cast<size_t>(i)]; },
                              [&](int64_t i, const v1::ClassifyResponse& r) {
                                if (r.predictions_size() > 0 &&
                                    r.predictions(0).class_index() == labels[static_cast<size_t>(i)]) {
                                  correct++;
                                }
                              });
  const double accuracy = images.empty() ? 0 : static_cast<double>(correct) / static_cast<double>(images.size());
  if (global.json()) {
    PrintJson({{"job", job.id()}, {"model", job.model_name()}, {"version", job.model_version()},
               {"eval_accuracy", job.epochs().empty() ? 0 : job.epochs().rbegin()->eval_accuracy()},
               {"served_accuracy", accuracy}, {"images", images.size()}, {"throughput", report.throughput},
               {"p50_ms", report.p50_ms}, {"p99_ms", report.p99_ms}, {"errors", report.errors}});
  } else {
    std::cout << absl::StrFormat(
        "served %d test images: accuracy %.4f, %.0f images/s, latency p50 %.2f ms p99 %.2f ms, %d errors\n",
        images.size(), accuracy, report.throughput, report.p50_ms, report.p99_ms, report.sent - report.ok);
  }
  if (f.keep_running) {
    if (f.autoscale.empty()) {
      Say(absl::StrCat("cluster running: coordinator ", cluster.address(), ", inference ", cluster.inference()[0]));
      Say(absl::StrCat("try: kennelctl -c ", cluster.address(), " status; kennelctl classify -s ",
                       cluster.inference()[0], " IMAGES...; Ctrl-C stops everything"));
    } else {
      Say(absl::StrCat("cluster running: coordinator ", cluster.address(), ", inference nodes autoscaled"));
      Say(absl::StrCat("try: kennelctl -c ", cluster.address(), " autoscale; kennelctl -c ", cluster.address(),
                       " bench --model ", job.model_name(), " --rate 200; Ctrl-C stops everything"));
    }
    Say(absl::StrCat("the web console: kennelctl -c ", cluster.address(), " ui (then http://127.0.0.1:7080/)"));
    std::signal(SIGINT, [](int) { g_stop = 1; });
    std::signal(SIGTERM, [](int) { g_stop = 1; });
    while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return report.ok == static_cast<int64_t>(images.size()) ? kExitOk : kExitFailed;
}

}  // namespace

void AddUpCommand(CLI::App& app, GlobalOptions& global) {
  auto f = std::make_shared<UpFlags>();
  // The demo's own defaults: 2 short epochs at a rate that gets there.
  f->train.epochs = 2;
  f->train.lr = 0.05;
  f->train.schedule = "cosine";
  CLI::App* cmd = app.add_subcommand(
      "up", "Kennel's main job on this machine: start a local cluster (coordinator, trainers, "
            "inference node), train, deploy, classify the test split over ClassifyStream, report, "
            "shut down. Defaults: the small CNN on Debian's Fashion-MNIST, 2 trainers, 2 epochs. "
            "Takes every job flag of `kennelctl train`.");
  cmd->alias("demo");
  AddJobFlags(*cmd, f->train);
  cmd->add_option("--data-dir", f->data_dir, "Where the cluster keeps state and logs")->capture_default_str();
  cmd->add_option("--inference-nodes", f->inference_nodes, "Inference nodes to start")
      ->check(CLI::Range(1, 16))
      ->capture_default_str();
  cmd->add_option("--classify-limit", f->classify_limit, "Test images to stream (0: all)")->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  cmd->add_option("--concurrency", f->concurrency, "Client streams for the classification pass")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  cmd->add_flag("--keep-running", f->keep_running, "Leave the cluster up until Ctrl-C");
  cmd->add_option("--autoscale", f->autoscale,
                  "Autoscale the inference nodes instead of starting --inference-nodes: min=N,max=N[,target=0.7,...] "
                  "(see `kennelctl autoscale --help`); the coordinator starts and retires them on this machine");
  cmd->callback([f, cmd, &global] { throw CLI::RuntimeError(Up(*f, *cmd, global)); });
}

}  // namespace kennel::cli
