#include "trainer_node/trainer_node.h"

#include "core/logging.h"
#include <torch/cuda.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/ml/artifact.h"
#include "core/member/coordinator_client.h"
#include "core/grpc_status.h"
#include "core/status_macros.h"
#include "core/ml/models.h"
#include "trainer_node/communicator_internal.h"
#include "trainer_node/coordinator_stores.h"
#include "trainer_node/trainer.h"

namespace kennel::trainer {

absl::StatusOr<std::unique_ptr<TrainerNode>> TrainerNode::Create(TrainerNodeOptions options) {
  RETURN_IF_ERROR(core::CheckCoordinatorAddress(options.coordinator));
  ASSIGN_OR_RETURN(auto credentials, core::MakeChannelCredentials(options.tls));
  if (options.name.empty() && !options.tls.cert.empty()) {
    // Its certificate says who it is.
    ASSIGN_OR_RETURN(options.name, core::CertificateName(options.tls.cert));
  }
  if (options.name.empty()) {
    char host[256] = {0};
    ::gethostname(host, sizeof(host) - 1);
    options.name = host;
  }
  std::error_code ec;
  std::filesystem::create_directories(options.work_dir, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("cannot create --work_dir ", options.work_dir));
  return std::unique_ptr<TrainerNode>(new TrainerNode(std::move(options), std::move(credentials)));
}

TrainerNode::TrainerNode(TrainerNodeOptions options, std::shared_ptr<grpc::ChannelCredentials> credentials)
    : options_(std::move(options)),
      channel_(core::CreateCoordinatorChannel(options_.coordinator, std::move(credentials))),
      stub_(v1::Coordinator::NewStub(channel_)) {
  job_thread_ = std::thread([this] { JobLoop(); });
  control_ = std::make_unique<core::ControlStream>(
      stub_.get(), "trainer " + options_.name,
      core::ControlStreamCallbacks{.make_register = [this] { return MakeRegister(); },
                                   .make_heartbeat = [this] { return MakeHeartbeat(); },
                                   .on_message = [this](const v1::CoordinatorMessage& m) { OnCoordinatorMessage(m); }});
}

TrainerNode::~TrainerNode() {
  Shutdown();
  // The job thread reports to the coordinator as it stops: the control stream must outlive it
  // (destroying it first crashed a trainer stopped mid-job).
  job_thread_.join();
  control_.reset();
}

void TrainerNode::Shutdown() {
  // Whole before it returns, and before Run() returns: the caller of Run may destroy the node
  // at once (a shutdown from a signal thread raced that destruction and crashed).
  absl::MutexLock serial(&shutdown_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return;
  }
  cancel_ = true;
  {
    absl::MutexLock lock(&mu_);
    if (comm_ != nullptr) comm_->Abort("the trainer is shutting down");
  }
  control_->Stop();
  absl::MutexLock lock(&mu_);
  shutdown_ = true;
}

void TrainerNode::Run() {
  absl::MutexLock lock(&mu_);
  auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return shutdown_; };
  mu_.Await(absl::Condition(&stopping));
}

v1::Register TrainerNode::MakeRegister() {
  absl::MutexLock lock(&mu_);
  v1::Register reg;
  reg.set_name(options_.name);
  reg.set_role(v1::TRAINER);
  reg.mutable_resources()->set_cpu_cores(static_cast<int32_t>(std::thread::hardware_concurrency()));
  const int gpus = static_cast<int>(torch::cuda::device_count());
  reg.mutable_resources()->set_gpus(gpus);
  reg.mutable_resources()->set_device(gpus > 0 ? "cuda" : "cpu");
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  reg.mutable_resources()->set_hostname(host);
  reg.set_job_id(current_job_);
  reg.set_generation(current_generation_);
  return reg;
}

v1::Heartbeat TrainerNode::MakeHeartbeat() {
  absl::MutexLock lock(&mu_);
  v1::Heartbeat heartbeat;
  heartbeat.set_job_id(current_job_);
  heartbeat.set_generation(current_generation_);
  return heartbeat;
}

void TrainerNode::OnCoordinatorMessage(const v1::CoordinatorMessage& message) {
  absl::MutexLock lock(&mu_);
  switch (message.message_case()) {
    case v1::CoordinatorMessage::kAssign:
      LOG(INFO) << "assigned job " << message.assign().job_id() << " generation "
                << message.assign().generation() << " as rank " << message.assign().rank() << " of "
                << message.assign().world_size();
      if (!current_job_.empty()) {  // The coordinator moved on.
        cancel_ = true;
        if (comm_ != nullptr) comm_->Abort("the coordinator assigned another job");
      }
      pending_ = message.assign();
      break;
    case v1::CoordinatorMessage::kCheckpoint:
      if (message.checkpoint().job_id() == current_job_ &&
          message.checkpoint().generation() == current_generation_) {
        LOG(INFO) << "the coordinator asked for a checkpoint of job " << current_job_;
        checkpoint_now_ = true;
      }
      break;
    case v1::CoordinatorMessage::kAbort:
      if (message.abort().job_id() == current_job_ &&
          message.abort().generation() == current_generation_) {
        LOG(WARNING) << "aborting job " << current_job_ << " generation " << current_generation_
                     << ": " << message.abort().reason();
        cancel_ = true;
        if (comm_ != nullptr) comm_->Abort(message.abort().reason());
      }
      if (pending_ && pending_->job_id() == message.abort().job_id() &&
          pending_->generation() == message.abort().generation()) {
        pending_.reset();
      }
      break;
    default:
      break;
  }
}

void TrainerNode::JobLoop() {
  while (true) {
    v1::Assignment assignment;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return shutdown_ || pending_.has_value(); };
      mu_.Await(absl::Condition(&ready));
      if (shutdown_) return;
      assignment = std::move(*pending_);
      pending_.reset();
      current_job_ = assignment.job_id();
      current_generation_ = assignment.generation();
      cancel_ = false;
      checkpoint_now_ = false;
    }
    RunAssignment(assignment);
    {
      absl::MutexLock lock(&mu_);
      current_job_.clear();
      current_generation_ = 0;
    }
    v1::TrainerMessage idle;
    idle.mutable_idle()->set_job_id(assignment.job_id());
    idle.mutable_idle()->set_generation(assignment.generation());
    // Kept through an outage: a coordinator that still counts this node busy with the job
    // waits for it (one that does not ignores it).
    Send(idle, /*keep=*/true);
  }
}

void TrainerNode::RunAssignment(const v1::Assignment& a) {
  const v1::JobSpec& spec = a.spec();
  const std::string tag = absl::StrCat("job ", a.job_id(), " gen ", a.generation(), " rank ", a.rank());
  auto fail = [&](const absl::Status& status) {
    LOG(ERROR) << tag << " failed: " << status;
    v1::TrainerMessage message;
    auto* failed = message.mutable_failed();
    failed->set_job_id(a.job_id());
    failed->set_generation(a.generation());
    failed->set_rank(a.rank());
    failed->set_error(std::string(status.message()));
    failed->set_missing_rank(MissingRankFromMessage(status.message()));
    // Timeouts and broken connections (collectives, the coordinator's stores) are the group's
    // trouble, not the job's.
    failed->set_cause(absl::IsDeadlineExceeded(status) || absl::IsUnavailable(status) ? v1::JobFailed::COLLECTIVE
                                                                                       : v1::JobFailed::TRAINING);
    Send(message, /*keep=*/true);
  };
  CoordinatorKeyValueStore store(stub_.get(), a.job_id(), a.generation());
  const CommunicatorOptions comm_options{
      .rank = a.rank(), .world_size = a.world_size(), .store = &store,
      .hostname = options_.advertise_host,
      .timeout = absl::Seconds(spec.training().collective_timeout_s())};
  auto comm = spec.backend() == "nccl" ? CreateNcclCommunicator(comm_options)
                                       : CreateGlooCommunicator(comm_options);
  if (!comm.ok()) {
    if (!cancel_) fail(comm.status());
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    comm_ = comm->get();
    if (cancel_) comm_->Abort("aborted while the group formed");
  }
  // Before the communicator goes, on every return below.
  struct Unpublish {
    TrainerNode* node;
    ~Unpublish() {
      absl::MutexLock lock(&node->mu_);
      node->comm_ = nullptr;
    }
  } unpublish{this};
  CoordinatorCheckpointStore checkpoints(stub_.get(), a.job_id(), a.generation(), options_.work_dir);
  TrainingRun run{.spec = spec, .rank = a.rank(), .world_size = a.world_size(), .train = &a.train(),
                  .eval = &a.eval(),
                  .dataset_root = options_.dataset_root.empty() ? spec.dataset().root() : options_.dataset_root,
                  .comm = comm->get(), .checkpoints = &checkpoints, .resume = a.resume(),
                  .cancelled = &cancel_};
  if (a.rank() == 0) {
    run.checkpoint_now = &checkpoint_now_;
    run.on_checkpoint = [&](const TrainingPosition& p) {
      LOG(INFO) << tag << ": checkpoint saved at epoch " << p.epoch + 1 << " step " << p.step_in_epoch
                << " (global step " << p.global_step << ")";
      v1::TrainerMessage message;
      auto* saved = message.mutable_checkpointed();
      saved->set_job_id(a.job_id());
      saved->set_generation(a.generation());
      saved->set_epoch(p.epoch);
      saved->set_step_in_epoch(p.step_in_epoch);
      saved->set_global_step(p.global_step);
      saved->set_epoch_samples(p.EpochSamplesDone(spec.training().batch_size(), a.train().samples_size(), a.world_size()));
      Send(message, /*keep=*/true);
    };
    run.on_step = [&](const v1::StepMetrics& m) {
      v1::TrainerMessage message;
      auto* step = message.mutable_step();
      step->set_job_id(a.job_id());
      step->set_generation(a.generation());
      step->set_rank(0);
      *step->mutable_metrics() = m;
      Send(message);
    };
    run.on_epoch = [&](const v1::EpochMetrics& m) {
      LOG(INFO) << tag << ": epoch " << m.epoch() + 1 << " eval accuracy " << m.eval_accuracy()
                << ", train loss " << m.train_loss() << ", " << m.images_per_second() << " images/s";
      v1::TrainerMessage message;
      auto* epoch = message.mutable_epoch();
      epoch->set_job_id(a.job_id());
      epoch->set_generation(a.generation());
      epoch->set_rank(0);
      *epoch->mutable_metrics() = m;
      Send(message, /*keep=*/true);
    };
  }
  auto result = Train(run);
  if (!result.ok()) {
    if (absl::IsCancelled(result.status()) || cancel_) {
      LOG(INFO) << tag << " stopped: " << result.status().message();
    } else {
      fail(result.status());
    }
    return;
  }
  v1::TrainerMessage message;
  auto* finished = message.mutable_finished();
  finished->set_job_id(a.job_id());
  finished->set_generation(a.generation());
  finished->set_rank(a.rank());
  finished->set_param_digest(result->param_digest);
  if (a.rank() == 0) {
    v1::ModelManifest manifest;
    manifest.set_name(spec.name());
    *manifest.mutable_model() = spec.model();
    *manifest.mutable_class_names() = a.train().class_names();
    *manifest.mutable_preprocess() = spec.preprocess();
    *manifest.mutable_metrics() = result->metrics;
    manifest.mutable_metrics()->set_test_accuracy(result->metrics.validation_accuracy());
    manifest.mutable_metrics()->set_test_loss(result->metrics.validation_loss());
    auto* lineage = manifest.mutable_lineage();
    lineage->set_job_id(a.job_id());
    lineage->set_init_weights(spec.training().init_weights());
    lineage->set_dataset(absl::StrCat(a.train().name(), " ", a.train().fingerprint()));
    lineage->set_world_size(a.world_size());
    lineage->set_created_at(absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone()));
    const std::string dir = absl::StrCat(options_.work_dir, "/model-", a.job_id(), "-", a.generation(), "-", ::getpid());
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    absl::Status written = result->trained->WriteArtifact(dir, manifest);
    v1::ArtifactRef ref;
    ref.set_kind(v1::ArtifactRef::MODEL);
    ref.set_name(spec.name());
    ref.set_job_id(a.job_id());
    ref.set_generation(a.generation());
    absl::StatusOr<v1::ArtifactRef> stored =
        written.ok() ? PublishModel(dir, ref, tag) : absl::StatusOr<v1::ArtifactRef>(written);
    std::filesystem::remove_all(dir, ec);
    if (!stored.ok()) {
      if (cancel_) {
        LOG(INFO) << tag << " stopped before its model was taken: " << stored.status().message();
      } else {
        fail(absl::Status(stored.status().code(),
                          absl::StrCat("publishing the model: ", stored.status().message())));
      }
      return;
    }
    LOG(INFO) << tag << ": model " << stored->name() << " version " << stored->version() << " registered";
    *finished->mutable_model() = *stored;
  }
  Send(message, /*keep=*/true);
}

absl::StatusOr<v1::ArtifactRef> TrainerNode::PublishModel(const std::string& dir, const v1::ArtifactRef& ref,
                                                          const std::string& tag) {
  // The trained model is the job's whole work: an unreachable coordinator (restarting,
  // a network cut) is waited for, up to kPublishPatience, rather than the job recovering
  // from its last checkpoint and training again. The coordinator takes the model if this
  // generation is still current when it is back (trainers re-register with it meanwhile).
  const absl::Time give_up = absl::Now() + kPublishPatience;
  absl::Duration backoff = absl::Seconds(1);
  while (true) {
    auto manifest = core::ReadManifest(dir);
    if (!manifest.ok()) return manifest.status();
    auto stored = core::UploadFolder(*stub_, dir, {core::kManifestFile, manifest->weights_file()}, ref, absl::Minutes(30));
    if (stored.ok() || !absl::IsUnavailable(stored.status()) || cancel_ || absl::Now() + backoff > give_up) {
      return stored;
    }
    LOG(WARNING) << tag << ": the coordinator is unreachable to take the model (" << stored.status().message()
                 << "); retrying in " << absl::FormatDuration(backoff) << " (until "
                 << absl::FormatTime("%H:%M:%S UTC", give_up, absl::UTCTimeZone()) << ")";
    for (absl::Time until = absl::Now() + backoff; absl::Now() < until && !cancel_;) {
      absl::SleepFor(absl::Milliseconds(100));
    }
    backoff = std::min(backoff * 2, absl::Seconds(10));
  }
}

}  // namespace kennel::trainer
