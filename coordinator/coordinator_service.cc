#include "coordinator/coordinator_service.h"

#include "core/logging.h"

#include <deque>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "core/grpc_status.h"
#include "core/auth.h"
#include "core/ml/artifact.h"
#include "core/model_spec.h"
#include "core/tls.h"

namespace kennel::coordinator {
namespace {

using core::ToGrpcStatus;

class ControlReactor;

// The Cluster's handle on one control stream. Outlives the reactor (the Cluster may hold
// it after the stream ended); Send and Close are then no-ops. Every Start* and Finish call
// on the reactor goes through here, under one mutex: no write starts after Finish, and
// Finish waits for the write in flight.
class StreamChannel : public TrainerChannel {
 public:
  explicit StreamChannel(ControlReactor* reactor) : reactor_(reactor) {}
  void Send(const v1::CoordinatorMessage& message) override;
  void Close(const absl::Status& why) override;
  // Ends the stream with `status` (from the reactor or Close).
  void Finish(const grpc::Status& status);
  // From the reactor: the write in flight completed.
  void WriteDone(bool ok);
  // From the reactor's OnDone: nothing may touch it any more.
  void Detach() {
    absl::MutexLock lock(&mu_);
    reactor_ = nullptr;
  }

 private:
  void FinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  ControlReactor* reactor_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::CoordinatorMessage> queue_ ABSL_GUARDED_BY(mu_);  // Front is being written.
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;  // Finish once the write in flight is done.
  bool finished_ ABSL_GUARDED_BY(mu_) = false;   // Finish was called.
  grpc::Status final_ ABSL_GUARDED_BY(mu_);
};

class ControlReactor
    : public grpc::ServerBidiReactor<v1::TrainerMessage, v1::CoordinatorMessage> {
 public:
  // `certificate_name`: the verified client certificate's name the member must register
  // under, or nullopt when names are not verified (plaintext).
  // `allowed`: core::Authorize's verdict; a refused caller's stream ends at once with it.
  ControlReactor(Cluster* cluster, std::optional<std::string> certificate_name, bool verify,
                 const grpc::Status& allowed)
      : cluster_(cluster), certificate_name_(std::move(certificate_name)), verify_(verify),
        channel_(std::make_shared<StreamChannel>(this)) {
    if (!allowed.ok()) {
      channel_->Finish(allowed);
      return;
    }
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // The member closed its side, the connection broke, or we finished.
      channel_->Finish(grpc::Status::OK);
      return;
    }
    if (name_.empty()) {
      if (!in_.has_register_()) {
        channel_->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                      "the first message on a control stream must be Register"));
        return;
      }
      if (verify_ && certificate_name_ != in_.register_().name()) {
        channel_->Finish(
            certificate_name_.has_value()
                ? grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                               absl::StrCat("this certificate is for '", *certificate_name_, "'; it cannot register as '",
                                            in_.register_().name(), "' (--name must be the certificate's name)"))
                : grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                               "a member must connect with a certificate the cluster's CA issued for its name"));
        return;
      }
      // The cluster sends the ack (and what must follow it) on the channel itself.
      auto ack = cluster_->RegisterTrainer(in_.register_(), channel_);
      if (!ack.ok()) {
        channel_->Finish(ToGrpcStatus(ack.status()));
        return;
      }
      name_ = in_.register_().name();
    } else {
      cluster_->OnTrainerMessage(name_, channel_.get(), in_);
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override { channel_->WriteDone(ok); }

  void OnDone() override {
    channel_->Detach();
    if (!name_.empty()) cluster_->OnTrainerDisconnected(name_, channel_.get());
    delete this;
  }

 private:
  Cluster* cluster_;
  const std::optional<std::string> certificate_name_;
  const bool verify_;
  std::shared_ptr<StreamChannel> channel_;
  v1::TrainerMessage in_;
  std::string name_;
};

void StreamChannel::Send(const v1::CoordinatorMessage& message) {
  absl::MutexLock lock(&mu_);
  if (reactor_ == nullptr || finishing_ || finished_) return;
  queue_.push_back(message);
  if (!writing_) {
    writing_ = true;
    reactor_->StartWrite(&queue_.front());
  }
}

void StreamChannel::Close(const absl::Status& why) { Finish(ToGrpcStatus(why)); }

void StreamChannel::Finish(const grpc::Status& status) {
  absl::MutexLock lock(&mu_);
  if (reactor_ == nullptr || finishing_ || finished_) return;
  finishing_ = true;
  final_ = status;
  if (!writing_) FinishLocked();
}

void StreamChannel::FinishLocked() {
  finished_ = true;
  queue_.clear();
  reactor_->Finish(final_);
}

void StreamChannel::WriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  writing_ = false;
  if (!queue_.empty()) queue_.pop_front();
  if (reactor_ == nullptr || finished_) return;
  if (!ok) {
    // The stream broke; the read side sees it too. What was queued is lost with it.
    queue_.clear();
    if (!finishing_) {
      finishing_ = true;
      final_ = grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed");
    }
  }
  if (finishing_) {
    FinishLocked();
    return;
  }
  if (!queue_.empty()) {
    writing_ = true;
    reactor_->StartWrite(&queue_.front());
  }
}

}  // namespace

grpc::ServerBidiReactor<v1::TrainerMessage, v1::CoordinatorMessage>*
CoordinatorService::TrainerControl(grpc::CallbackServerContext* context) {
  return new ControlReactor(cluster_, core::VerifiedPeerName(*context), enforce_,
                            core::Authorize(*context, enforce_, "TrainerControl"));
}

grpc::Status CoordinatorService::StoreSet(grpc::ServerContext* context, const v1::StoreSetRequest* request,
                                          v1::StoreSetResponse*) {
  if (auto denied = core::Authorize(*context, enforce_, "StoreSet"); !denied.ok()) return denied;
  return ToGrpcStatus(
      cluster_->StoreSet(request->job_id(), request->generation(), request->key(), request->value()));
}

grpc::Status CoordinatorService::StoreGet(grpc::ServerContext* context, const v1::StoreGetRequest* request,
                                          v1::StoreGetResponse* response) {
  if (auto denied = core::Authorize(*context, enforce_, "StoreGet"); !denied.ok()) return denied;
  auto values = cluster_->StoreGet(request->job_id(), request->generation(),
                                   {request->keys().begin(), request->keys().end()});
  if (!values.ok()) return ToGrpcStatus(values.status());
  for (auto& v : *values) response->add_values(std::move(v));
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::UploadArtifact(grpc::ServerContext* context,
                                                grpc::ServerReader<v1::ArtifactChunk>* reader,
                                                v1::UploadArtifactResponse* response) {
  if (auto denied = core::Authorize(*context, enforce_, "UploadArtifact"); !denied.ok()) return denied;
  auto receiver = artifacts_->NewReceiver(max_artifact_bytes_);
  v1::ArtifactChunk chunk;
  absl::Status status;
  while (status.ok() && reader->Read(&chunk)) status = receiver->Consume(chunk);
  if (status.ok()) status = receiver->Finish();
  const v1::ArtifactRef ref = receiver->header().ref();
  // A model without a job is an import (kennelctl import --register); anything a job uploads
  // must come from its current generation.
  const bool imported = ref.kind() == v1::ArtifactRef::MODEL && ref.job_id().empty();
  if (status.ok() && !imported) status = cluster_->CheckCurrentGeneration(ref.job_id(), ref.generation());
  if (!status.ok()) {
    artifacts_->Discard(receiver->dir());
    return ToGrpcStatus(status);
  }
  if (imported && enforce_) {
    // A TorchScript module or AOTInductor package is code that every inference node will run:
    // importing one is an admin's decision (a trainer registers what an admin's job trained).
    auto manifest = core::ReadManifest(receiver->dir());
    const core::Caller caller = core::CallerOf(*context, enforce_);
    if (manifest.ok() && core::IsUserCode(manifest->model().architecture()) && caller.role != "admin") {
      artifacts_->Discard(receiver->dir());
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          absl::StrCat("a ", manifest->model().architecture() == v1::TORCHSCRIPT ? "TorchScript model"
                                                                                                : "AOTInductor package",
                                       " is code the inference nodes run: only the admin role may import one (",
                                       caller.name, " has role '", caller.role, "')"));
    }
  }
  *response->mutable_stored() = ref;
  if (ref.kind() == v1::ArtifactRef::CHECKPOINT) {
    return ToGrpcStatus(artifacts_->CommitCheckpoint(receiver->dir(), ref.job_id()));
  }
  if (ref.kind() != v1::ArtifactRef::MODEL) {
    artifacts_->Discard(receiver->dir());
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "artifact kind must be MODEL or CHECKPOINT");
  }
  auto model = artifacts_->CommitModel(receiver->dir(), ref.job_id());
  if (!model.ok()) return ToGrpcStatus(model.status());
  response->mutable_stored()->set_name(model->name());
  response->mutable_stored()->set_version(model->version());
  LOG(INFO) << "registered model " << model->name() << " version " << model->version()
            << (imported ? " (imported)" : absl::StrCat(" from job ", ref.job_id()));
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::DownloadArtifact(grpc::ServerContext* context,
                                                  const v1::DownloadArtifactRequest* request,
                                                  grpc::ServerWriter<v1::ArtifactChunk>* writer) {
  if (auto denied = core::Authorize(*context, enforce_, "DownloadArtifact"); !denied.ok()) return denied;
  auto location = artifacts_->Resolve(request->ref());
  if (!location.ok()) return ToGrpcStatus(location.status());
  v1::ArtifactRef ref = request->ref();
  if (ref.kind() == v1::ArtifactRef::MODEL && ref.version() <= 0) {
    ref.set_version(std::stoll(std::filesystem::path(location->first).filename().string()));
  }
  return ToGrpcStatus(core::SendFolder(location->first, location->second, ref,
                                       [&](const v1::ArtifactChunk& c) { return writer->Write(c); }));
}

grpc::Status AdminService::GetClusterStatus(grpc::ServerContext* context, const v1::GetClusterStatusRequest*,
                                            v1::ClusterStatus* response) {
  if (auto denied = core::Authorize(*context, enforce_, "GetClusterStatus"); !denied.ok()) return denied;
  *response = cluster_->Status();
  if (autoscaling_ != nullptr) {
    if (auto all = autoscaling_->Get(""); all.ok()) {
      for (auto& a : *all) *response->add_autoscaling() = std::move(a);
    }
  }
  const core::Caller caller = core::CallerOf(*context, enforce_);
  response->set_caller(enforce_ ? absl::StrCat(caller.name, " (", caller.role, ")") : "anonymous (no TLS)");
  return grpc::Status::OK;
}

grpc::Status AdminService::SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest* request,
                                     v1::JobStatus* response) {
  if (auto denied = core::Authorize(*context, enforce_, "SubmitJob"); !denied.ok()) return denied;
  return core::RespondWith(cluster_->SubmitJob(request->spec()), response);
}

grpc::Status AdminService::CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                                     v1::JobStatus* response) {
  if (auto denied = core::Authorize(*context, enforce_, "CancelJob"); !denied.ok()) return denied;
  return core::RespondWith(cluster_->CancelJob(request->job_id()), response);
}

grpc::Status AdminService::ResumeJob(grpc::ServerContext* context, const v1::ResumeJobRequest* request,
                                     v1::JobStatus* response) {
  if (auto denied = core::Authorize(*context, enforce_, "ResumeJob"); !denied.ok()) return denied;
  return core::RespondWith(cluster_->ResumeJob(request->job_id()), response);
}

grpc::Status AdminService::ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                                    v1::ListJobsResponse* response) {
  if (auto denied = core::Authorize(*context, enforce_, "ListJobs"); !denied.ok()) return denied;
  const int limit = request->limit() > 0 ? request->limit() : 50;
  for (auto& job : cluster_->ListJobs(limit)) *response->add_jobs() = std::move(job);
  return grpc::Status::OK;
}

grpc::Status AdminService::GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                                  v1::JobStatus* response) {
  if (auto denied = core::Authorize(*context, enforce_, "GetJob"); !denied.ok()) return denied;
  return core::RespondWith(cluster_->GetJob(request->job_id()), response);
}

grpc::Status AdminService::WatchJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                                    grpc::ServerWriter<v1::JobStatus>* writer) {
  if (auto denied = core::Authorize(*context, enforce_, "WatchJob"); !denied.ok()) return denied;
  int64_t seen = -1;
  while (!context->IsCancelled()) {
    auto update = cluster_->WaitForJobChange(request->job_id(), seen, absl::Milliseconds(500));
    if (!update.ok()) return ToGrpcStatus(update.status());
    if (update->second == seen) continue;
    seen = update->second;
    if (!writer->Write(update->first)) break;
    const auto state = update->first.state();
    if (state == v1::SUCCEEDED || state == v1::FAILED || state == v1::CANCELLED) break;
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::ListModels(grpc::ServerContext* context, const v1::ListModelsRequest* request,
                                      v1::ListModelsResponse* response) {
  if (auto denied = core::Authorize(*context, enforce_, "ListModels"); !denied.ok()) return denied;
  auto models = state_->LoadModels(request->name());
  if (!models.ok()) return ToGrpcStatus(models.status());
  for (auto& m : *models) *response->add_models() = std::move(m);
  return grpc::Status::OK;
}

}  // namespace kennel::coordinator

namespace kennel::coordinator {

grpc::Status AdminService::Deploy(grpc::ServerContext* context, const v1::DeployRequest* request,
                                  v1::DeployResponse* response) {
  if (auto denied = core::Authorize(*context, enforce_, "Deploy"); !denied.ok()) return denied;
  if (!request->has_autoscale()) return core::RespondWith(cluster_->Deploy(*request), response);
  // Deploy and autoscale: the settings are checked before anything is rolled out, the nodes
  // connected now get the version, and the autoscaler starts what min_nodes still needs.
  if (autoscaling_ == nullptr) return ToGrpcStatus(absl::FailedPreconditionError("this coordinator does not autoscale"));
  if (auto spec = CheckAutoscaleSpec(request->autoscale()); !spec.ok()) return ToGrpcStatus(spec.status());
  auto version = cluster_->ChooseVersion(*request);
  if (!version.ok()) return ToGrpcStatus(version.status());
  v1::DeployRequest deploy = *request;
  deploy.set_version(*version);
  bool connected = !request->nodes().empty();
  for (const auto& n : cluster_->InferenceNodes()) connected = connected || n.connected;
  if (connected) {
    auto deployed = cluster_->Deploy(deploy);
    if (!deployed.ok()) return ToGrpcStatus(deployed.status());
    *response = *std::move(deployed);
  } else {
    response->set_name(request->name());
    response->set_version(*version);
  }
  v1::AutoscaleSpec spec = request->autoscale();
  spec.set_version(*version);
  auto set = autoscaling_->Set(request->name(), spec, /*disable=*/false);
  return set.ok() ? grpc::Status::OK : ToGrpcStatus(set.status());
}

}  // namespace kennel::coordinator

namespace kennel::coordinator {

grpc::Status AdminService::SubmitTuning(grpc::ServerContext* context, const v1::SubmitTuningRequest* request,
                                        v1::TuningStatus* response) {
  if (auto denied = core::Authorize(*context, enforce_, "SubmitTuning"); !denied.ok()) return denied;
  return core::RespondWith(tuner_->Submit(request->spec()), response);
}

grpc::Status AdminService::GetTuning(grpc::ServerContext* context, const v1::GetTuningRequest* request,
                                     v1::TuningStatus* response) {
  if (auto denied = core::Authorize(*context, enforce_, "GetTuning"); !denied.ok()) return denied;
  return core::RespondWith(tuner_->Get(request->tuning_id()), response);
}

grpc::Status AdminService::ListTunings(grpc::ServerContext* context, const v1::ListTuningsRequest* request,
                                       v1::ListTuningsResponse* response) {
  if (auto denied = core::Authorize(*context, enforce_, "ListTunings"); !denied.ok()) return denied;
  for (auto& t : tuner_->List(request->limit() > 0 ? request->limit() : 50)) *response->add_tunings() = std::move(t);
  return grpc::Status::OK;
}

grpc::Status AdminService::CancelTuning(grpc::ServerContext* context, const v1::GetTuningRequest* request,
                                        v1::TuningStatus* response) {
  if (auto denied = core::Authorize(*context, enforce_, "CancelTuning"); !denied.ok()) return denied;
  return core::RespondWith(tuner_->Cancel(request->tuning_id()), response);
}

}  // namespace kennel::coordinator

namespace kennel::coordinator {

grpc::Status AdminService::SetAutoscale(grpc::ServerContext* context, const v1::SetAutoscaleRequest* request,
                                        v1::AutoscaleStatus* response) {
  if (auto denied = core::Authorize(*context, enforce_, "SetAutoscale"); !denied.ok()) return denied;
  if (autoscaling_ == nullptr) return ToGrpcStatus(absl::FailedPreconditionError("this coordinator does not autoscale"));
  return core::RespondWith(autoscaling_->Set(request->name(), request->spec(), request->disable()), response);
}

grpc::Status AdminService::GetAutoscale(grpc::ServerContext* context, const v1::GetAutoscaleRequest* request,
                                        v1::GetAutoscaleResponse* response) {
  if (auto denied = core::Authorize(*context, enforce_, "GetAutoscale"); !denied.ok()) return denied;
  if (autoscaling_ == nullptr) return ToGrpcStatus(absl::FailedPreconditionError("this coordinator does not autoscale"));
  auto all = autoscaling_->Get(request->name());
  if (!all.ok()) return ToGrpcStatus(all.status());
  for (auto& a : *all) *response->add_models() = std::move(a);
  return grpc::Status::OK;
}

grpc::Status AdminService::WatchEndpoints(grpc::ServerContext* context, const v1::WatchEndpointsRequest* request,
                                          grpc::ServerWriter<v1::Endpoints>* writer) {
  if (auto denied = core::Authorize(*context, enforce_, "WatchEndpoints"); !denied.ok()) return denied;
  if (request->model().empty()) return ToGrpcStatus(absl::InvalidArgumentError("WatchEndpoints: no model named"));
  if (autoscaling_ == nullptr) return ToGrpcStatus(absl::FailedPreconditionError("this coordinator keeps no endpoint sets"));
  v1::Endpoints now = autoscaling_->Endpoints(request->model());
  if (!writer->Write(now) || !request->watch()) return grpc::Status::OK;
  int64_t seen = now.revision();
  while (!context->IsCancelled()) {
    v1::Endpoints next = autoscaling_->WaitForEndpoints(request->model(), seen, absl::Milliseconds(500));
    if (next.revision() == seen) continue;
    seen = next.revision();
    if (!writer->Write(next)) break;
  }
  return grpc::Status::OK;
}

}  // namespace kennel::coordinator
