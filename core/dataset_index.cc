#include "core/dataset_index.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <map>
#include <set>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/files.h"
#include "core/image_probe.h"
#include "core/status_macros.h"

namespace kennel::core {
namespace fs = std::filesystem;
using kennel::v1::DatasetIndex;

namespace {

constexpr int kMaxSkippedExamples = 10;
constexpr const char* kFashionMnistClasses[] = {"T-shirt/top", "Trouser", "Pullover", "Dress",
                                                "Coat",        "Sandal",  "Shirt",    "Sneaker",
                                                "Bag",         "Ankle boot"};

// A class folder "NNN.Breed_Name": numeric order and display name.
struct ClassFolder {
  long number = -1;  // -1 when the folder has no numeric prefix.
  std::string folder;
  std::string name;
};

ClassFolder ParseClassFolder(const std::string& folder) {
  ClassFolder out{-1, folder, folder};
  const size_t dot = folder.find('.');
  if (dot != std::string::npos && dot > 0) {
    long number = 0;
    auto [end, ec] = std::from_chars(folder.data(), folder.data() + dot, number);
    if (ec == std::errc() && end == folder.data() + dot && dot + 1 < folder.size()) {
      out.number = number;
      out.name = absl::StrReplaceAll(folder.substr(dot + 1), {{"_", " "}});
    }
  }
  return out;
}

// Reads a whole file through zlib, which passes uncompressed files through unchanged.
// At most `limit` bytes are read.
absl::StatusOr<std::string> ReadMaybeGzip(const std::string& path, size_t limit) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::string out;
  char buf[1 << 16];
  int n = 0;
  while (out.size() < limit &&
         (n = gzread(f, buf, static_cast<unsigned>(std::min(sizeof(buf), limit - out.size())))) > 0) {
    out.append(buf, static_cast<size_t>(n));
  }
  int err = 0;
  const char* msg = gzerror(f, &err);
  const bool failed = n < 0 || (err != Z_OK && err != Z_STREAM_END);
  std::string detail = failed ? msg : "";
  gzclose(f);
  if (failed) return absl::InvalidArgumentError(absl::StrCat(path, ": ", detail));
  return out;
}

uint32_t Be32(const std::string& b, size_t at) {
  return (uint32_t{static_cast<uint8_t>(b[at])} << 24) |
         (uint32_t{static_cast<uint8_t>(b[at + 1])} << 16) |
         (uint32_t{static_cast<uint8_t>(b[at + 2])} << 8) | static_cast<uint8_t>(b[at + 3]);
}

// An IDX file of unsigned bytes: magic 0x0000 08 <ndims>, ndims big-endian sizes, data.
struct IdxArray {
  std::vector<uint32_t> dims;
  std::string data;  // Whole file; payload starts at `offset`.
  size_t offset = 0;
};

// With header_only, `data` holds just the header and the payload size is not checked.
absl::StatusOr<IdxArray> ReadIdxArray(const std::string& path, int want_dims, bool header_only = false) {
  const size_t header_bytes = 4 + 4 * static_cast<size_t>(want_dims);
  ASSIGN_OR_RETURN(std::string bytes, ReadMaybeGzip(path, header_only ? header_bytes : SIZE_MAX));
  if (bytes.size() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 ||
      bytes[3] != want_dims) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not an IDX file of unsigned bytes with ", want_dims, " dims"));
  }
  IdxArray out;
  out.offset = header_bytes;
  if (bytes.size() < out.offset) return absl::InvalidArgumentError(absl::StrCat(path, ": truncated"));
  uint64_t total = 1;
  for (int d = 0; d < want_dims; ++d) {
    out.dims.push_back(Be32(bytes, 4 + 4 * d));
    total *= out.dims.back();
  }
  if (!header_only && bytes.size() - out.offset != total) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": holds ", bytes.size() - out.offset,
                                                   " data bytes, its header says ", total));
  }
  out.data = std::move(bytes);
  return out;
}

// "name" or "name.gz", whichever exists.
absl::StatusOr<std::string> FindIdx(const std::string& root, const std::string& name) {
  for (const std::string& candidate : {name + ".gz", name}) {
    if (fs::exists(fs::path(root) / candidate)) return candidate;
  }
  return absl::NotFoundError(absl::StrCat("neither ", name, " nor ", name, ".gz in ", root));
}

}  // namespace

bool HasImageExtension(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

void Fingerprint(DatasetIndex& index) {
  std::string buf = absl::StrCat(static_cast<int>(index.format()), "\n");
  for (const auto& name : index.class_names()) absl::StrAppend(&buf, name, "\n");
  for (const auto& s : index.samples()) absl::StrAppend(&buf, s.location(), "\t", s.label(), "\n");
  index.set_fingerprint(Sha256Hex(buf));
}

absl::StatusOr<DatasetIndex> IndexImageFolder(const std::string& root, const std::string& split) {
  std::error_code ec;
  const fs::path split_dir = fs::path(root) / split;
  if (!fs::is_directory(split_dir, ec)) {
    return absl::NotFoundError(absl::StrCat("dataset split folder ", split_dir.string(),
                                            " does not exist (expected <root>/", split,
                                            "/NNN.Class_Name/*.jpg)"));
  }
  // Class folders across every split, so train/valid/test agree on labels.
  std::map<std::string, ClassFolder> folders;
  for (const char* s : {"train", "valid", "test"}) {
    const fs::path dir = fs::path(root) / s;
    if (!fs::is_directory(dir, ec)) continue;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      if (entry.is_directory(ec)) {
        const std::string name = entry.path().filename().string();
        folders.emplace(name, ParseClassFolder(name));
      }
    }
  }
  std::vector<ClassFolder> classes;
  for (auto& [name, folder] : folders) classes.push_back(folder);
  const bool numbered = std::all_of(classes.begin(), classes.end(),
                                    [](const ClassFolder& c) { return c.number >= 0; });
  std::sort(classes.begin(), classes.end(), [&](const ClassFolder& a, const ClassFolder& b) {
    if (numbered && a.number != b.number) return a.number < b.number;
    return a.folder < b.folder;
  });
  if (classes.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no class folders under ", root, " (expected <split>/NNN.Class_Name/)"));
  }

  DatasetIndex index;
  index.set_format(DatasetIndex::IMAGE_FOLDER);
  index.set_name(absl::StrCat(fs::path(root).filename().string(), "/", split));
  for (size_t label = 0; label < classes.size(); ++label) {
    index.add_class_names(numbered ? classes[label].name : classes[label].folder);
    const fs::path class_dir = split_dir / classes[label].folder;
    if (!fs::is_directory(class_dir, ec)) continue;
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(class_dir, ec)) {
      if (entry.is_regular_file(ec)) files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
      const std::string rel = fs::relative(file, root, ec).string();
      absl::Status status;
      if (!HasImageExtension(file.string())) {
        status = absl::InvalidArgumentError("not a .jpg/.jpeg/.png file");
      } else {
        auto head = ReadFilePrefix(file.string(), 1 << 16);
        status = head.ok() ? ProbeImage(*head).status() : head.status();
        if (status.ok() && fs::file_size(file, ec) == 0) status = absl::InvalidArgumentError("empty");
      }
      if (!status.ok()) {
        index.set_skipped(index.skipped() + 1);
        if (index.skipped_examples_size() < kMaxSkippedExamples) {
          index.add_skipped_examples(absl::StrCat(rel, ": ", status.message()));
        }
        continue;
      }
      auto* sample = index.add_samples();
      sample->set_location(rel);
      sample->set_label(static_cast<int32_t>(label));
    }
  }
  if (index.samples_size() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("no readable images in ", split_dir.string(), " (", index.skipped(), " skipped)"));
  }
  Fingerprint(index);
  return index;
}

absl::StatusOr<DatasetIndex> IndexFashionMnist(const std::string& root, const std::string& split) {
  if (split != "train" && split != "test") {
    return absl::InvalidArgumentError(
        absl::StrCat("Fashion-MNIST has splits 'train' and 'test', not '", split, "'"));
  }
  const std::string prefix = split == "train" ? "train" : "t10k";
  ASSIGN_OR_RETURN(std::string images, FindIdx(root, prefix + "-images-idx3-ubyte"));
  ASSIGN_OR_RETURN(std::string labels_file, FindIdx(root, prefix + "-labels-idx1-ubyte"));
  ASSIGN_OR_RETURN(IdxArray labels, ReadIdxArray((fs::path(root) / labels_file).string(), 1));
  // Only the header of the image file is needed to check the count.
  ASSIGN_OR_RETURN(IdxArray pixels, ReadIdxArray((fs::path(root) / images).string(), 3, true));
  if (pixels.dims[0] != labels.dims[0]) {
    return absl::InvalidArgumentError(absl::StrCat(images, " holds ", pixels.dims[0],
                                                   " images but ", labels_file, " ",
                                                   labels.dims[0], " labels"));
  }
  DatasetIndex index;
  index.set_format(DatasetIndex::IDX);
  index.set_name(absl::StrCat(fs::path(root).filename().string(), "/", split));
  for (const char* name : kFashionMnistClasses) index.add_class_names(name);
  index.mutable_samples()->Reserve(static_cast<int>(labels.dims[0]));
  for (uint32_t i = 0; i < labels.dims[0]; ++i) {
    const int label = static_cast<uint8_t>(labels.data[labels.offset + i]);
    if (label >= index.class_names_size()) {
      return absl::InvalidArgumentError(absl::StrCat(labels_file, ": label ", label,
                                                     " of sample ", i, " is out of range"));
    }
    auto* sample = index.add_samples();
    sample->set_location(absl::StrCat(images, "#", i));
    sample->set_label(label);
  }
  Fingerprint(index);
  return index;
}

absl::StatusOr<IdxImages> IdxImages::Read(const std::string& path) {
  ASSIGN_OR_RETURN(IdxArray array, ReadIdxArray(path, 3));
  IdxImages out;
  out.count_ = array.dims[0];
  out.rows_ = static_cast<int>(array.dims[1]);
  out.cols_ = static_cast<int>(array.dims[2]);
  out.offset_ = array.offset;
  out.data_ = std::move(array.data);
  return out;
}

}  // namespace kennel::core
