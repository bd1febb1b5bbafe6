#include "cli/cluster_commands.h"

#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/autoscale_command.h"
#include "cli/client.h"
#include "core/grpc_status.h"
#include "core/model_spec.h"

namespace kennel::cli {
namespace {


std::string StateName(v1::JobState s) { return Lower(v1::JobState_Name(s)); }

int RpcFail(const grpc::Status& status, const std::string& address) {
  return Fail(RpcError(status, Peer::kCoordinator, address));
}

int Status(const GlobalOptions& global) {
  auto stub = AdminStub(global.coordinator);
  v1::ClusterStatus status;
  grpc::Status rpc = stub->GetClusterStatus(Context().get(), {}, &status);
  if (!rpc.ok()) return RpcFail(rpc, global.coordinator);
  if (global.json()) {
    PrintJson(ProtoToJson(status));
    return kExitOk;
  }
  if (!status.caller().empty()) std::cout << "AS " << status.caller() << "\n\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& n : status.nodes()) {
    rows.push_back({n.name(), Lower(v1::NodeRole_Name(n.role())), Lower(v1::NodeState_Name(n.state())),
                    absl::StrCat(n.resources().cpu_cores(), " cpu", n.resources().gpus() > 0
                                     ? absl::StrCat(", ", n.resources().gpus(), " gpu") : ""),
                    Ago(n.last_heartbeat_unix_ms()),
                    n.state() == v1::DEAD ? (n.detail().empty() ? "-" : n.detail())
                    : n.role() == v1::INFERENCE
                        ? absl::StrCat(n.model().empty() ? "no model" : n.model(),
                                       n.draining() ? ", draining" : n.serving() ? ", serving" : ", not serving",
                                       ", queue ", n.queue_depth(),
                                       absl::StrFormat(", load %.2f", n.load().offered_load()),
                                       n.address().empty() ? "" : absl::StrCat(", at ", n.address()))
                        : n.job_id().empty() ? "-" : absl::StrCat(n.job_id(), " rank ", n.rank(), " gen ", n.generation())});
  }
  std::cout << "NODES\n";
  PrintTable({"NAME", "ROLE", "STATE", "RESOURCES", "HEARTBEAT", "WORK"}, rows);
  rows.clear();
  for (const auto& j : status.active_jobs()) {
    rows.push_back({j.id(), j.spec().name(), StateName(j.state()), JobProgress(j), j.message()});
  }
  std::cout << "\nACTIVE JOBS\n";
  if (rows.empty()) std::cout << "(none)\n";
  else PrintTable({"ID", "MODEL", "STATE", "PROGRESS", "MESSAGE"}, rows);
  if (status.autoscaling_size() > 0) {
    rows.clear();
    for (const auto& a : status.autoscaling()) rows.push_back(AutoscaleRow(a));
    std::cout << "\nAUTOSCALING\n";
    PrintTable(AutoscaleHeader(), rows);
  }
  return kExitOk;
}

int Jobs(const GlobalOptions& global, int limit) {
  auto stub = AdminStub(global.coordinator);
  v1::ListJobsRequest request;
  request.set_limit(limit);
  v1::ListJobsResponse response;
  grpc::Status rpc = stub->ListJobs(Context().get(), request, &response);
  if (!rpc.ok()) return RpcFail(rpc, global.coordinator);
  if (global.json()) {
    PrintJson(ProtoToJson(response));
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& j : response.jobs()) {
    std::string accuracy = j.epochs().empty() ? "-" : absl::StrFormat("%.4f", j.epochs().rbegin()->eval_accuracy());
    rows.push_back({j.id(), j.spec().name(), StateName(j.state()), std::to_string(j.spec().world_size()),
                    JobProgress(j), accuracy,
                    j.model_version() > 0 ? absl::StrCat(j.model_name(), ":", j.model_version()) : "-",
                    Ago(j.created_unix_ms())});
  }
  PrintTable({"ID", "MODEL", "STATE", "WORLD", "PROGRESS", "ACCURACY", "VERSION", "SUBMITTED"}, rows);
  return kExitOk;
}

int Job(const GlobalOptions& global, const std::string& id) {
  auto stub = AdminStub(global.coordinator);
  v1::GetJobRequest request;
  request.set_job_id(id);
  v1::JobStatus job;
  grpc::Status rpc = stub->GetJob(Context().get(), request, &job);
  if (!rpc.ok()) return RpcFail(rpc, global.coordinator);
  if (global.json()) {
    PrintJson(ProtoToJson(job));
    return kExitOk;
  }
  const auto& spec = job.spec();
  std::cout << "job " << job.id() << ": " << StateName(job.state()) << " (generation " << job.generation() << ")\n"
            << "model " << spec.name() << ": " << core::ArchitectureName(spec.model().architecture()) << ", "
            << spec.model().num_classes() << " classes, world size " << spec.world_size() << ", "
            << spec.training().epochs() << " epochs, batch " << spec.training().batch_size() << "/rank\n"
            << "data: " << spec.dataset().root() << " (" << job.train_samples() << " train, "
            << job.eval_samples() << " eval samples)\n";
  if (!job.nodes().empty()) std::cout << "ranks: " << absl::StrJoin(job.nodes(), ", ") << "\n";
  if (!job.message().empty()) std::cout << "message: " << job.message() << "\n";
  if (job.model_version() > 0) std::cout << "registered: " << job.model_name() << " version " << job.model_version() << "\n";
  if (job.checkpoint_global_step() > 0) {
    std::cout << "checkpoint: step " << job.checkpoint_global_step() << " (" << Ago(job.checkpoint_unix_ms()) << ")\n";
  }
  if (job.recoveries() > 0) std::cout << "recoveries: " << job.recoveries() << "\n";
  if (job.memberships_size() > 1) {
    std::cout << "group history:\n";
    for (const auto& m : job.memberships()) {
      std::cout << "  generation " << m.generation() << ": " << m.world_size() << " trainer"
                << (m.world_size() == 1 ? "" : "s") << " from epoch " << m.epoch() + 1 << " sample "
                << m.epoch_start_sample() << " (" << m.reason() << ")\n";
    }
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& e : job.epochs()) {
    rows.push_back({std::to_string(e.epoch() + 1), absl::StrFormat("%.4f", e.train_loss()),
                    absl::StrFormat("%.4f", e.eval_loss()), absl::StrFormat("%.4f", e.eval_accuracy()),
                    absl::StrFormat("%.0f", e.images_per_second()), absl::StrFormat("%.1f", e.seconds())});
  }
  if (!rows.empty()) {
    std::cout << "\n";
    PrintTable({"EPOCH", "TRAIN LOSS", "EVAL LOSS", "EVAL ACC", "IMAGES/S", "SECONDS"}, rows);
  }
  return kExitOk;
}

int Cancel(const GlobalOptions& global, const std::string& id) {
  auto stub = AdminStub(global.coordinator);
  v1::CancelJobRequest request;
  request.set_job_id(id);
  v1::JobStatus job;
  grpc::Status rpc = stub->CancelJob(Context().get(), request, &job);
  if (!rpc.ok()) return RpcFail(rpc, global.coordinator);
  if (global.json()) PrintJson(ProtoToJson(job));
  else std::cout << "job " << id << " cancelled\n";
  return kExitOk;
}

int Resume(const GlobalOptions& global, const std::string& id) {
  auto stub = AdminStub(global.coordinator);
  v1::ResumeJobRequest request;
  request.set_job_id(id);
  v1::JobStatus job;
  grpc::Status rpc = stub->ResumeJob(Context().get(), request, &job);
  if (!rpc.ok()) return RpcFail(rpc, global.coordinator);
  if (global.json()) PrintJson(ProtoToJson(job));
  else std::cout << "job " << id << " resumes from its checkpoint (generation " << job.generation() << "): " << job.message() << "\n";
  return kExitOk;
}

int Models(const GlobalOptions& global, const std::string& name) {
  auto stub = AdminStub(global.coordinator);
  v1::ListModelsRequest request;
  request.set_name(name);
  v1::ListModelsResponse response;
  grpc::Status rpc = stub->ListModels(Context().get(), request, &response);
  if (!rpc.ok()) return RpcFail(rpc, global.coordinator);
  if (global.json()) {
    PrintJson(ProtoToJson(response));
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& m : response.models()) {
    rows.push_back({m.name(), std::to_string(m.version()),
                    core::ArchitectureName(m.manifest().model().architecture()),
                    std::to_string(m.manifest().class_names_size()),
                    m.manifest().lineage().imported() ? "-" : absl::StrFormat("%.4f", m.manifest().metrics().test_accuracy()),
                    m.manifest().lineage().imported()            ? "imported"
                    : !m.manifest().lineage().tuning_id().empty() ? absl::StrCat(m.job_id(), " (", m.manifest().lineage().tuning_id(),
                                                                                 " trial ", m.manifest().lineage().trial(), ")")
                                                                  : m.job_id(),
                    Ago(m.created_unix_ms())});
  }
  PrintTable({"NAME", "VERSION", "ARCHITECTURE", "CLASSES", "ACCURACY", "JOB", "CREATED"}, rows);
  return kExitOk;
}

}  // namespace

int JobExitCode(const v1::JobStatus& job) {
  return job.state() == v1::SUCCEEDED ? kExitOk : kExitJobFailed;
}

std::string JobProgress(const v1::JobStatus& job) {
  const auto& s = job.last_step();
  const int epochs = job.spec().training().epochs();
  switch (job.state()) {
    case v1::PENDING: return "waiting";
    case v1::SUCCEEDED: return absl::StrCat(epochs, "/", epochs, " epochs");
    case v1::RUNNING:
      if (s.steps_per_epoch() == 0) return "starting";
      return absl::StrCat("epoch ", s.epoch() + 1, "/", epochs, " step ", s.step(), "/", s.steps_per_epoch());
    default: return absl::StrCat(job.epochs_size(), "/", epochs, " epochs");
  }
}

void AddClusterCommands(CLI::App& app, const GlobalOptions& global) {
  app.add_subcommand("status", "Nodes (role, state, resources, heartbeat, job and rank) and active jobs")
      ->callback([&global] { throw CLI::RuntimeError(Status(global)); });

  auto limit = std::make_shared<int>(20);
  auto* jobs = app.add_subcommand("jobs", "Recent training jobs, newest first");
  jobs->add_option("--limit", *limit, "How many")->check(CLI::Range(1, 10000))->capture_default_str();
  jobs->callback([&global, limit] { throw CLI::RuntimeError(Jobs(global, *limit)); });

  auto id = std::make_shared<std::string>();
  auto* job = app.add_subcommand("job", "One job: spec, state, ranks and per-epoch metric history");
  job->add_option("id", *id, "Job id (see kennelctl jobs)")->required();
  job->callback([&global, id] { throw CLI::RuntimeError(Job(global, *id)); });

  auto cancel_id = std::make_shared<std::string>();
  auto* cancel = app.add_subcommand("cancel", "Cancel a pending or running job");
  cancel->add_option("id", *cancel_id, "Job id")->required();
  cancel->callback([&global, cancel_id] { throw CLI::RuntimeError(Cancel(global, *cancel_id)); });

  auto resume_id = std::make_shared<std::string>();
  auto* resume = app.add_subcommand(
      "resume", "Run a failed job again from its newest checkpoint (watch it with `kennelctl job ID`)");
  resume->add_option("id", *resume_id, "Job id")->required();
  resume->callback([&global, resume_id] { throw CLI::RuntimeError(Resume(global, *resume_id)); });

  auto model = std::make_shared<std::string>();
  auto* models = app.add_subcommand("models", "Registered model versions with their metrics");
  models->add_option("name", *model, "Only this model");
  models->callback([&global, model] { throw CLI::RuntimeError(Models(global, *model)); });
}

}  // namespace kennel::cli
