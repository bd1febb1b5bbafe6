#include "cli/serving_commands.h"

#include <grpcpp/create_channel.h>

#include <atomic>
#include <filesystem>
#include <limits>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/client.h"
#include "cli/endpoint_watch.h"
#include "cli/sample_images.h"
#include "core/autoscale_spec.h"
#include "core/dataset_index.h"
#include "core/files.h"
#include "core/grpc_status.h"

namespace kennel::cli {
namespace fs = std::filesystem;
namespace {

int Deploy(const GlobalOptions& global, const std::string& name, int64_t version, double min_accuracy,
           const std::vector<std::string>& nodes, const std::string& autoscale) {
  v1::DeployRequest request;
  if (!autoscale.empty()) {
    auto spec = core::ParseAutoscaleSpec(autoscale);
    if (!spec.ok()) return Fail(spec.status());
    *request.mutable_autoscale() = *spec;
  }
  auto stub = AdminStub(global.coordinator);
  request.set_name(name);
  request.set_version(version);
  request.set_min_accuracy(min_accuracy);
  for (const auto& n : nodes) request.add_nodes(n);
  v1::DeployResponse response;
  grpc::Status rpc = stub->Deploy(Context(600).get(), request, &response);
  if (!rpc.ok()) return Fail(RpcError(rpc, Peer::kCoordinator, global.coordinator));
  bool all_ok = true;
  for (const auto& r : response.results()) all_ok = all_ok && r.ok();
  if (global.json()) {
    PrintJson(ProtoToJson(response));
  } else {
    std::vector<std::vector<std::string>> rows;
    for (const auto& r : response.results()) {
      rows.push_back({r.node(), r.ok() ? "serving" : "failed", r.error()});
    }
    std::cout << "deploying " << response.name() << " version " << response.version() << "\n";
    if (!rows.empty()) PrintTable({"NODE", "RESULT", "ERROR"}, rows);
    if (request.has_autoscale()) {
      std::cout << "autoscaling " << response.name() << ": " << core::AutoscaleSpecText(request.autoscale())
                << " (`kennelctl autoscale " << response.name() << "` shows it)\n";
    }
  }
  return all_ok ? kExitOk : kExitFailed;
}

// The exit code and one message for a set of failed classification calls: an unreachable node
// is said once (exit 3); otherwise server-side failures (1) outrank rejected inputs (2).
int ClassifyExitCode(const std::vector<grpc::Status>& failures, const std::string& server) {
  int code = kExitOk;
  for (const auto& f : failures) {
    const absl::Status status = RpcError(f, Peer::kInferenceNode, server);
    const int c = ExitCodeFor(status);
    if (c == kExitUnavailable || status.code() == absl::StatusCode::kFailedPrecondition) {
      return Fail(status);  // Unreachable, or not an inference node: every file failed alike.
    }
    if (code == kExitOk || c == kExitFailed) code = c;
  }
  return code;
}

int Classify(const GlobalOptions& global, const std::string& server, const std::vector<std::string>& inputs,
             int top_k) {
  std::vector<std::string> files;
  for (const auto& in : inputs) {
    std::error_code ec;
    if (!fs::exists(in, ec)) return Fail(absl::NotFoundError(absl::StrCat(in, ": no such file or folder")));
    if (!fs::is_directory(in, ec)) {
      files.push_back(in);  // Named explicitly: sent whatever its name; the node judges it.
      continue;
    }
    int64_t skipped = 0;
    std::string example;
    for (const auto& e : fs::recursive_directory_iterator(in, ec)) {
      if (!e.is_regular_file()) continue;
      if (core::HasImageExtension(e.path().string())) {
        files.push_back(e.path().string());
      } else if (skipped++ == 0) {
        example = e.path().string();
      }
    }
    if (skipped > 0) {
      std::cerr << "kennelctl: skipped " << skipped << " file(s) in " << in
                << " without a .jpg, .jpeg or .png name (e.g. " << example << "); name them to send them\n";
    }
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) return Fail(absl::InvalidArgumentError("no image files given"));
  std::vector<std::string> bytes(files.size());
  for (size_t i = 0; i < files.size(); ++i) {
    auto b = core::ReadFile(files[i], int64_t{1} << 30);
    if (!b.ok()) return Fail(b.status());
    bytes[i] = *std::move(b);
  }
  std::vector<v1::ClassifyResponse> responses(files.size());
  LoadOptions options{.server = server, .concurrency = 1, .depth = 64,
                      .max_requests = static_cast<int64_t>(files.size()), .top_k = top_k};
  options.duration = absl::Hours(24);
  LoadReport report = RunLoad(options, static_cast<int64_t>(files.size()),
                              [&](int64_t i) -> const std::string& { return bytes[static_cast<size_t>(i)]; },
                              [&](int64_t i, const v1::ClassifyResponse& r) { responses[static_cast<size_t>(i)] = r; });
  if (!report.error.empty()) return Fail(absl::InvalidArgumentError(report.error));
  // Requests that failed carry no response; rerun them unary to get each file's own error.
  auto channel = InferenceChannel(server);
  if (!channel.ok()) return Fail(channel.status());
  auto stub = v1::Inference::NewStub(*channel);
  nlohmann::json out = nlohmann::json::array();
  std::vector<grpc::Status> failures;
  for (size_t i = 0; i < files.size(); ++i) {
    grpc::Status rpc;
    if (responses[i].predictions().empty()) {
      v1::ClassifyRequest request;
      request.set_image(bytes[i]);
      request.set_top_k(top_k);
      rpc = stub->Classify(Context(60).get(), request, &responses[i]);
      if (!rpc.ok()) failures.push_back(rpc);
      if (rpc.error_code() == grpc::StatusCode::UNAVAILABLE || rpc.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
        return ClassifyExitCode(failures, server);
      }
    }
    const std::string error = rpc.ok() ? "" : absl::StrCat(absl::StatusCodeToString(core::FromGrpcStatus(rpc).code()), ": ", rpc.error_message());
    if (global.json()) {
      nlohmann::json j = error.empty() ? ProtoToJson(responses[i]) : nlohmann::json{{"error", error}};
      j["file"] = files[i];
      out.push_back(j);
      continue;
    }
    if (!error.empty()) {
      std::cout << files[i] << ": error " << error << "\n";
      continue;
    }
    std::vector<std::string> preds;
    for (const auto& p : responses[i].predictions()) {
      preds.push_back(absl::StrFormat("%s %.3f", p.label(), p.probability()));
    }
    std::cout << files[i] << ": " << absl::StrJoin(preds, ", ") << "\n";
  }
  if (global.json()) {
    PrintJson(out);
  } else {
    std::cerr << absl::StrFormat("classified %d of %d files in %.2fs\n", files.size() - failures.size(),
                                 files.size(), report.seconds);
  }
  return ClassifyExitCode(failures, server);
}

struct BenchFlags {
  std::string server = "127.0.0.1:7080";
  std::string images;
  int64_t fashion = 2000;
  int concurrency = 8;
  int depth = 4;
  double rate = 0;
  double duration_s = 10;
  bool unary = false;
  std::string model;
};

int Bench(const GlobalOptions& global, const BenchFlags& f) {
  std::vector<std::string> payloads;
  std::vector<int> labels;  // Known for Fashion-MNIST's images: the run is also scored.
  if (!f.images.empty()) {
    std::error_code ec;
    for (const auto& e : fs::recursive_directory_iterator(f.images, ec)) {
      if (!e.is_regular_file() || !core::HasImageExtension(e.path().string())) continue;
      auto b = core::ReadFile(e.path().string(), int64_t{1} << 30);
      if (!b.ok()) return Fail(b.status());
      payloads.push_back(*std::move(b));
    }
    if (payloads.empty()) return Fail(absl::InvalidArgumentError(absl::StrCat("no .jpg/.jpeg/.png images under ", f.images)));
  } else {
    absl::Status s = LoadFashionMnistPngs(f.fashion, &payloads, &labels);
    if (!s.ok()) return Fail(s);
  }
  LoadOptions options{.server = f.server, .concurrency = f.concurrency, .depth = f.depth, .rate = f.rate,
                      .duration = absl::Seconds(f.duration_s), .unary = f.unary};
  std::unique_ptr<EndpointWatch> watch;
  if (!f.model.empty()) {
    auto w = EndpointWatch::Start(global.coordinator, f.model);
    if (!w.ok()) return Fail(w.status());
    watch = *std::move(w);
    options.follow = watch.get();
  }
  std::atomic<int64_t> scored{0}, correct{0};
  LoadReport report = RunLoad(
      options, static_cast<int64_t>(payloads.size()),
      [&](int64_t i) -> const std::string& { return payloads[static_cast<size_t>(i)]; },
      [&](int64_t i, const v1::ClassifyResponse& r) {
        if (labels.empty() || r.predictions().empty()) return;
        ++scored;
        correct += r.predictions(0).class_index() == labels[static_cast<size_t>(i) % labels.size()];
      });
  if (scored > 0) report.accuracy = static_cast<double>(correct) / static_cast<double>(scored);
  if (!report.error.empty()) return Fail(absl::InvalidArgumentError(report.error));
  PrintLoadReport(report, global,
                  absl::StrFormat("%s, %d %s%s", f.unary ? "unary" : "stream", f.concurrency,
                                  f.unary ? "callers" : "streams",
                                  f.rate > 0 ? absl::StrFormat(", open loop %.0f/s", f.rate)
                                             : f.unary ? "" : absl::StrFormat(", %d in flight each", f.depth)));
  if (report.failed() == 0) return kExitOk;
  // Say why, loudly: an unreachable node, or requests that failed.
  if (report.ok == 0 && (report.errors.contains("UNAVAILABLE") || report.errors.contains("UNIMPLEMENTED"))) {
    const auto code = report.errors.contains("UNIMPLEMENTED") ? grpc::StatusCode::UNIMPLEMENTED
                                                              : grpc::StatusCode::UNAVAILABLE;
    return Fail(RpcError(grpc::Status(code, ""), Peer::kInferenceNode, f.server));
  }
  return Fail(absl::InternalError(absl::StrCat(report.failed(), " of ", report.sent, " requests failed")));
}

}  // namespace

void PrintLoadReport(const LoadReport& r, const GlobalOptions& global, const std::string& title) {
  if (global.json()) {
    PrintJson({{"mode", title}, {"sent", r.sent}, {"ok", r.ok}, {"failed", r.failed()}, {"errors", r.errors},
               {"stream_restarts", r.stream_restarts}, {"stream_moves", r.stream_moves}, {"seconds", r.seconds},
               {"throughput", r.throughput}, {"p50_ms", r.p50_ms}, {"p90_ms", r.p90_ms},
               {"p99_ms", r.p99_ms}, {"max_ms", r.max_ms}, {"mean_batch", r.mean_batch},
               {"accuracy", r.accuracy >= 0 ? nlohmann::json(r.accuracy) : nlohmann::json()}});
    return;
  }
  std::vector<std::string> errors;
  for (const auto& [code, n] : r.errors) errors.push_back(absl::StrCat(code, " ", n));
  std::cout << absl::StrFormat(
      "%s, %.1f s: %.0f req/s, latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms; %d ok, errors: %s%s; "
      "mean batch %.1f%s\n",
      title, r.seconds, r.throughput, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms, r.ok,
      errors.empty() ? "none" : absl::StrJoin(errors, ", "),
      absl::StrCat(r.stream_restarts > 0 ? absl::StrCat(" (", r.stream_restarts, " stream restarts)") : "",
                   r.stream_moves > 0 ? absl::StrCat(" (", r.stream_moves, " streams moved to a new endpoint set)") : ""),
      r.mean_batch,
      r.accuracy >= 0 ? absl::StrFormat("; accuracy %.4f", r.accuracy) : "");
}

void AddServingCommands(CLI::App& app, const GlobalOptions& global) {
  auto deploy_name = std::make_shared<std::string>();
  auto deploy_version = std::make_shared<int64_t>(0);
  auto deploy_nodes = std::make_shared<std::vector<std::string>>();
  auto deploy_min_accuracy = std::make_shared<double>(0);
  auto* deploy = app.add_subcommand(
      "deploy", "Roll a model version out to inference nodes without dropping requests");
  deploy->add_option("model", *deploy_name, "Model name")->required();
  deploy->add_option("--version", *deploy_version, "Version (default: the newest fit to serve: finite metrics)")->check(CLI::Range(int64_t{1}, std::numeric_limits<int64_t>::max()));
  deploy->add_option("--nodes", *deploy_nodes, "Inference nodes (default: all connected)")->delimiter(',');
  deploy->add_option("--min-accuracy", *deploy_min_accuracy,
                     "Without --version: the newest version with at least this test accuracy")
      ->check(CLI::Range(0.0, 1.0));
  auto deploy_autoscale = std::make_shared<std::string>();
  deploy->add_option("--autoscale", *deploy_autoscale,
                     "Autoscale the model's nodes from now on: min=N,max=N[,target=0.7,...] (see `kennelctl "
                     "autoscale --help`); the coordinator starts what min needs");
  deploy->callback([&global, deploy_name, deploy_version, deploy_min_accuracy, deploy_nodes, deploy_autoscale] {
    throw CLI::RuntimeError(
        Deploy(global, *deploy_name, *deploy_version, *deploy_min_accuracy, *deploy_nodes, *deploy_autoscale));
  });

  auto server = std::make_shared<std::string>("127.0.0.1:7080");
  auto inputs = std::make_shared<std::vector<std::string>>();
  auto top_k = std::make_shared<int>(3);
  auto* classify = app.add_subcommand(
      "classify", "Classify image files (or folders of them) over one ClassifyStream; prints top-k per file");
  classify->add_option("inputs", *inputs, "JPEG/PNG files or folders")->required();
  classify->add_option("--server,-s", *server,
                       "Inference node host:port, or several (a,b,...: round robin over the healthy ones)")
      ->capture_default_str();
  classify->add_option("--top-k,-k", *top_k, "Predictions per file")->check(CLI::Range(1, 1000))->capture_default_str();
  auto classify_model = std::make_shared<std::string>();
  classify->add_option("--model,-m", *classify_model,
                       "Send to the nodes that serve this model now, as the coordinator (-c) lists them, "
                       "instead of --server");
  classify->callback([&global, server, inputs, top_k, classify_model] {
    std::string servers = *server;
    if (!classify_model->empty()) {
      auto watch = EndpointWatch::Start(global.coordinator, *classify_model);
      if (!watch.ok()) throw CLI::RuntimeError(Fail(watch.status()));
      servers = (*watch)->Current().first;
    }
    throw CLI::RuntimeError(Classify(global, servers, *inputs, *top_k));
  });

  auto f = std::make_shared<BenchFlags>();
  auto* bench = app.add_subcommand(
      "bench", "Load-test an inference node: concurrent streams (or unary callers), closed loop or "
               "open loop at a rate; prints throughput, latency percentiles and errors by code");
  bench->add_option("--server,-s", f->server,
                    "Inference node host:port, or several (a,b,...: round robin over the healthy ones, "
                    "unary calls retried on another node when theirs goes away)")
      ->capture_default_str();
  bench->add_option("--images", f->images, "Folder of JPEG/PNG files to send (default: Fashion-MNIST test PNGs)")
      ->check(CLI::ExistingDirectory);
  bench->add_option("--fashion-mnist", f->fashion, "How many Fashion-MNIST test images to cycle through (their labels score the answers: accuracy)")
      ->check(CLI::Range(int64_t{1}, int64_t{10000}))
      ->capture_default_str();
  bench->add_option("--concurrency", f->concurrency, "Streams / callers")->check(CLI::Range(1, 4096))->capture_default_str();
  bench->add_option("--depth", f->depth, "Closed loop: requests in flight per stream")->check(CLI::Range(1, 4096))->capture_default_str();
  bench->add_option("--rate", f->rate, "Open loop: total requests per second (0: closed loop)")
      ->check(CLI::Range(0.0, 10'000'000.0))
      ->capture_default_str();
  bench->add_option("--duration", f->duration_s, "Seconds")->check(CLI::Range(0.1, 86400.0))->capture_default_str();
  bench->add_flag("--unary", f->unary, "Unary Classify calls instead of streams");
  bench->add_option("--model,-m", f->model,
                    "Follow the nodes that serve this model, as the coordinator (-c) streams them, instead of "
                    "--server: streams move to a new set as it changes (an autoscaled model's nodes come and "
                    "go), after taking their answers");
  bench->callback([&global, f] { throw CLI::RuntimeError(Bench(global, *f)); });
}

}  // namespace kennel::cli
