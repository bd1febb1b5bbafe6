// The key-value store that bootstraps a collective group (Gloo's rendezvous, NCCL's unique
// id). In a cluster it is the coordinator's store, scoped by job and generation; tests use
// InMemoryKeyValueStore. Implementations are thread-safe.
#ifndef KENNEL_TRAINER_NODE_KV_STORE_H_
#define KENNEL_TRAINER_NODE_KV_STORE_H_

#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kennel::trainer {

class KeyValueStore {
 public:
  virtual ~KeyValueStore() = default;
  virtual absl::Status Set(const std::string& key, const std::string& value) = 0;
  // Blocks until every key is set, up to `timeout`; DEADLINE_EXCEEDED then, naming the keys
  // still missing.
  virtual absl::StatusOr<std::vector<std::string>> Get(const std::vector<std::string>& keys,
                                                       absl::Duration timeout) = 0;
};

class InMemoryKeyValueStore : public KeyValueStore {
 public:
  absl::Status Set(const std::string& key, const std::string& value) override;
  absl::StatusOr<std::vector<std::string>> Get(const std::vector<std::string>& keys,
                                               absl::Duration timeout) override;

 private:
  absl::Mutex mu_;
  std::map<std::string, std::string> values_ ABSL_GUARDED_BY(mu_);
};

// Prefixes every key ("job/<id>/gen/<g>/"), so groups sharing a store never meet.
class PrefixedKeyValueStore : public KeyValueStore {
 public:
  PrefixedKeyValueStore(std::string prefix, KeyValueStore* store)
      : prefix_(std::move(prefix)), store_(store) {}
  absl::Status Set(const std::string& key, const std::string& value) override {
    return store_->Set(prefix_ + key, value);
  }
  absl::StatusOr<std::vector<std::string>> Get(const std::vector<std::string>& keys,
                                               absl::Duration timeout) override;

 private:
  std::string prefix_;
  KeyValueStore* store_;
};

}  // namespace kennel::trainer

#endif  // KENNEL_TRAINER_NODE_KV_STORE_H_
