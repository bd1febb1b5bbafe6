// gRPC adapters over Cluster and ArtifactStore: the member-facing Coordinator service
// (TrainerControl is a callback-API bidi reactor that never blocks; the store and artifact
// transfer RPCs are synchronous) and the Admin service for kennelctl. Status conversion to
// gRPC happens here and nowhere else.
#ifndef KENNEL_COORDINATOR_COORDINATOR_SERVICE_H_
#define KENNEL_COORDINATOR_COORDINATOR_SERVICE_H_

#include "coordinator/artifact_store.h"
#include "coordinator/cluster.h"
#include "coordinator/tuner.h"
#include "kennel/v1/admin.grpc.pb.h"
#include "kennel/v1/coordinator.grpc.pb.h"

namespace kennel::coordinator {

class CoordinatorService final
    : public kennel::v1::Coordinator::WithCallbackMethod_TrainerControl<
          kennel::v1::Coordinator::Service> {
 public:
  // enforce (on with TLS): every call is checked against its roles (core/auth.h), and a member
  // registers only under the common name of the certificate it connected with.
  CoordinatorService(Cluster* cluster, ArtifactStore* artifacts, int64_t max_artifact_bytes,
                     bool enforce = false)
      : cluster_(cluster), artifacts_(artifacts), max_artifact_bytes_(max_artifact_bytes),
        enforce_(enforce) {}

  grpc::ServerBidiReactor<kennel::v1::TrainerMessage, kennel::v1::CoordinatorMessage>*
  TrainerControl(grpc::CallbackServerContext* context) override;
  grpc::Status StoreSet(grpc::ServerContext* context, const kennel::v1::StoreSetRequest* request,
                        kennel::v1::StoreSetResponse* response) override;
  grpc::Status StoreGet(grpc::ServerContext* context, const kennel::v1::StoreGetRequest* request,
                        kennel::v1::StoreGetResponse* response) override;
  grpc::Status UploadArtifact(grpc::ServerContext* context,
                              grpc::ServerReader<kennel::v1::ArtifactChunk>* reader,
                              kennel::v1::UploadArtifactResponse* response) override;
  grpc::Status DownloadArtifact(grpc::ServerContext* context,
                                const kennel::v1::DownloadArtifactRequest* request,
                                grpc::ServerWriter<kennel::v1::ArtifactChunk>* writer) override;

 private:
  Cluster* cluster_;
  ArtifactStore* artifacts_;
  int64_t max_artifact_bytes_;
  bool enforce_;
};

class AdminService final : public kennel::v1::Admin::Service {
 public:
  // enforce: every call is checked against its roles (core/auth.h); on with TLS.
  // autoscaling may be null (then the autoscaling calls are FAILED_PRECONDITION).
  AdminService(Cluster* cluster, Tuner* tuner, StateStore* state, bool enforce = false,
               Autoscaling* autoscaling = nullptr)
      : cluster_(cluster), tuner_(tuner), state_(state), enforce_(enforce), autoscaling_(autoscaling) {}

  grpc::Status GetClusterStatus(grpc::ServerContext*, const kennel::v1::GetClusterStatusRequest*,
                                kennel::v1::ClusterStatus* response) override;
  grpc::Status SubmitJob(grpc::ServerContext*, const kennel::v1::SubmitJobRequest* request,
                         kennel::v1::JobStatus* response) override;
  grpc::Status CancelJob(grpc::ServerContext*, const kennel::v1::CancelJobRequest* request,
                         kennel::v1::JobStatus* response) override;
  grpc::Status ResumeJob(grpc::ServerContext*, const kennel::v1::ResumeJobRequest* request,
                         kennel::v1::JobStatus* response) override;
  grpc::Status ListJobs(grpc::ServerContext*, const kennel::v1::ListJobsRequest* request,
                        kennel::v1::ListJobsResponse* response) override;
  grpc::Status GetJob(grpc::ServerContext*, const kennel::v1::GetJobRequest* request,
                      kennel::v1::JobStatus* response) override;
  grpc::Status WatchJob(grpc::ServerContext* context, const kennel::v1::GetJobRequest* request,
                        grpc::ServerWriter<kennel::v1::JobStatus>* writer) override;
  grpc::Status ListModels(grpc::ServerContext*, const kennel::v1::ListModelsRequest* request,
                          kennel::v1::ListModelsResponse* response) override;
  grpc::Status Deploy(grpc::ServerContext*, const kennel::v1::DeployRequest* request,
                      kennel::v1::DeployResponse* response) override;
  grpc::Status SubmitTuning(grpc::ServerContext*, const kennel::v1::SubmitTuningRequest* request,
                            kennel::v1::TuningStatus* response) override;
  grpc::Status GetTuning(grpc::ServerContext*, const kennel::v1::GetTuningRequest* request,
                         kennel::v1::TuningStatus* response) override;
  grpc::Status ListTunings(grpc::ServerContext*, const kennel::v1::ListTuningsRequest* request,
                           kennel::v1::ListTuningsResponse* response) override;
  grpc::Status CancelTuning(grpc::ServerContext*, const kennel::v1::GetTuningRequest* request,
                            kennel::v1::TuningStatus* response) override;
  grpc::Status SetAutoscale(grpc::ServerContext*, const kennel::v1::SetAutoscaleRequest* request,
                            kennel::v1::AutoscaleStatus* response) override;
  grpc::Status GetAutoscale(grpc::ServerContext*, const kennel::v1::GetAutoscaleRequest* request,
                            kennel::v1::GetAutoscaleResponse* response) override;
  grpc::Status WatchEndpoints(grpc::ServerContext* context, const kennel::v1::WatchEndpointsRequest* request,
                              grpc::ServerWriter<kennel::v1::Endpoints>* writer) override;

 private:
  Cluster* cluster_;
  Tuner* tuner_;
  StateStore* state_;
  bool enforce_;
  Autoscaling* autoscaling_;
};

}  // namespace kennel::coordinator

#endif  // KENNEL_COORDINATOR_COORDINATOR_SERVICE_H_
