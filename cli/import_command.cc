#include "cli/import_command.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "cli/client.h"
#include "core/dataset_index.h"
#include "core/file_type.h"
#include "core/files.h"
#include "core/model_spec.h"
#include "core/status_macros.h"

namespace kennel::cli {
namespace fs = std::filesystem;

absl::StatusOr<std::vector<std::string>> ClassNamesFromFlags(const ImportFlags& f) {
  const int given = !f.classes.empty() + !f.classes_file.empty() + !f.classes_from.empty();
  if (given != 1) {
    return absl::InvalidArgumentError(
        "name the classes once: --classes a,b,c, --classes-file FILE (one per line) or "
        "--classes-from DATASET (a dogImages-style folder)");
  }
  if (!f.classes.empty()) return f.classes;
  if (!f.classes_from.empty()) {
    // The labels training on that folder would use: class folders ordered by their number.
    for (const char* split : {"train", "valid", "test"}) {
      std::error_code ec;
      if (!fs::is_directory(fs::path(f.classes_from) / split, ec)) continue;
      ASSIGN_OR_RETURN(auto index, core::IndexImageFolder(f.classes_from, split));
      return std::vector<std::string>(index.class_names().begin(), index.class_names().end());
    }
    return absl::NotFoundError(absl::StrCat(f.classes_from, " has no train/, valid/ or test/ folder of classes"));
  }
  ASSIGN_OR_RETURN(std::string text, core::ReadFile(f.classes_file, 16 << 20));
  std::vector<std::string> names;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (!line.empty()) names.emplace_back(line);
  }
  if (names.empty()) return absl::InvalidArgumentError(absl::StrCat(f.classes_file, " lists no class names"));
  return names;
}

absl::StatusOr<kennel::v1::ModelSpec> ModelSpecFromFlags(const ImportFlags& f) {
  kennel::v1::ModelSpec model;
  const core::FileType type = core::DetectFileTypeOfPath(f.weights);
  if (type == core::FileType::kTorchScript || type == core::FileType::kAotiPackage) {
    if (!f.arch.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(f.weights, " is ", core::DescribeFileType(type),
                                                     ", which carries its own architecture: drop --arch ", f.arch));
    }
    model.set_architecture(type == core::FileType::kTorchScript ? kennel::v1::TORCHSCRIPT : kennel::v1::AOTINDUCTOR);
    model.set_in_channels(f.in_channels > 0 ? f.in_channels : 3);
    model.set_num_classes(1);
    return core::NormalizeModelSpec(model);
  }
  if (f.output_kind != "logits") {
    return absl::InvalidArgumentError(
        "--output-kind applies to TorchScript and AOTInductor models; built-in architectures output logits");
  }
  if (f.arch.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--arch is required for weights (", f.weights,
        " is neither a TorchScript archive nor an AOTInductor package): small_cnn, resnet18, resnet34 or resnet50"));
  }
  ASSIGN_OR_RETURN(auto arch, core::ParseArchitecture(f.arch));
  model.set_architecture(arch);
  model.set_head(f.head == "mlp" ? kennel::v1::MLP : kennel::v1::LINEAR);
  if (f.head == "mlp") model.set_head_hidden(f.head_hidden);
  model.set_in_channels(f.in_channels > 0 ? f.in_channels : (arch == kennel::v1::SMALL_CNN ? 1 : 3));
  model.set_num_classes(1);  // Checked here without the class list; the import sets it.
  ASSIGN_OR_RETURN(model, core::NormalizeModelSpec(model));
  return model;
}

absl::StatusOr<kennel::v1::PreprocessSpec> PreprocessFromFlags(const ImportFlags& f,
                                                              const kennel::v1::ModelSpec& model) {
  kennel::v1::PreprocessSpec pre = core::DefaultPreprocess(model.architecture(), f.image_size);
  pre.set_channels(model.in_channels());
  if (f.resize_shorter >= 0) pre.set_resize_shorter(f.resize_shorter);
  if (!f.mean.empty()) {
    pre.clear_mean();
    for (float v : f.mean) pre.add_mean(v);
  } else if (pre.mean_size() != pre.channels()) {
    pre.mutable_mean()->Resize(pre.channels(), pre.mean(0));
  }
  if (!f.std.empty()) {
    pre.clear_std();
    for (float v : f.std) pre.add_std(v);
  } else if (pre.std_size() != pre.channels()) {
    pre.mutable_std()->Resize(pre.channels(), pre.std(0));
  }
  const std::string interpolation = absl::AsciiStrToLower(f.interpolation);
  pre.set_interpolation(interpolation == "nearest" ? kennel::v1::NEAREST
                        : interpolation == "area"  ? kennel::v1::AREA
                        : interpolation == "bicubic" ? kennel::v1::BICUBIC
                                                     : kennel::v1::BILINEAR);
  return core::NormalizePreprocessSpec(pre);
}

void AddImportCommand(CLI::App& app, GlobalOptions& global, ImportRunner run) {
  auto f = std::make_shared<ImportFlags>();
  CLI::App* cmd = app.add_subcommand(
      "import",
      "Turn a model trained elsewhere into a Kennel model artifact: weights for a built-in "
      "architecture (a torchvision torch.save(model.state_dict()) .pth file or a .safetensors "
      "file, with --arch and --head: every tensor's name, shape and dtype is checked, all "
      "mismatches listed), or any model as a TorchScript archive (torch.jit.script or trace, "
      "saved with torch.jit.save; run once on a batch of two at the input size, its output "
      "checked against the class names), or an AOTInductor package (.pt2 from "
      "torch._inductor.aoti_compile_and_package with a dynamic batch dimension and the metadata "
      "torch_version; PyTorch 2.x build only, the same PyTorch release as compiled it). "
      "TorchScript archives and packages are code: registering one needs the admin role. --register adds it to the coordinator as a model version that `kennelctl "
      "deploy` rolls out.");
  cmd->add_option("weights", f->weights,
                  ".pth (torch.save state_dict) or .safetensors weights, a TorchScript archive (.pt) or an "
                  "AOTInductor package (.pt2)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--name", f->name, "Model name (letters, digits, '-', '_', '.')")->required();
  cmd->add_option("--arch", f->arch, "small_cnn, resnet18, resnet34 or resnet50 (weights only; not for TorchScript or .pt2)")
      ->check(CLI::IsMember({"small_cnn", "resnet18", "resnet34", "resnet50"}, CLI::ignore_case));
  cmd->add_option("--output-kind", f->output_kind, "What a TorchScript or AOTInductor model returns: logits (softmax applied when "
                                              "serving) or probabilities (served as they are)")
      ->check(CLI::IsMember({"logits", "probabilities"}))
      ->capture_default_str();
  cmd->add_option("--head", f->head, "linear (torchvision's fc) or mlp (fc.0 Linear, ReLU, fc.2 Linear)")
      ->check(CLI::IsMember({"linear", "mlp"}))
      ->capture_default_str();
  cmd->add_option("--head-hidden", f->head_hidden, "Hidden width of the MLP head")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--classes", f->classes, "Class names in output order, comma-separated")->delimiter(',');
  cmd->add_option("--classes-file", f->classes_file, "File with one class name per line, in output order")
      ->check(CLI::ExistingFile);
  cmd->add_option("--classes-from", f->classes_from,
                  "A dogImages-style dataset folder: its class folders in Kennel's label order")
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--in-channels", f->in_channels, "1 (grayscale) or 3 (RGB); default by architecture")
      ->check(CLI::IsMember({1, 3}));
  cmd->add_option("--image-size,--input-size", f->image_size, "Input height and width (default 28 / 224)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--resize-shorter", f->resize_shorter,
                  "Resize the shorter side to this before the center crop (0: resize straight to "
                  "the input size; default 8/7 of the input size for ResNets)")
      ->check(CLI::Range(0, 8192));
  cmd->add_option("--mean", f->mean, "Per-channel mean of [0,1] pixels (default ImageNet's)")->expected(1, 3);
  cmd->add_option("--std", f->std, "Per-channel std (default ImageNet's)")->expected(1, 3);
  cmd->add_option("--interpolation", f->interpolation, "bilinear, nearest, area or bicubic")
      ->check(CLI::IsMember({"bilinear", "nearest", "area", "bicubic"}))
      ->capture_default_str();
  cmd->add_option("--artifact", f->output, "Artifact folder to create (default with --register: a temporary one)");
  cmd->add_flag("--register", f->register_model, "Register the artifact with the coordinator (-c) as a new model version");
  cmd->callback([f, &global, run] {
    if (f->output.empty() && !f->register_model) {
      throw CLI::RuntimeError(Fail(absl::InvalidArgumentError("give --artifact DIR, --register, or both")));
    }
    absl::Status checked = ClassNamesFromFlags(*f).status();
    if (checked.ok()) checked = core::ValidateModelName(f->name);
    absl::StatusOr<kennel::v1::ModelSpec> model = ModelSpecFromFlags(*f);
    if (checked.ok()) checked = model.status();
    if (checked.ok()) checked = PreprocessFromFlags(*f, *model).status();
    if (!checked.ok()) throw CLI::RuntimeError(Fail(checked));
    throw CLI::RuntimeError(run(*f, global));
  });
}

ImportRunner RunImportHelper(int argc, char** argv) {
  return [argc, argv](const ImportFlags&, const GlobalOptions&) -> int {
    auto helper = FindKennelBinary("kennelctl-import", "cli");
    if (!helper.ok()) return Fail(helper.status());
    std::vector<char*> args(argv, argv + argc);
    args[0] = helper->data();
    args.push_back(nullptr);
    ::execv(helper->c_str(), args.data());
    return Fail(absl::InternalError(absl::StrCat("cannot run ", *helper, ": ", std::strerror(errno))));
  };
}

}  // namespace kennel::cli
