#include "coordinator/rendezvous.h"

#include "absl/strings/str_cat.h"

namespace kennel::coordinator {

void Rendezvous::Open(const std::string& job_id, int64_t generation) {
  absl::MutexLock lock(&mu_);
  Space& space = spaces_[job_id];
  space.generation = generation;
  space.open = true;
  space.kv.clear();
}

void Rendezvous::Close(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto it = spaces_.find(job_id);
  if (it == spaces_.end()) return;
  it->second.open = false;
  it->second.kv.clear();
}

absl::StatusOr<Rendezvous::Space*> Rendezvous::Current(const std::string& job_id, int64_t generation) {
  auto it = spaces_.find(job_id);
  if (it == spaces_.end()) return absl::NotFoundError(absl::StrCat("no running job ", job_id));
  Space& space = it->second;
  if (!space.open || space.generation != generation) {
    return absl::FailedPreconditionError(absl::StrCat(
        "generation ", generation, " of job ", job_id, " is not current (",
        space.open ? absl::StrCat("generation ", space.generation, " runs") : "no generation runs", ")"));
  }
  return &space;
}

absl::Status Rendezvous::Set(const std::string& job_id, int64_t generation, const std::string& key,
                             const std::string& value) {
  if (key.empty() || key.size() > 1024 || value.size() > (1 << 20)) {
    return absl::InvalidArgumentError("store keys are 1..1024 bytes, values at most 1 MiB");
  }
  absl::MutexLock lock(&mu_);
  auto space = Current(job_id, generation);
  if (!space.ok()) return space.status();
  (*space)->kv[key] = value;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> Rendezvous::Get(const std::string& job_id, int64_t generation,
                                                         const std::vector<std::string>& keys) {
  absl::MutexLock lock(&mu_);
  auto space = Current(job_id, generation);
  if (!space.ok()) return space.status();
  std::vector<std::string> out;
  out.reserve(keys.size());
  for (const auto& k : keys) {
    auto it = (*space)->kv.find(k);
    if (it == (*space)->kv.end()) return absl::NotFoundError(absl::StrCat("key ", k, " not set"));
    out.push_back(it->second);
  }
  return out;
}

}  // namespace kennel::coordinator
