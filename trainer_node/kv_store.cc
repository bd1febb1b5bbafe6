#include "trainer_node/kv_store.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kennel::trainer {

absl::Status InMemoryKeyValueStore::Set(const std::string& key, const std::string& value) {
  absl::MutexLock lock(&mu_);
  values_[key] = value;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> InMemoryKeyValueStore::Get(
    const std::vector<std::string>& keys, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto all_set = [&] {
    for (const auto& k : keys) {
      if (!values_.contains(k)) return false;
    }
    return true;
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&all_set), timeout)) {
    std::vector<std::string> missing;
    for (const auto& k : keys) {
      if (!values_.contains(k)) missing.push_back(k);
    }
    return absl::DeadlineExceededError(
        absl::StrCat("store keys not set in time: ", absl::StrJoin(missing, ", ")));
  }
  std::vector<std::string> out;
  for (const auto& k : keys) out.push_back(values_[k]);
  return out;
}

absl::StatusOr<std::vector<std::string>> PrefixedKeyValueStore::Get(
    const std::vector<std::string>& keys, absl::Duration timeout) {
  std::vector<std::string> full;
  for (const auto& k : keys) full.push_back(prefix_ + k);
  return store_->Get(full, timeout);
}

}  // namespace kennel::trainer
