// The coordinator-backed implementations of the trainer's store interfaces: the rendezvous
// key-value store (scoped to one job generation) and the checkpoint store (the coordinator's
// artifact store, so a replacement trainer on another machine can resume).
#ifndef KENNEL_TRAINER_NODE_COORDINATOR_STORES_H_
#define KENNEL_TRAINER_NODE_COORDINATOR_STORES_H_

#include <string>

#include "kennel/v1/coordinator.grpc.pb.h"
#include "trainer_node/checkpoint.h"
#include "trainer_node/kv_store.h"

namespace kennel::trainer {

class CoordinatorKeyValueStore : public KeyValueStore {
 public:
  CoordinatorKeyValueStore(kennel::v1::Coordinator::StubInterface* stub, std::string job_id,
                           int64_t generation)
      : stub_(stub), job_id_(std::move(job_id)), generation_(generation) {}
  absl::Status Set(const std::string& key, const std::string& value) override;
  // Polls until every key is set; FAILED_PRECONDITION at once when the generation is stale.
  absl::StatusOr<std::vector<std::string>> Get(const std::vector<std::string>& keys,
                                               absl::Duration timeout) override;

 private:
  kennel::v1::Coordinator::StubInterface* stub_;
  std::string job_id_;
  int64_t generation_;
};

class CoordinatorCheckpointStore : public CheckpointStore {
 public:
  // `work_dir`: local scratch space for transfers.
  CoordinatorCheckpointStore(kennel::v1::Coordinator::StubInterface* stub, std::string job_id,
                             int64_t generation, std::string work_dir)
      : stub_(stub), job_id_(std::move(job_id)), generation_(generation), work_dir_(std::move(work_dir)) {}
  absl::Status Save(const std::string& blob, const TrainingPosition& position) override;
  absl::StatusOr<std::optional<std::string>> LoadLatest() override;

 private:
  kennel::v1::Coordinator::StubInterface* stub_;
  std::string job_id_;
  int64_t generation_;
  std::string work_dir_;
};

}  // namespace kennel::trainer

#endif  // KENNEL_TRAINER_NODE_COORDINATOR_STORES_H_
