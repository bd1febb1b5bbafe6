#include "cli/serving_commands.h"

#include <grpcpp/create_channel.h>

#include <filesystem>
#include <iostream>
#include <opencv2/imgcodecs.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/client.h"
#include "core/dataset.h"
#include "core/files.h"
#include "core/grpc_status.h"

namespace kennel::cli {
namespace fs = std::filesystem;
namespace {

int Deploy(const GlobalOptions& global, const std::string& name, int64_t version,
           const std::vector<std::string>& nodes) {
  auto stub = AdminStub(global.coordinator);
  v1::DeployRequest request;
  request.set_name(name);
  request.set_version(version);
  for (const auto& n : nodes) request.add_nodes(n);
  v1::DeployResponse response;
  grpc::Status rpc = stub->Deploy(Context(600).get(), request, &response);
  if (!rpc.ok()) return Fail(core::FromGrpcStatus(rpc));
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
    PrintTable({"NODE", "RESULT", "ERROR"}, rows);
  }
  return all_ok ? kExitOk : kExitFailed;
}

int Classify(const GlobalOptions& global, const std::string& server, const std::vector<std::string>& inputs,
             int top_k) {
  std::vector<std::string> files;
  for (const auto& in : inputs) {
    std::error_code ec;
    if (fs::is_directory(in, ec)) {
      for (const auto& e : fs::recursive_directory_iterator(in, ec)) {
        if (e.is_regular_file() && core::HasImageExtension(e.path().string())) files.push_back(e.path().string());
      }
    } else {
      files.push_back(in);
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
  // Requests that failed carry no response; rerun them unary to get each file's own error.
  auto channel = grpc::CreateChannel(server, grpc::InsecureChannelCredentials());
  auto stub = v1::Inference::NewStub(channel);
  nlohmann::json out = nlohmann::json::array();
  int failures = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    std::string error;
    if (responses[i].predictions().empty()) {
      v1::ClassifyRequest request;
      request.set_image(bytes[i]);
      request.set_top_k(top_k);
      grpc::Status rpc = stub->Classify(Context(60).get(), request, &responses[i]);
      if (!rpc.ok()) error = absl::StrCat(rpc.error_code(), ": ", rpc.error_message());
    }
    if (!error.empty()) ++failures;
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
  if (global.json()) PrintJson(out);
  else std::cerr << absl::StrFormat("%d files in %.2fs (%.0f/s)\n", files.size(), report.seconds, files.size() / report.seconds);
  return failures == 0 ? kExitOk : kExitFailed;
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
};

int Bench(const GlobalOptions& global, const BenchFlags& f) {
  std::vector<std::string> payloads;
  if (!f.images.empty()) {
    std::error_code ec;
    for (const auto& e : fs::recursive_directory_iterator(f.images, ec)) {
      if (!e.is_regular_file() || !core::HasImageExtension(e.path().string())) continue;
      auto b = core::ReadFile(e.path().string(), int64_t{1} << 30);
      if (!b.ok()) return Fail(b.status());
      payloads.push_back(*std::move(b));
    }
    if (payloads.empty()) return Fail(absl::InvalidArgumentError(absl::StrCat("no images under ", f.images)));
  } else {
    std::vector<int> labels;
    absl::Status s = LoadFashionMnistPngs(f.fashion, &payloads, &labels);
    if (!s.ok()) return Fail(s);
  }
  LoadOptions options{.server = f.server, .concurrency = f.concurrency, .depth = f.depth, .rate = f.rate,
                      .duration = absl::Seconds(f.duration_s), .unary = f.unary};
  LoadReport report = RunLoad(options, static_cast<int64_t>(payloads.size()),
                              [&](int64_t i) -> const std::string& { return payloads[static_cast<size_t>(i)]; });
  PrintLoadReport(report, global,
                  absl::StrFormat("%s, %d %s%s", f.unary ? "unary" : "stream", f.concurrency,
                                  f.unary ? "callers" : "streams",
                                  f.rate > 0 ? absl::StrFormat(", open loop %.0f/s", f.rate)
                                             : f.unary ? "" : absl::StrFormat(", %d in flight each", f.depth)));
  return report.ok > 0 ? kExitOk : kExitFailed;
}

}  // namespace

absl::Status LoadFashionMnistPngs(int64_t limit, std::vector<std::string>* images, std::vector<int>* labels) {
  auto index = core::IndexFashionMnist(core::kDebianFashionMnistRoot, "test");
  if (!index.ok()) return index.status();
  auto reader = core::DatasetReader::Create(*index, core::kDebianFashionMnistRoot);
  if (!reader.ok()) return reader.status();
  const int64_t n = limit > 0 ? std::min<int64_t>(limit, (*reader)->size()) : (*reader)->size();
  for (int64_t i = 0; i < n; ++i) {
    auto img = (*reader)->Load(i, 1);
    if (!img.ok()) return img.status();
    std::vector<uchar> buf;
    cv::imencode(".png", *img, buf);
    images->emplace_back(buf.begin(), buf.end());
    labels->push_back((*reader)->label(i));
  }
  return absl::OkStatus();
}

void PrintLoadReport(const LoadReport& r, const GlobalOptions& global, const std::string& title) {
  if (global.json()) {
    PrintJson({{"mode", title}, {"sent", r.sent}, {"ok", r.ok}, {"errors", r.errors}, {"seconds", r.seconds},
               {"throughput", r.throughput}, {"p50_ms", r.p50_ms}, {"p90_ms", r.p90_ms},
               {"p99_ms", r.p99_ms}, {"max_ms", r.max_ms}, {"mean_batch", r.mean_batch}});
    return;
  }
  std::vector<std::string> errors;
  for (const auto& [code, n] : r.errors) errors.push_back(absl::StrCat(code, " ", n));
  std::cout << absl::StrFormat(
      "%s: %.0f req/s, latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms; %d ok, errors: %s; "
      "mean batch %.1f\n",
      title, r.throughput, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms, r.ok,
      errors.empty() ? "none" : absl::StrJoin(errors, ", "), r.mean_batch);
}

void AddServingCommands(CLI::App& app, const GlobalOptions& global) {
  auto deploy_name = std::make_shared<std::string>();
  auto deploy_version = std::make_shared<int64_t>(0);
  auto deploy_nodes = std::make_shared<std::vector<std::string>>();
  auto* deploy = app.add_subcommand(
      "deploy", "Roll a model version out to inference nodes without dropping requests");
  deploy->add_option("model", *deploy_name, "Model name")->required();
  deploy->add_option("--version", *deploy_version, "Version (default: newest)");
  deploy->add_option("--nodes", *deploy_nodes, "Inference nodes (default: all connected)")->delimiter(',');
  deploy->callback([&global, deploy_name, deploy_version, deploy_nodes] {
    throw CLI::RuntimeError(Deploy(global, *deploy_name, *deploy_version, *deploy_nodes));
  });

  auto server = std::make_shared<std::string>("127.0.0.1:7080");
  auto inputs = std::make_shared<std::vector<std::string>>();
  auto top_k = std::make_shared<int>(3);
  auto* classify = app.add_subcommand(
      "classify", "Classify image files (or folders of them) over one ClassifyStream; prints top-k per file");
  classify->add_option("inputs", *inputs, "JPEG/PNG files or folders")->required();
  classify->add_option("--server,-s", *server, "Inference node host:port")->capture_default_str();
  classify->add_option("--top-k,-k", *top_k, "Predictions per file")->check(CLI::Range(1, 1000))->capture_default_str();
  classify->callback([&global, server, inputs, top_k] {
    throw CLI::RuntimeError(Classify(global, *server, *inputs, *top_k));
  });

  auto f = std::make_shared<BenchFlags>();
  auto* bench = app.add_subcommand(
      "bench", "Load-test an inference node: concurrent streams (or unary callers), closed loop or "
               "open loop at a rate; prints throughput, latency percentiles and errors by code");
  bench->add_option("--server,-s", f->server, "Inference node host:port")->capture_default_str();
  bench->add_option("--images", f->images, "Folder of JPEG/PNG files to send (default: Fashion-MNIST test PNGs)");
  bench->add_option("--fashion-mnist", f->fashion, "How many Fashion-MNIST test images to cycle through")->capture_default_str();
  bench->add_option("--concurrency,-c", f->concurrency, "Streams / callers")->check(CLI::Range(1, 4096))->capture_default_str();
  bench->add_option("--depth", f->depth, "Closed loop: requests in flight per stream")->check(CLI::Range(1, 4096))->capture_default_str();
  bench->add_option("--rate", f->rate, "Open loop: total requests per second (0: closed loop)")->capture_default_str();
  bench->add_option("--duration", f->duration_s, "Seconds")->check(CLI::Range(0.1, 86400.0))->capture_default_str();
  bench->add_flag("--unary", f->unary, "Unary Classify calls instead of streams");
  bench->callback([&global, f] { throw CLI::RuntimeError(Bench(global, *f)); });
}

}  // namespace kennel::cli
