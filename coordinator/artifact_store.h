// The coordinator's artifact store on local disk:
//   <root>/models/<name>/<version>/{manifest.json, weights.safetensors}
//   <root>/checkpoints/<job id>/checkpoint.bin        (the newest checkpoint of a job)
//   <root>/staging/                                    (uploads in flight)
// Uploads land in staging and are verified before an atomic rename makes them visible;
// model versions are registered in the StateStore. Thread-safe.
#ifndef KENNEL_COORDINATOR_ARTIFACT_STORE_H_
#define KENNEL_COORDINATOR_ARTIFACT_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/state_store.h"
#include "core/member/artifact_transfer.h"
#include "kennel/v1/admin.pb.h"
#include "kennel/v1/artifact.pb.h"

namespace kennel::coordinator {

class ArtifactStore {
 public:
  static absl::StatusOr<std::unique_ptr<ArtifactStore>> Create(std::string root, StateStore* state);

  // A receiver writing into a fresh staging folder.
  std::unique_ptr<core::FolderReceiver> NewReceiver(int64_t max_bytes);

  // Verifies a received model (a loadable artifact), assigns the next version of its name,
  // records `job_id` and makes it visible. Removes the staging folder either way.
  absl::StatusOr<kennel::v1::ModelVersion> CommitModel(const std::string& staging_dir,
                                                       const std::string& job_id);
  // Registers a copy of model `source` (name and version) as the next version of `name`, its
  // manifest's lineage extended by `lineage`'s tuning fields (the weights are hard-linked, so
  // the copy costs no space where the file system allows it). `job_id` is recorded.
  absl::StatusOr<kennel::v1::ModelVersion> PublishModel(const std::string& source_name, int64_t source_version,
                                                        const std::string& name,
                                                        const kennel::v1::Lineage& lineage,
                                                        const std::string& job_id);
  // Makes a received checkpoint (checkpoint.bin) the job's newest, atomically.
  absl::Status CommitCheckpoint(const std::string& staging_dir, const std::string& job_id);
  void Discard(const std::string& staging_dir);

  bool HasCheckpoint(const std::string& job_id) const;
  // Removes the job's checkpoints (a job that succeeded or was cancelled needs none); the
  // bytes freed, 0 when it had none.
  absl::StatusOr<int64_t> DeleteCheckpoint(const std::string& job_id);

  // The folder and file names behind a reference (model version 0: the newest).
  absl::StatusOr<std::pair<std::string, std::vector<std::string>>> Resolve(
      const kennel::v1::ArtifactRef& ref);

 private:
  ArtifactStore(std::string root, StateStore* state) : root_(std::move(root)), state_(state) {}
  // Gives `manifest` the next version of its name, writes it into `staging_dir` (which holds
  // the weights), renames the folder into place and records the version with `job_id`.
  absl::StatusOr<kennel::v1::ModelVersion> Register(const std::string& staging_dir,
                                                    kennel::v1::ModelManifest manifest,
                                                    const std::string& job_id);
  std::string root_;
  StateStore* state_;
};

}  // namespace kennel::coordinator

#endif  // KENNEL_COORDINATOR_ARTIFACT_STORE_H_
