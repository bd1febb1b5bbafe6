#include "core/model_spec.h"

#include <algorithm>
#include <cctype>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace kennel::core {

std::optional<ModelRef> ParseModelRef(absl::string_view text) {
  const size_t colon = text.rfind(':');
  ModelRef ref;
  if (colon == absl::string_view::npos || colon == 0 || !absl::SimpleAtoi(text.substr(colon + 1), &ref.version) ||
      ref.version < 1) {
    return std::nullopt;
  }
  ref.name = std::string(text.substr(0, colon));
  return ref;
}

absl::Status ValidateModelName(absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("a model name is required");
  if (name.size() > 128) return absl::InvalidArgumentError("a model name has at most 128 characters");
  if (name == "." || name == "..") return absl::InvalidArgumentError("a model name cannot be '.' or '..'");
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      return absl::InvalidArgumentError(absl::StrCat(
          "model name '", name, "' may hold only letters, digits, '-', '_' and '.'"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<kennel::v1::ModelSpec> NormalizeModelSpec(kennel::v1::ModelSpec spec) {
  if (spec.architecture() == kennel::v1::ARCHITECTURE_UNSPECIFIED ||
      !kennel::v1::Architecture_IsValid(spec.architecture())) {
    return absl::InvalidArgumentError("model architecture is not set");
  }
  if (spec.num_classes() < 1 || spec.num_classes() > 1'000'000) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_classes must be in [1, 1000000], got ", spec.num_classes()));
  }
  if (spec.in_channels() == 0) spec.set_in_channels(3);
  if (spec.in_channels() != 1 && spec.in_channels() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("in_channels must be 1 or 3, got ", spec.in_channels()));
  }
  if (IsUserCode(spec.architecture())) {
    // The module is what it is: no head to choose.
    if (spec.head() == kennel::v1::MLP) {
      return absl::InvalidArgumentError(absl::StrCat("a ", ArchitectureName(spec.architecture()),
                                                     " model has no head to choose (--head applies to built-in architectures)"));
    }
    spec.set_head(kennel::v1::HEAD_UNSPECIFIED);
    spec.set_head_hidden(0);
    return spec;
  }
  if (spec.head() == kennel::v1::HEAD_UNSPECIFIED) spec.set_head(kennel::v1::LINEAR);
  if (spec.head() == kennel::v1::MLP) {
    if (spec.architecture() == kennel::v1::SMALL_CNN) {
      return absl::InvalidArgumentError("the small CNN supports only the linear head");
    }
    if (spec.head_hidden() == 0) spec.set_head_hidden(128);
    if (spec.head_hidden() < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("head_hidden must be positive, got ", spec.head_hidden()));
    }
  } else {
    spec.set_head_hidden(0);
  }
  return spec;
}

absl::StatusOr<kennel::v1::Architecture> ParseArchitecture(absl::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  if (lower == "small_cnn" || lower == "small-cnn") return kennel::v1::SMALL_CNN;
  if (lower == "resnet18") return kennel::v1::RESNET18;
  if (lower == "resnet34") return kennel::v1::RESNET34;
  if (lower == "resnet50") return kennel::v1::RESNET50;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown architecture '", name, "' (expected small_cnn, resnet18, resnet34, resnet50)"));
}

std::string ArchitectureName(kennel::v1::Architecture arch) {
  switch (arch) {
    case kennel::v1::SMALL_CNN: return "small_cnn";
    case kennel::v1::RESNET18: return "resnet18";
    case kennel::v1::RESNET34: return "resnet34";
    case kennel::v1::RESNET50: return "resnet50";
    case kennel::v1::TORCHSCRIPT: return "torchscript";
    case kennel::v1::AOTINDUCTOR: return "aotinductor";
    default: return "unspecified";
  }
}

bool IsUserCode(kennel::v1::Architecture arch) {
  return arch == kennel::v1::TORCHSCRIPT || arch == kennel::v1::AOTINDUCTOR;
}

int64_t FeatureWidth(kennel::v1::Architecture arch) {
  switch (arch) {
    case kennel::v1::SMALL_CNN: return 128;
    case kennel::v1::RESNET50: return 2048;
    default: return 512;
  }
}

absl::StatusOr<kennel::v1::PreprocessSpec> NormalizePreprocessSpec(
    kennel::v1::PreprocessSpec spec) {
  if (spec.channels() == 0) spec.set_channels(3);
  if (spec.channels() != 1 && spec.channels() != 3) {
    return absl::InvalidArgumentError(absl::StrCat("preprocess channels must be 1 or 3, got ", spec.channels()));
  }
  if (spec.height() < 1 || spec.width() < 1 || spec.height() > 4096 || spec.width() > 4096) {
    return absl::InvalidArgumentError(absl::StrCat("preprocess size must be in [1, 4096], got ", spec.height(), "x",
                                spec.width()));
  }
  if (spec.resize_shorter() != 0 &&
      spec.resize_shorter() < std::max(spec.height(), spec.width())) {
    return absl::InvalidArgumentError(absl::StrCat("resize_shorter (", spec.resize_shorter(),
                                ") is smaller than the crop ", spec.height(), "x", spec.width()));
  }
  if (spec.interpolation() == kennel::v1::INTERPOLATION_UNSPECIFIED) {
    spec.set_interpolation(kennel::v1::BILINEAR);
  }
  if (spec.mean().empty()) spec.mutable_mean()->Resize(spec.channels(), 0.0f);
  if (spec.std().empty()) spec.mutable_std()->Resize(spec.channels(), 1.0f);
  if (spec.mean_size() != spec.channels() || spec.std_size() != spec.channels()) {
    return absl::InvalidArgumentError(absl::StrCat("preprocess mean and std need ", spec.channels(), " values each"));
  }
  for (float s : spec.std()) {
    if (!(s > 0)) return absl::InvalidArgumentError("preprocess std values must be positive");
  }
  return spec;
}

kennel::v1::PreprocessSpec DefaultPreprocess(kennel::v1::Architecture arch, int image_size) {
  kennel::v1::PreprocessSpec pre;
  const bool small = arch == kennel::v1::SMALL_CNN;
  const int size = image_size > 0 ? image_size : (small ? 28 : 224);
  pre.set_height(size);
  pre.set_width(size);
  pre.set_resize_shorter(small ? 0 : size * 8 / 7);
  pre.set_channels(small ? 1 : 3);
  pre.set_interpolation(kennel::v1::BILINEAR);
  if (small) {
    pre.add_mean(0.2860f);
    pre.add_std(0.3530f);
  } else {
    for (float v : {0.485f, 0.456f, 0.406f}) pre.add_mean(v);
    for (float v : {0.229f, 0.224f, 0.225f}) pre.add_std(v);
  }
  return pre;
}

int64_t PreprocessedSize(const kennel::v1::PreprocessSpec& spec) {
  return int64_t{spec.channels()} * spec.height() * spec.width();
}

int DecodeHint(const kennel::v1::PreprocessSpec& spec) {
  return spec.resize_shorter() > 0 ? spec.resize_shorter()
                                   : std::max(spec.height(), spec.width());
}

}  // namespace kennel::core
