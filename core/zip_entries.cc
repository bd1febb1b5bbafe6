#include "core/zip_entries.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/byte_order.h"

namespace kennel::core {

ZipRead ZipReadFromBytes(absl::string_view bytes) {
  return [bytes](uint64_t offset, uint64_t len, std::string* out) {
    if (offset > bytes.size() || len > bytes.size() - offset) return false;
    out->assign(bytes.data() + offset, len);
    return true;
  };
}

ZipRead ZipReadFromStream(std::istream& in) {
  return [&in](uint64_t offset, uint64_t len, std::string* out) {
    out->resize(len);
    in.clear();
    in.seekg(static_cast<std::streamoff>(offset));
    return static_cast<bool>(in.read(out->data(), static_cast<std::streamsize>(len)));
  };
}

absl::StatusOr<std::vector<ZipEntry>> ListZipEntries(const ZipRead& read, uint64_t size) {
  const auto bad = [](absl::string_view why) { return absl::InvalidArgumentError(std::string(why)); };
  constexpr uint64_t kEocd = 22, kMaxComment = 65535;
  if (size < kEocd) return bad("too short");
  const uint64_t tail_at = size > kEocd + kMaxComment ? size - kEocd - kMaxComment : 0;
  std::string tail;
  if (!read(tail_at, size - tail_at, &tail)) return bad("cannot read its end");
  const size_t eocd = tail.rfind(std::string("PK\x05\x06", 4));
  if (eocd == std::string::npos || eocd + kEocd > tail.size()) return bad("no end of central directory");
  uint64_t entries = LoadLittleEndian(tail, eocd + 10, 2), cd_size = LoadLittleEndian(tail, eocd + 12, 4),
           cd_offset = LoadLittleEndian(tail, eocd + 16, 4);
  if (entries == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {  // ZIP64.
    if (eocd < 20 || tail.compare(eocd - 20, 4, std::string("PK\x06\x07", 4)) != 0) return bad("no ZIP64 locator");
    const uint64_t record = LoadLittleEndian(tail, eocd - 20 + 8, 8);
    std::string z;
    if (record > size || size - record < 56 || !read(record, 56, &z) ||
        z.compare(0, 4, std::string("PK\x06\x06", 4)) != 0) {
      return bad("no ZIP64 end of central directory");
    }
    entries = LoadLittleEndian(z, 32, 8);
    cd_size = LoadLittleEndian(z, 40, 8);
    cd_offset = LoadLittleEndian(z, 48, 8);
  }
  if (cd_offset > size || cd_size > size - cd_offset) return bad("its central directory lies outside it");
  // Each entry takes at least 46 bytes of the directory: a count beyond that is a lie.
  if (entries > cd_size / 46) return bad("a truncated central directory");
  std::string cd;
  if (!read(cd_offset, cd_size, &cd)) return bad("cannot read its central directory");
  std::vector<ZipEntry> out;
  out.reserve(entries);
  size_t at = 0;
  for (uint64_t e = 0; e < entries; ++e) {
    if (cd.size() - at < 46 || cd.compare(at, 4, std::string("PK\x01\x02", 4)) != 0) {
      return bad("a truncated central directory");
    }
    ZipEntry entry;
    entry.method = static_cast<uint16_t>(LoadLittleEndian(cd, at + 10, 2));
    entry.compressed = LoadLittleEndian(cd, at + 20, 4);
    entry.uncompressed = LoadLittleEndian(cd, at + 24, 4);
    entry.local_header = LoadLittleEndian(cd, at + 42, 4);
    const size_t name_len = LoadLittleEndian(cd, at + 28, 2), extra_len = LoadLittleEndian(cd, at + 30, 2),
                 comment_len = LoadLittleEndian(cd, at + 32, 2);
    if (cd.size() - at - 46 < name_len + extra_len + comment_len) return bad("a truncated central directory");
    entry.name = cd.substr(at + 46, name_len);
    // ZIP64 values: the 0x0001 extra field holds those whose 32-bit field is 0xFFFFFFFF, in order.
    size_t x = at + 46 + name_len;
    const size_t x_end = x + extra_len;
    while (x + 4 <= x_end) {
      const uint64_t id = LoadLittleEndian(cd, x, 2), len = LoadLittleEndian(cd, x + 2, 2);
      if (x + 4 + len > x_end) return bad("a truncated extra field");
      if (id == 1) {
        size_t f = x + 4;
        const size_t f_end = x + 4 + len;
        for (uint64_t* v : {&entry.uncompressed, &entry.compressed, &entry.local_header}) {
          if (*v == 0xFFFFFFFF && f + 8 <= f_end) {
            *v = LoadLittleEndian(cd, f, 8);
            f += 8;
          }
        }
      }
      x += 4 + len;
    }
    if (entry.uncompressed > size || entry.compressed > size) {
      return bad(absl::StrCat("record ", entry.name, " declares ", std::max(entry.uncompressed, entry.compressed),
                              " bytes, more than the whole file (", size, ")"));
    }
    if (entry.local_header > size) return bad(absl::StrCat("record ", entry.name, " starts beyond the end"));
    out.push_back(std::move(entry));
    at += 46 + name_len + extra_len + comment_len;
  }
  return out;
}

absl::StatusOr<std::string> ReadStoredZipEntry(const ZipRead& read, uint64_t size, const ZipEntry& entry,
                                               uint64_t limit) {
  if (entry.method != 0) {
    return absl::InvalidArgumentError(absl::StrCat("record ", entry.name, " is compressed (method ", entry.method,
                                                   "); PyTorch stores its records uncompressed"));
  }
  if (entry.uncompressed > limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("record ", entry.name, " is ", entry.uncompressed, " bytes, more than the ", limit, " expected"));
  }
  std::string header;
  if (entry.local_header > size || size - entry.local_header < 30 || !read(entry.local_header, 30, &header) ||
      header.compare(0, 4, std::string("PK\x03\x04", 4)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("record ", entry.name, " has no local header where it should"));
  }
  const uint64_t data = entry.local_header + 30 + LoadLittleEndian(header, 26, 2) + LoadLittleEndian(header, 28, 2);
  std::string out;
  if (data > size || entry.uncompressed > size - data || !read(data, entry.uncompressed, &out)) {
    return absl::InvalidArgumentError(absl::StrCat("record ", entry.name, " runs past the end of the archive"));
  }
  return out;
}

}  // namespace kennel::core
