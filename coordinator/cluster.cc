#include "coordinator/cluster.h"

#include "core/logging.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "coordinator/job_datasets.h"
#include "core/model_spec.h"
#include "core/status_macros.h"

namespace kennel::coordinator {

using v1::JobState;

absl::StatusOr<std::unique_ptr<Cluster>> Cluster::Create(ClusterOptions options, StateStore* state,
                                                         ArtifactStore* artifacts) {
  std::unique_ptr<Cluster> cluster(new Cluster(std::move(options), state, artifacts));
  ASSIGN_OR_RETURN(auto nodes, state->LoadNodes());
  ASSIGN_OR_RETURN(auto jobs, state->LoadJobs());
  {
    absl::MutexLock lock(&cluster->mu_);
    for (auto& status : nodes) {
      // Until a node reconnects it is unknown: shown as dead.
      status.set_state(v1::DEAD);
      status.clear_job_id();
      cluster->nodes_[status.name()].status = std::move(status);
    }
    for (auto& stored : jobs) {
      const std::string id = stored.status.id();
      Job& job = cluster->jobs_[id];
      job.data = std::move(stored);
      cluster->job_order_.push_back(id);
      cluster->next_job_number_++;
      const JobState s = job.data.status.state();
      if (s == v1::SUCCEEDED || s == v1::CANCELLED) cluster->DropCheckpoint(id);  // Left by an older version.
      if (s == v1::RUNNING) {
        // Its trainers may still be training: give them time to register again.
        job.reattach_deadline = cluster->options_.now() + cluster->options_.reattach_timeout;
        cluster->rendezvous_.Open(id, job.data.status.generation());
        job.data.status.set_message(absl::StrCat("coordinator restarted; waiting up to ",
                                                 absl::FormatDuration(cluster->options_.reattach_timeout),
                                                 " for its trainers (", absl::StrJoin(job.data.status.nodes(), ", "),
                                                 ") to register again"));
        cluster->Persist(job, "coordinator restarted while the job ran");
      } else if (s == v1::RECOVERING) {
        job.data.status.set_generation(job.data.status.generation() + 1);
        job.data.status.set_message("coordinator restarted; resuming from the newest checkpoint");
        cluster->Persist(job, "coordinator restarted");
      }
    }
  }
  cluster->writer_->Flush();  // What the restart changed is on disk before anyone is served.
  cluster->scheduler_ = std::thread([c = cluster.get()] { c->SchedulerLoop(); });
  return cluster;
}

Cluster::~Cluster() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  scheduler_.join();
  writer_.reset();  // Writes what is still queued.
}

void Cluster::SchedulerLoop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), options_.tick)) return;
    }
    Tick();
  }
}

bool Cluster::Ended(const Job& job) {
  const JobState s = job.data.status.state();
  return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED;
}

void Cluster::DropCheckpoint(const std::string& job_id) {
  auto freed = artifacts_->DeleteCheckpoint(job_id);
  if (!freed.ok()) {
    LOG(WARNING) << "job " << job_id << ": deleting its checkpoint: " << freed.status();
  } else if (*freed > 0) {
    LOG(INFO) << "job " << job_id << ": checkpoint deleted (" << *freed / 1024 << " KiB freed)";
  }
}

void Cluster::Touch(Job& job) {
  job.changes++;
  job.data.status.set_updated_unix_ms(absl::ToUnixMillis(options_.now()));
}

void Cluster::Persist(Job& job, const std::string& event) {
  Touch(job);
  if (!event.empty()) LOG(INFO) << "job " << job.data.status.id() << ": " << event;
  writer_->UpdateJob(job.data.status, event);
}

absl::Status Cluster::PersistChecked(Job& job, const std::string& event) {
  Touch(job);
  if (!event.empty()) LOG(INFO) << "job " << job.data.status.id() << ": " << event;
  return writer_->UpdateJobAndWait(job.data.status, event);
}

void Cluster::AbortRanks(Job& job, int64_t generation, const std::string& reason,
                         const std::string& except_node) {
  v1::CoordinatorMessage abort;
  abort.mutable_abort()->set_job_id(job.data.status.id());
  abort.mutable_abort()->set_generation(generation);
  abort.mutable_abort()->set_reason(reason);
  for (const auto& name : job.data.status.nodes()) {
    auto it = nodes_.find(name);
    if (name != except_node && it != nodes_.end() && it->second.channel) it->second.channel->Send(abort);
  }
}

Cluster::Job* Cluster::FindCurrent(const std::string& job_id, int64_t generation) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second.data.status.generation() != generation ||
      it->second.data.status.state() != v1::RUNNING) {
    return nullptr;
  }
  return &it->second;
}

void Cluster::NodeLost(Node& node, const std::string& why) {
  const std::string name = node.status.name();
  const bool inference = node.status.role() == v1::INFERENCE;
  LOG(WARNING) << (inference ? "inference node " : "trainer ") << name << " lost: " << why;
  node.status.set_state(v1::DEAD);
  node.status.set_detail(absl::StrCat("declared dead: ", why));
  if (node.channel) {
    // The process may be alive (a VM pause, a stall): closing its stream makes it reconnect
    // and register again instead of talking on into a stream nobody reads.
    node.channel->Close(absl::UnavailableError(absl::StrCat("the coordinator declared ", name, " dead (", why,
                                                            "); reconnect and register again")));
  }
  node.channel.reset();
  writer_->SaveNode(node.status);
  Job* job = node.status.job_id().empty() ? nullptr
                                           : FindCurrent(node.status.job_id(), node.status.generation());
  node.status.clear_job_id();
  if (job == nullptr) return;
  RecoverJob(*job, absl::StrCat("trainer ", name, " (rank ", node.status.rank(), ") lost at generation ",
                                job->data.status.generation(), ": ", why),
             name);
}

void Cluster::RecoverJob(Job& job, const std::string& what, const std::string& except_node) {
  auto& status = job.data.status;
  const int64_t old_generation = status.generation();
  const absl::Time now = options_.now();
  while (!job.recovery_times.empty() && now - job.recovery_times.front() > options_.recovery_window) {
    job.recovery_times.pop_front();
  }
  if (static_cast<int>(job.recovery_times.size()) >= options_.max_recoveries) {
    status.set_state(v1::FAILED);
    status.set_message(absl::StrCat(
        what, "; gave up: ", job.recovery_times.size(), " recoveries within ",
        absl::FormatDuration(options_.recovery_window), " (--max_recoveries)",
        artifacts_->HasCheckpoint(status.id())
            ? absl::StrCat("; `kennelctl resume ", status.id(), "` continues from its checkpoint")
            : ""));
    AbortRanks(job, old_generation, status.message(), except_node);
    rendezvous_.Close(job.data.status.id());
    Persist(job, status.message());
    return;
  }
  job.recovery_times.push_back(now);
  status.set_recoveries(status.recoveries() + 1);
  status.set_state(v1::RECOVERING);
  status.set_generation(old_generation + 1);
  status.set_message(absl::StrCat(what, "; re-forming the group from the newest checkpoint"));
  AbortRanks(job, old_generation, "the group is being re-formed", except_node);
  rendezvous_.Close(job.data.status.id());
  job.finished.clear();
  recovering_since_[status.id()] = what;
  Persist(job, status.message());
}

void Cluster::Tick() {
  absl::MutexLock lock(&mu_);
  if (shutting_down_) return;
  const absl::Time now = options_.now();
  for (auto& [name, node] : nodes_) {
    if (node.channel && now - node.last_heartbeat > options_.heartbeat_timeout) {
      NodeLost(node, absl::StrCat("no heartbeat for ", absl::FormatDuration(now - node.last_heartbeat)));
    }
  }
  CheckReattaching(now);
  Schedule();
}

void Cluster::CheckReattaching(absl::Time now) {
  for (auto& [id, job] : jobs_) {
    if (!job.reattach_deadline.has_value()) continue;
    auto& status = job.data.status;
    if (status.state() != v1::RUNNING) {
      job.reattach_deadline.reset();
      continue;
    }
    std::vector<std::string> missing;
    for (int rank = 0; rank < status.nodes_size(); ++rank) {
      // A rank that finished during the outage is idle now, its part done: not missing.
      if (job.finished.count(rank) > 0) continue;
      const std::string& name = status.nodes(rank);
      auto it = nodes_.find(name);
      if (it == nodes_.end() || !it->second.channel || it->second.status.job_id() != id ||
          it->second.status.generation() != status.generation()) {
        missing.push_back(name);
      }
    }
    if (missing.empty()) {
      job.reattach_deadline.reset();
      status.clear_message();
      Persist(job, absl::StrCat("every rank of generation ", status.generation(),
                                " registered again after the coordinator restart; training went on"));
    } else if (now >= *job.reattach_deadline) {
      job.reattach_deadline.reset();
      RecoverJob(job, absl::StrCat(absl::StrJoin(missing, ", "), " did not register again within ",
                                   absl::FormatDuration(options_.reattach_timeout), " of the coordinator restart"),
                 "");
    }
  }
}

void Cluster::MaybeGrow(Job& job, int64_t finished_epoch) {
  auto& status = job.data.status;
  const auto& spec = status.spec();
  if (status.nodes_size() >= spec.world_size() || finished_epoch + 1 >= spec.training().epochs()) return;
  for (const auto& [id, other] : jobs_) {
    const JobState s = other.data.status.state();
    if (s == v1::PENDING || s == v1::RECOVERING) return;  // Free trainers are theirs first.
  }
  const bool gpu = spec.backend() == "nccl";
  int free = 0;
  for (const auto& [name, node] : nodes_) {
    free += node.channel && node.status.role() == v1::TRAINER && node.status.state() == v1::IDLE &&
            (!gpu || node.status.resources().gpus() > 0);
  }
  if (free == 0) return;
  const int64_t old_generation = status.generation();
  const std::string what = absl::StrCat(
      "growing from ", status.nodes_size(), " to up to ", spec.world_size(), " trainers after epoch ",
      finished_epoch + 1, " (", free, " free)");
  status.set_state(v1::RECOVERING);  // Not a recovery: the window's count is left alone.
  status.set_generation(old_generation + 1);
  status.set_message(what);
  AbortRanks(job, old_generation, "the group grows", "");
  rendezvous_.Close(job.data.status.id());
  job.finished.clear();
  recovering_since_[status.id()] = what;
  Persist(job, what);
}

void Cluster::Schedule() {
  for (const auto& id : job_order_) {
    Job& job = jobs_[id];
    auto& status = job.data.status;
    if (status.state() != v1::PENDING && status.state() != v1::RECOVERING) continue;
    const v1::JobSpec& spec = status.spec();
    const bool gpu = spec.backend() == "nccl";
    std::vector<Node*> free;
    int connected = 0, stopping = 0;
    for (auto& [name, node] : nodes_) {
      if (!node.channel || node.status.role() != v1::TRAINER) continue;
      ++connected;
      if (node.status.job_id() == id) ++stopping;  // Still ending this job's previous generation.
      if (node.status.state() == v1::IDLE && (!gpu || node.status.resources().gpus() > 0)) {
        free.push_back(&node);
      }
    }
    // A new job starts at its full size; a recovering one (elastic) with as few as
    // min_world_size, but only once its previous ranks have stopped, so none is left out.
    const bool recovering = status.state() == v1::RECOVERING;
    // (Jobs stored before elastic training have no min_world_size: never fewer.)
    const int min_world = spec.has_min_world_size() ? std::max(1, spec.min_world_size()) : spec.world_size();
    const int needed = recovering ? min_world : spec.world_size();
    if (static_cast<int>(free.size()) < needed || (recovering && stopping > 0)) {
      const std::string waiting =
          recovering && stopping > 0
              ? absl::StrCat("recovering: waiting for ", stopping, " trainer", stopping == 1 ? "" : "s",
                             " of generation ", status.generation() - 1, " to stop")
              : absl::StrCat(recovering ? "recovering: " : "", "waiting for ", needed,
                             needed < spec.world_size() ? absl::StrCat(" (up to ", spec.world_size(), ")") : "",
                             " free ", gpu ? "GPU " : "", "trainers (", free.size(), " free, ", connected,
                             " connected)");
      // A recovering job says both why it recovers and what it waits for.
      auto cause = recovering_since_.find(id);
      const std::string message = status.state() == v1::RECOVERING && cause != recovering_since_.end()
                                      ? absl::StrCat(cause->second, "; ", waiting)
                                      : waiting;
      if (status.message() != message) {
        status.set_message(message);
        Touch(job);
      }
      continue;  // Later jobs may fit; FIFO among those that can start.
    }
    if (status.generation() == 0) status.set_generation(1);
    const bool resume = artifacts_->HasCheckpoint(id);
    const int world = std::min(static_cast<int>(free.size()), spec.world_size());
    status.clear_nodes();
    job.digests.assign(static_cast<size_t>(world), "");
    job.finished.clear();
    rendezvous_.Open(id, status.generation());  // Before any rank hears of this generation.
    // The shard ledger: this membership trains the rest of the checkpoint's epoch.
    auto* membership = status.add_memberships();
    membership->set_generation(status.generation());
    membership->set_world_size(world);
    membership->set_epoch(resume ? status.checkpoint_epoch() : 0);
    membership->set_epoch_start_sample(resume ? status.checkpoint_epoch_samples() : 0);
    auto cause = recovering_since_.find(id);
    membership->set_reason(cause != recovering_since_.end() ? cause->second : "started");
    for (int rank = 0; rank < world; ++rank) {
      Node& node = *free[static_cast<size_t>(rank)];
      status.add_nodes(node.status.name());
      node.status.set_state(v1::BUSY);
      node.status.set_job_id(id);
      node.status.set_rank(rank);
      node.status.set_generation(status.generation());
      v1::CoordinatorMessage message;
      auto* assign = message.mutable_assign();
      assign->set_job_id(id);
      assign->set_generation(status.generation());
      assign->set_rank(rank);
      assign->set_world_size(world);
      *assign->mutable_spec() = spec;
      *assign->mutable_train() = job.data.train;
      *assign->mutable_eval() = job.data.eval;
      assign->set_resume(resume);
      node.channel->Send(message);
    }
    status.set_state(v1::RUNNING);
    status.clear_message();
    recovering_since_.erase(id);
    Persist(job, absl::StrCat("running generation ", status.generation(), " on ",
                              absl::StrJoin(status.nodes(), ", "),
                              world < spec.world_size() ? absl::StrCat(" (", world, " of ", spec.world_size(), ")") : "",
                              resume ? absl::StrCat(" (resuming at epoch ", status.checkpoint_epoch() + 1, " sample ",
                                                    status.checkpoint_epoch_samples(), ")")
                                     : ""));
  }
}

absl::StatusOr<v1::RegisterAck> Cluster::RegisterTrainer(const v1::Register& request,
                                                         std::shared_ptr<TrainerChannel> channel) {
  if (request.name().empty() || request.name().size() > 128) {
    return absl::InvalidArgumentError("a trainer registers with a name of 1 to 128 characters");
  }
  absl::MutexLock lock(&mu_);
  auto existing = nodes_.find(request.name());
  if (existing != nodes_.end() && existing->second.channel) {
    Node& live = existing->second;
    if (request.incarnation().empty() || request.incarnation() != live.status.incarnation()) {
      // Two processes under one name (identical cloud images default to the same hostname):
      // the one already working keeps it.
      return absl::AlreadyExistsError(absl::StrCat(
          "a node named '", request.name(), "' is already connected (since ",
          absl::FormatTime("%H:%M:%S UTC", live.connected_at, absl::UTCTimeZone()), ", on ",
          live.status.resources().hostname(), "); give this one another --name"));
    }
    // The same process on a new stream: its old stream is stale. What it was running is
    // checked below against the job's current generation, as after any reconnect.
    live.channel->Close(absl::UnavailableError("replaced by a newer stream of the same process"));
    live.channel.reset();
  }
  Node& node = nodes_[request.name()];
  std::vector<v1::CoordinatorMessage> follow_ups;  // Sent after the ack.
  node.status.set_name(request.name());
  node.status.set_incarnation(request.incarnation());
  node.status.clear_detail();
  node.connected_at = options_.now();
  node.status.set_role(request.role() == v1::INFERENCE ? v1::INFERENCE : v1::TRAINER);
  node.status.set_address(request.serving_address());
  *node.status.mutable_resources() = request.resources();
  node.status.set_state(v1::IDLE);
  node.status.clear_job_id();
  node.channel = std::move(channel);
  node.last_heartbeat = options_.now();
  node.status.set_last_heartbeat_unix_ms(absl::ToUnixMillis(node.last_heartbeat));
  if (!request.job_id().empty()) {
    // Still working on something from before a reconnect: busy until it reports idle, and
    // fenced off unless that generation is still the job's current one.
    node.status.set_state(v1::BUSY);
    node.status.set_job_id(request.job_id());
    node.status.set_generation(request.generation());
    Job* job = FindCurrent(request.job_id(), request.generation());
    const auto* ranks = job != nullptr ? &job->data.status.nodes() : nullptr;
    const std::ptrdiff_t rank =
        ranks != nullptr ? std::find(ranks->begin(), ranks->end(), request.name()) - ranks->begin() : 0;
    if (ranks != nullptr && rank < static_cast<std::ptrdiff_t>(ranks->size())) {
      node.status.set_rank(static_cast<int32_t>(rank));
      if (job->reattach_deadline.has_value()) {
        LOG(INFO) << "trainer " << request.name() << " is back with rank " << rank << " of job " << request.job_id()
                  << " generation " << request.generation();
      }
    } else {
      v1::CoordinatorMessage abort;
      abort.mutable_abort()->set_job_id(request.job_id());
      abort.mutable_abort()->set_generation(request.generation());
      abort.mutable_abort()->set_reason("this generation is no longer current");
      follow_ups.push_back(abort);
    }
  }
  // An inference node that restarted (or lost its model) gets the version last deployed to it.
  const std::optional<core::ModelRef> desired_ref = core::ParseModelRef(node.status.desired_model());
  if (node.status.role() == v1::INFERENCE && desired_ref && request.model() != node.status.desired_model()) {
    const std::string& desired = node.status.desired_model();
    v1::CoordinatorMessage deploy;
    deploy.mutable_deploy()->set_name(desired_ref->name);
    deploy.mutable_deploy()->set_version(desired_ref->version);
    follow_ups.push_back(deploy);
    LOG(INFO) << "inference node " << request.name() << " serves '" << request.model() << "'; sending it "
              << desired << ", the version last deployed to it";
  }
  writer_->SaveNode(node.status);
  LOG(INFO) << (node.status.role() == v1::INFERENCE ? "inference node " : "trainer ") << request.name()
            << " registered (" << request.resources().cpu_cores()
            << " cores, " << request.resources().gpus() << " GPUs)";
  v1::RegisterAck ack;
  // Inference nodes report their load at least every 250 ms: the autoscaler's signal.
  const absl::Duration interval = node.status.role() == v1::INFERENCE
                                      ? std::min(options_.heartbeat_interval, absl::Milliseconds(250))
                                      : options_.heartbeat_interval;
  ack.set_heartbeat_interval_ms(static_cast<int32_t>(absl::ToInt64Milliseconds(interval)));
  // The ack goes first: a member acts on (and answers) messages only once registered.
  v1::CoordinatorMessage ack_message;
  *ack_message.mutable_ack() = ack;
  node.channel->Send(ack_message);
  for (const auto& message : follow_ups) node.channel->Send(message);
  return ack;
}

void Cluster::BeginShutdown() {
  absl::MutexLock lock(&mu_);
  shutting_down_ = true;
  // Ending the members' streams lets the server stop at once (they would hold it until its
  // deadline); the members reconnect to the next coordinator.
  for (auto& [name, node] : nodes_) {
    if (node.channel) node.channel->Close(absl::UnavailableError("the coordinator is stopping; reconnect to its successor"));
  }
}

void Cluster::OnTrainerDisconnected(const std::string& name, const TrainerChannel* channel) {
  absl::MutexLock lock(&mu_);
  if (shutting_down_) return;
  auto it = nodes_.find(name);
  if (it == nodes_.end() || it->second.channel.get() != channel) return;
  NodeLost(it->second, "control stream closed");
}

void Cluster::OnTrainerMessage(const std::string& name, const TrainerChannel* channel,
                               const v1::TrainerMessage& message) {
  absl::MutexLock lock(&mu_);
  auto node_it = nodes_.find(name);
  if (node_it == nodes_.end()) return;
  Node& node = node_it->second;
  if (node.channel.get() != channel) return;  // A stale stream: its node was declared dead.
  node.last_heartbeat = options_.now();
  node.status.set_last_heartbeat_unix_ms(absl::ToUnixMillis(node.last_heartbeat));
  switch (message.message_case()) {
    case v1::TrainerMessage::kStep: {
      const auto& m = message.step();
      Job* job = FindCurrent(m.job_id(), m.generation());
      if (job != nullptr && m.rank() == 0) {
        *job->data.status.mutable_last_step() = m.metrics();
        Touch(*job);
      }
      break;
    }
    case v1::TrainerMessage::kEpoch: {
      const auto& m = message.epoch();
      Job* job = FindCurrent(m.job_id(), m.generation());
      if (job == nullptr || m.rank() != 0) break;
      auto* epochs = job->data.status.mutable_epochs();
      // A resumed run may repeat an epoch: keep the newest record of each.
      while (!epochs->empty() && epochs->rbegin()->epoch() >= m.metrics().epoch()) epochs->RemoveLast();
      *epochs->Add() = m.metrics();
      Persist(*job, absl::StrCat("epoch ", m.metrics().epoch() + 1, ": eval accuracy ",
                                 m.metrics().eval_accuracy(), ", ",
                                 static_cast<int64_t>(m.metrics().images_per_second()), " images/s"));
      MaybeGrow(*job, m.metrics().epoch());
      break;
    }
    case v1::TrainerMessage::kFinished: {
      const auto& m = message.finished();
      Job* job = FindCurrent(m.job_id(), m.generation());
      const int world = job != nullptr ? job->data.status.nodes_size() : 0;
      if (job == nullptr || m.rank() < 0 || m.rank() >= world) break;
      // (After a coordinator restart the digests of a job that carried on are not loaded.)
      job->digests.resize(static_cast<size_t>(world));
      job->digests[static_cast<size_t>(m.rank())] = m.param_digest();
      job->finished.insert(m.rank());
      auto& status = job->data.status;
      if (m.rank() == 0 && m.has_model()) {
        status.set_model_name(m.model().name());
        status.set_model_version(m.model().version());
      }
      if (static_cast<int>(job->finished.size()) == world) {
        status.set_state(v1::SUCCEEDED);
        status.clear_message();
        *status.mutable_rank_param_digests() = {job->digests.begin(), job->digests.end()};
        rendezvous_.Close(job->data.status.id());
        Persist(*job, absl::StrCat("succeeded: model ", status.model_name(), " version ",
                                   status.model_version()));
        DropCheckpoint(status.id());
      } else {
        Touch(*job);
      }
      break;
    }
    case v1::TrainerMessage::kFailed: {
      const auto& m = message.failed();
      Job* job = FindCurrent(m.job_id(), m.generation());
      if (job == nullptr) break;  // Stale generation or already handled.
      auto& status = job->data.status;
      std::string culprit;
      if (m.missing_rank() >= 0 && m.missing_rank() < status.nodes_size()) {
        const std::string& missing = status.nodes(m.missing_rank());
        auto lost = nodes_.find(missing);
        if (lost != nodes_.end() && lost->second.channel == nullptr) {
          // The rank it waited for is on a node not connected here (not back since a
          // coordinator restart, or gone before this report): the group's trouble, so the job
          // re-forms rather than fails. The node's own record is left as it is.
          RecoverJob(*job, absl::StrCat("trainer ", missing, " (rank ", m.missing_rank(), ") is not connected; rank ",
                                        m.rank(), " on ", name, " lost it: ", m.error()),
                     name);
          break;
        }
        culprit = absl::StrCat(" [rank ", m.missing_rank(), " is trainer ", missing, "]");
      }
      if (m.cause() == v1::JobFailed::COLLECTIVE) {
        // The group broke (a peer that died before its stream closed here, a network cut):
        // the job can go on from its checkpoint with a re-formed group.
        RecoverJob(*job, absl::StrCat("rank ", m.rank(), " on ", name, ": ", m.error(), culprit), name);
        break;
      }
      status.set_state(v1::FAILED);
      status.set_message(absl::StrCat("rank ", m.rank(), " on ", name, ": ", m.error(), culprit));
      AbortRanks(*job, status.generation(), "another rank failed", name);
      rendezvous_.Close(job->data.status.id());
      Persist(*job, status.message());
      break;
    }
    case v1::TrainerMessage::kCheckpointed: {
      const auto& m = message.checkpointed();
      Job* job = FindCurrent(m.job_id(), m.generation());
      if (job == nullptr) break;
      job->data.status.set_checkpoint_global_step(m.global_step());
      job->data.status.set_checkpoint_epoch(m.epoch());
      job->data.status.set_checkpoint_epoch_samples(m.epoch_samples());
      job->data.status.set_checkpoint_unix_ms(absl::ToUnixMillis(options_.now()));
      Persist(*job, "");
      break;
    }
    case v1::TrainerMessage::kIdle: {
      if (node.status.job_id() == message.idle().job_id() &&
          node.status.generation() == message.idle().generation()) {
        node.status.set_state(v1::IDLE);
        node.status.clear_job_id();
        node.status.set_rank(0);
        node.status.set_generation(0);
        Schedule();
      }
      break;
    }
    case v1::TrainerMessage::kHeartbeat:
      if (node.status.role() == v1::INFERENCE) {
        node.status.set_model(message.heartbeat().model());
        node.status.set_queue_depth(message.heartbeat().queue_depth());
        node.status.set_serving(message.heartbeat().serving());
        node.status.set_draining(message.heartbeat().draining());
        *node.status.mutable_load() = message.heartbeat().load();
      }
      break;
    case v1::TrainerMessage::kDeployed: {
      const auto& d = message.deployed();
      deployments_.OnResult(name, d.name(), d.version(), d.error());
      if (d.error().empty()) node.status.set_model(absl::StrCat(d.name(), ":", d.version()));
      break;
    }
    default:
      break;
  }
}

absl::Status Cluster::CheckCurrentGeneration(const std::string& job_id, int64_t generation) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job ", job_id));
  const auto& status = it->second.data.status;
  if (status.generation() != generation || status.state() != v1::RUNNING) {
    return absl::FailedPreconditionError(absl::StrCat(
        "generation ", generation, " of job ", job_id, " is not current (generation ",
        status.generation(), ", ", v1::JobState_Name(status.state()), ")"));
  }
  return absl::OkStatus();
}

absl::Status Cluster::StoreSet(const std::string& job_id, int64_t generation, const std::string& key,
                               const std::string& value) {
  return rendezvous_.Set(job_id, generation, key, value);
}

absl::StatusOr<std::vector<std::string>> Cluster::StoreGet(const std::string& job_id, int64_t generation,
                                                           const std::vector<std::string>& keys) {
  return rendezvous_.Get(job_id, generation, keys);
}

absl::StatusOr<v1::JobStatus> Cluster::SubmitJob(v1::JobSpec spec) {
  ASSIGN_OR_RETURN(StoredJob stored, PrepareJob(std::move(spec)));  // Slow: outside the lock.
  absl::MutexLock lock(&mu_);
  std::string id;
  do {
    id = absl::StrCat("job-", next_job_number_++);
  } while (jobs_.contains(id));
  stored.status.set_id(id);
  stored.status.set_state(v1::PENDING);
  stored.status.set_created_unix_ms(absl::ToUnixMillis(options_.now()));
  stored.status.set_updated_unix_ms(stored.status.created_unix_ms());
  RETURN_IF_ERROR(state_->CreateJob(stored));
  Job& job = jobs_[id];
  job.data = std::move(stored);
  job_order_.push_back(id);
  LOG(INFO) << "job " << id << " submitted: " << job.data.status.spec().name() << ", world size "
            << job.data.status.spec().world_size() << ", " << job.data.train.samples_size()
            << " training samples";
  Schedule();
  return job.data.status;
}

absl::StatusOr<v1::JobStatus> Cluster::CancelJob(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job ", job_id));
  Job& job = it->second;
  if (Ended(job)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, " already ended (", v1::JobState_Name(job.data.status.state()), ")"));
  }
  const bool running = job.data.status.state() == v1::RUNNING;
  job.data.status.set_state(v1::CANCELLED);
  job.data.status.set_message("cancelled by an administrator");
  if (running) AbortRanks(job, job.data.status.generation(), "job cancelled", "");
  rendezvous_.Close(job.data.status.id());
  if (absl::Status s = PersistChecked(job, "cancelled"); !s.ok()) {
    // The ranks were stopped, but a coordinator restart would bring the job back: say so.
    return absl::Status(s.code(), absl::StrCat("job ", job_id, " was stopped but its cancellation could not be "
                                               "recorded (", s.message(), "); it may run again after a restart"));
  }
  DropCheckpoint(job_id);
  return job.data.status;
}

absl::StatusOr<v1::JobStatus> Cluster::ResumeJob(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job ", job_id));
  Job& job = it->second;
  auto& status = job.data.status;
  if (status.state() != v1::FAILED) {
    return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " is ", v1::JobState_Name(status.state()),
                                                      "; only a FAILED job can be resumed"));
  }
  if (!artifacts_->HasCheckpoint(job_id)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, " failed before its first checkpoint; submit it again instead"));
  }
  const std::string was = status.message();
  status.set_state(v1::RECOVERING);
  status.set_generation(status.generation() + 1);
  job.recovery_times.clear();
  rendezvous_.Close(job.data.status.id());
  job.finished.clear();
  const std::string what = absl::StrCat(
      "resumed by an administrator from its checkpoint",
      status.checkpoint_global_step() > 0 ? absl::StrCat(" at step ", status.checkpoint_global_step()) : "",
      " (it had failed: ", was, ")");
  status.set_message(what);
  recovering_since_[job_id] = what;
  RETURN_IF_ERROR(PersistChecked(job, what));
  Schedule();
  return status;
}

std::pair<int, int> Cluster::CheckpointRunningJobs(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  std::map<std::string, int64_t> asked;  // Job id -> its checkpoint step when asked.
  for (auto& [id, job] : jobs_) {
    auto& status = job.data.status;
    if (status.state() != v1::RUNNING || status.nodes().empty()) continue;
    auto node = nodes_.find(status.nodes(0));
    if (node == nodes_.end() || !node->second.channel) continue;
    v1::CoordinatorMessage message;
    message.mutable_checkpoint()->set_job_id(id);
    message.mutable_checkpoint()->set_generation(status.generation());
    node->second.channel->Send(message);
    asked[id] = status.checkpoint_global_step();
    LOG(INFO) << "job " << id << ": asking rank 0 (" << status.nodes(0) << ") for a checkpoint before stopping";
  }
  auto saved = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    int n = 0;
    for (const auto& [id, step] : asked) {
      const auto& status = jobs_[id].data.status;
      n += status.checkpoint_global_step() != step || status.state() != v1::RUNNING;
    }
    return n;
  };
  auto all_saved = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return saved() == static_cast<int>(asked.size()); };
  if (!asked.empty()) mu_.AwaitWithTimeout(absl::Condition(&all_saved), timeout);
  return {saved(), static_cast<int>(asked.size())};
}

absl::StatusOr<v1::JobStatus> Cluster::GetJob(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job ", job_id));
  return it->second.data.status;
}

std::vector<v1::JobStatus> Cluster::ListJobs(int limit) {
  absl::MutexLock lock(&mu_);
  std::vector<v1::JobStatus> out;
  for (auto it = job_order_.rbegin(); it != job_order_.rend() && static_cast<int>(out.size()) < limit; ++it) {
    out.push_back(jobs_[*it].data.status);
  }
  return out;
}

v1::ClusterStatus Cluster::Status() {
  absl::MutexLock lock(&mu_);
  v1::ClusterStatus out;
  for (const auto& [name, node] : nodes_) *out.add_nodes() = node.status;
  for (const auto& id : job_order_) {
    if (!Ended(jobs_[id])) *out.add_active_jobs() = jobs_[id].data.status;
  }
  return out;
}

absl::StatusOr<std::pair<v1::JobStatus, int64_t>> Cluster::WaitForJobChange(const std::string& job_id,
                                                                            int64_t seen,
                                                                            absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job ", job_id));
  Job* job = &it->second;
  auto changed = [job, seen, this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stop_ || job->changes != seen;
  };
  mu_.AwaitWithTimeout(absl::Condition(&changed), timeout);
  return std::make_pair(job->data.status, job->changes);
}

}  // namespace kennel::coordinator
