#include "core/aoti_package.h"

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace kennel::core {
namespace {

constexpr uint64_t kMaxMetadataBytes = 1 << 20;

// "2.11.0+cu130" -> "2.11.0".
absl::string_view Release(absl::string_view version) { return version.substr(0, version.find('+')); }

}  // namespace

absl::StatusOr<AotiPackageInfo> ReadAotiPackageInfo(const ZipRead& read, uint64_t size, absl::string_view what) {
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not an AOTInductor package (.pt2 from "
                                                         "torch._inductor.aoti_compile_and_package): ", why));
  };
  auto entries = ListZipEntries(read, size);
  if (!entries.ok()) return bad(entries.status().message());
  AotiPackageInfo info;
  const ZipEntry* metadata = nullptr;
  bool any_model = false;
  for (const ZipEntry& e : *entries) {
    const size_t slash = e.name.find('/');
    if (slash == std::string::npos) continue;
    const absl::string_view rest = absl::string_view(e.name).substr(slash + 1);
    if (!absl::StartsWith(rest, "data/aotinductor/")) continue;
    any_model = true;
    info.archive = e.name.substr(0, slash);
    // data/aotinductor/model/<hash>.wrapper_metadata.json (PyTorch 2.8+), or <hash>_metadata.json.
    const absl::string_view file = rest.substr(std::string_view("data/aotinductor/").size());
    if (absl::StartsWith(file, "model/") && file.find('/', 6) == absl::string_view::npos &&
        absl::EndsWith(file, "metadata.json") && !absl::EndsWith(file, "kernel_metadata.json")) {
      metadata = &e;
    }
  }
  if (!any_model) return bad("it holds no data/aotinductor/ folder");
  if (metadata == nullptr) {
    return bad("it holds no metadata for a model named \"model\" (compile it with the default model name)");
  }
  auto text = ReadStoredZipEntry(read, size, *metadata, kMaxMetadataBytes);
  if (!text.ok()) return bad(text.status().message());
  const nlohmann::json json = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return bad(absl::StrCat(metadata->name, " is not a JSON object"));
  for (const auto& [key, value] : json.items()) {
    if (value.is_string()) info.metadata[key] = value.get<std::string>();
  }
  if (auto it = info.metadata.find("torch_version"); it != info.metadata.end()) info.torch_version = it->second;
  if (auto it = info.metadata.find("AOTI_DEVICE_KEY"); it != info.metadata.end()) info.device = it->second;
  if (info.device != "cpu" && info.device != "cuda") {
    return bad(absl::StrCat("its model's device is \"", info.device, "\" (Kennel serves cpu and cuda packages)"));
  }
  return info;
}

absl::Status CheckAotiTorchVersion(const AotiPackageInfo& info, absl::string_view runtime_torch,
                                   absl::string_view what) {
  if (info.torch_version.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " does not record the PyTorch that compiled it, and a package only loads safely into the same "
              "version: compile it with inductor_configs={\"aot_inductor.metadata\": {\"torch_version\": "
              "torch.__version__}} (README, \"Bring your own model\")"));
  }
  if (Release(info.torch_version) != Release(runtime_torch)) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, " was compiled by PyTorch ", info.torch_version, " but this Kennel runs LibTorch ", runtime_torch,
        ": an AOTInductor package holds native code built against one PyTorch's headers; compile it again with "
        "PyTorch ", Release(runtime_torch)));
  }
  return absl::OkStatus();
}

}  // namespace kennel::core
