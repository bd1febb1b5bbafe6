// kennelctl-import: the LibTorch half of `kennelctl import` (see cli/import_command.h).
// kennelctl runs it with its own command line; run alone it behaves the same.
#include <CLI/CLI.hpp>

#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "cli/client.h"
#include "cli/import_command.h"
#include "cli/output.h"
#include "core/grpc_status.h"
#include "core/member/coordinator_client.h"
#include "core/ml/artifact.h"
#include "core/ml/model_import.h"
#include "core/process_setup.h"

namespace kennel::cli {
namespace {
namespace fs = std::filesystem;

int RunImport(const ImportFlags& f, const GlobalOptions& global) {
  core::ModelImportOptions options;
  options.weights_path = f.weights;
  options.name = f.name;
  auto classes = ClassNamesFromFlags(f);
  if (!classes.ok()) return Fail(classes.status());
  options.class_names = *classes;
  auto model = ModelSpecFromFlags(f);
  if (!model.ok()) return Fail(model.status());
  options.model = *model;
  auto preprocess = PreprocessFromFlags(f, *model);
  if (!preprocess.ok()) return Fail(preprocess.status());
  options.preprocess = *preprocess;
  options.output = f.output_kind == "probabilities" ? v1::PROBABILITIES : v1::LOGITS;
  // Registering without --output: a scratch folder, removed afterwards.
  std::string scratch;
  if (f.output.empty()) {
    std::error_code ec;
    scratch = (fs::temp_directory_path(ec) / absl::StrCat("kennel-import-", ::getpid())).string();
    fs::remove_all(scratch, ec);
    options.output_dir = (fs::path(scratch) / f.name).string();
    fs::create_directories(scratch, ec);
  } else {
    options.output_dir = f.output;
  }
  auto cleanup = [&] {
    std::error_code ec;
    if (!scratch.empty()) fs::remove_all(scratch, ec);
  };
  auto result = core::ImportModel(options);
  if (!result.ok()) {
    cleanup();
    return Fail(result.status());
  }
  int64_t version = 0;
  if (f.register_model) {
    v1::ArtifactRef ref;
    ref.set_kind(v1::ArtifactRef::MODEL);
    ref.set_name(f.name);
    auto stub = CoordinatorStub(global.coordinator);
    auto stored = core::UploadFolder(*stub, options.output_dir,
                                     {core::kManifestFile, result->manifest.weights_file()}, ref, absl::Minutes(10));
    if (!stored.ok()) {
      cleanup();
      return Fail(RpcError(core::ToGrpcStatus(stored.status()), Peer::kCoordinator, global.coordinator));
    }
    version = stored->version();
  }
  cleanup();
  const auto& m = result->manifest;
  if (global.json()) {
    nlohmann::json out = ProtoToJson(m);
    out["version"] = version;
    out["artifact"] = f.output.empty() ? "" : f.output;
    out["tensors"] = result->tensors;
    out["parameters"] = result->parameters;
    out["conversions"] = result->conversions;
    PrintJson(out);
    return kExitOk;
  }
  std::cout << "imported " << f.weights << ": " << core::ArchitectureName(m.model().architecture()) << ", "
            << m.model().num_classes() << " classes, " << result->tensors << " tensors, " << result->parameters
            << " parameters, input " << m.preprocess().channels() << "x" << m.preprocess().height() << "x"
            << m.preprocess().width()
            << (m.has_scripted() ? (m.scripted().output() == v1::PROBABILITIES ? ", outputs probabilities"
                                                                               : ", outputs logits")
                                 : "")
            << "\n";
  if (!result->conversions.empty()) {
    std::cout << "converted to float32: " << absl::StrJoin(result->conversions, ", ") << "\n";
  }
  if (!f.output.empty()) std::cout << "artifact: " << f.output << "\n";
  if (version > 0) {
    std::cout << "registered " << f.name << " version " << version << " (kennelctl deploy " << f.name
              << " --version " << version << ")\n";
  }
  return kExitOk;
}

}  // namespace
}  // namespace kennel::cli

int main(int argc, char** argv) {
  namespace cli = kennel::cli;
  kennel::core::TuneAllocator();
  kennel::core::DisableMutexDeadlockDetection();
  cli::GlobalOptions global;
  global.coordinator = cli::DefaultCoordinator();
  CLI::App app("kennelctl-import: the half of `kennelctl import` that needs LibTorch.");
  cli::AddGlobalFlags(app, global);
  app.require_subcommand(1);
  cli::AddImportCommand(app, global, cli::RunImport);
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) cli::AddGlobalFlags(*sub, global);
  try {
    app.parse(argc, argv);
  } catch (const CLI::RuntimeError& e) {
    return e.get_exit_code();
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? cli::kExitOk : cli::kExitUsage;
  }
  return cli::kExitOk;
}
