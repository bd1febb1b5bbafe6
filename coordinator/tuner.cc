#include "coordinator/tuner.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/logging.h"
#include "core/status_macros.h"
#include "core/tuning.h"
#include "google/protobuf/util/message_differencer.h"

namespace kennel::coordinator {
namespace {

namespace v1 = kennel::v1;

class ClusterRunner : public TrialRunner {
 public:
  ClusterRunner(Cluster* cluster, ArtifactStore* artifacts) : cluster_(cluster), artifacts_(artifacts) {}
  absl::StatusOr<v1::JobStatus> Submit(v1::JobSpec spec) override { return cluster_->SubmitJob(std::move(spec)); }
  absl::StatusOr<v1::JobStatus> Get(const std::string& job_id) override { return cluster_->GetJob(job_id); }
  absl::StatusOr<v1::JobStatus> Cancel(const std::string& job_id) override { return cluster_->CancelJob(job_id); }
  std::vector<v1::JobStatus> Find(const std::string& name, int64_t since_unix_ms) override {
    std::vector<v1::JobStatus> out;
    for (auto& job : cluster_->ListJobs(1 << 20)) {
      if (job.spec().name() == name && job.created_unix_ms() >= since_unix_ms) out.push_back(std::move(job));
    }
    std::reverse(out.begin(), out.end());  // ListJobs is newest first.
    return out;
  }
  absl::StatusOr<v1::ModelVersion> Publish(const std::string& source_name, int64_t source_version,
                                           const std::string& name, const v1::Lineage& lineage,
                                           const std::string& job_id) override {
    return artifacts_->PublishModel(source_name, source_version, name, lineage, job_id);
  }

 private:
  Cluster* cluster_;
  ArtifactStore* artifacts_;
};

bool Ended(v1::JobState s) { return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED; }

std::string ParamsText(const v1::Trial& trial) {
  std::vector<std::string> parts;
  for (const auto& [field, value] : trial.params()) parts.push_back(absl::StrCat(field, "=", value));
  std::sort(parts.begin(), parts.end());  // A proto map has no order of its own.
  return absl::StrJoin(parts, " ");
}

std::string ObjectiveName(const v1::TuningSpec& spec) {
  return core::Maximizes(spec) ? "eval accuracy" : "eval loss";
}

// Whether `a` is a better objective than `b`.
bool Better(const v1::TuningSpec& spec, double a, double b) { return core::Maximizes(spec) ? a > b : a < b; }

}  // namespace

std::unique_ptr<TrialRunner> ClusterTrialRunner(Cluster* cluster, ArtifactStore* artifacts) {
  return std::make_unique<ClusterRunner>(cluster, artifacts);
}

absl::StatusOr<std::unique_ptr<Tuner>> Tuner::Create(TunerOptions options, StateStore* state, TrialRunner* runner) {
  std::unique_ptr<Tuner> tuner(new Tuner(std::move(options), state, runner));
  ASSIGN_OR_RETURN(auto tunings, state->LoadTunings());
  {
    absl::MutexLock lock(&tuner->mu_);
    for (auto& t : tunings) {
      const std::string id = t.id();
      if (t.state() == v1::RUNNING) {
        LOG(INFO) << "tuning " << id << " (" << t.spec().name() << "): continuing after a coordinator restart, "
                  << t.trials_size() << " trials so far";
      }
      tuner->order_.push_back(id);
      tuner->tunings_[id] = std::move(t);
      tuner->next_number_++;
    }
  }
  tuner->thread_ = std::thread([t = tuner.get()] { t->Loop(); });
  return tuner;
}

Tuner::~Tuner() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void Tuner::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), options_.tick)) return;
    }
    Tick();
  }
}

absl::Status Tuner::Save(v1::TuningStatus& t) {
  t.set_updated_unix_ms(absl::ToUnixMillis(options_.now()));
  absl::Status s = state_->SaveTuning(t);
  if (!s.ok()) LOG(ERROR) << "tuning " << t.id() << ": recording its state: " << s;
  return s;
}

absl::StatusOr<v1::TuningStatus> Tuner::Submit(v1::TuningSpec spec) {
  ASSIGN_OR_RETURN(v1::TuningSpec normalized, core::NormalizeTuningSpec(std::move(spec)));
  absl::MutexLock lock(&mu_);
  for (const auto& [other_id, other] : tunings_) {
    // Their trials' jobs and models would share names.
    if (other.state() == v1::RUNNING && other.spec().name() == normalized.name()) {
      return absl::AlreadyExistsError(absl::StrCat("tuning job ", other_id, " named ", normalized.name(),
                                                   " is running; give this one another --name"));
    }
  }
  std::string id;
  do {
    id = absl::StrCat("tune-", next_number_++);
  } while (tunings_.contains(id));
  v1::TuningStatus t;
  t.set_id(id);
  *t.mutable_spec() = std::move(normalized);
  t.set_state(v1::RUNNING);
  t.set_created_unix_ms(absl::ToUnixMillis(options_.now()));
  RETURN_IF_ERROR(Save(t));
  const auto& s = t.spec();
  std::vector<std::string> budget;
  if (s.max_trials() > 0) budget.push_back(absl::StrCat(s.max_trials(), " trials"));
  if (s.max_trial_epochs() > 0) budget.push_back(absl::StrCat(s.max_trial_epochs(), " trial-epochs"));
  if (s.max_seconds() > 0) budget.push_back(absl::StrCat(s.max_seconds(), " s"));
  LOG(INFO) << "tuning " << id << " submitted: " << s.name() << ", " << v1::TuningStrategy_Name(s.strategy())
            << " over " << s.space_size() << " hyperparameters, " << absl::StrJoin(budget, ", ") << ", "
            << s.parallelism() << " at a time, " << s.trial().training().epochs() << " epochs per trial";
  order_.push_back(id);
  v1::TuningStatus& stored = tunings_[id] = std::move(t);
  Advance(stored);
  RETURN_IF_ERROR(Save(stored));  // The first trials' job ids.
  return stored;
}

absl::StatusOr<v1::TuningStatus> Tuner::Get(const std::string& tuning_id) {
  absl::MutexLock lock(&mu_);
  auto it = tunings_.find(tuning_id);
  if (it == tunings_.end()) return absl::NotFoundError(absl::StrCat("no tuning job ", tuning_id));
  return it->second;
}

std::vector<v1::TuningStatus> Tuner::List(int limit) {
  absl::MutexLock lock(&mu_);
  std::vector<v1::TuningStatus> out;
  for (auto it = order_.rbegin(); it != order_.rend() && static_cast<int>(out.size()) < limit; ++it) {
    out.push_back(tunings_[*it]);
  }
  return out;
}

absl::StatusOr<v1::TuningStatus> Tuner::Cancel(const std::string& tuning_id) {
  absl::MutexLock lock(&mu_);
  auto it = tunings_.find(tuning_id);
  if (it == tunings_.end()) return absl::NotFoundError(absl::StrCat("no tuning job ", tuning_id));
  v1::TuningStatus& t = it->second;
  if (Ended(t.state())) {
    return absl::FailedPreconditionError(
        absl::StrCat("tuning job ", tuning_id, " already ended (", v1::JobState_Name(t.state()), ")"));
  }
  for (auto& trial : *t.mutable_trials()) {
    if (trial.state() == v1::TRIAL_RUNNING) Refresh(t, trial);  // Count what it finished.
  }
  for (auto& trial : *t.mutable_trials()) {
    if (trial.state() == v1::TRIAL_RUNNING) {
      StopTrial(t, trial, v1::TRIAL_CANCELLED, "the tuning job was cancelled");
    }
  }
  Finish(t, v1::CANCELLED, "cancelled by an administrator");
  RETURN_IF_ERROR(Save(t));
  return t;
}

void Tuner::Tick() {
  absl::MutexLock lock(&mu_);
  for (const auto& id : order_) {
    v1::TuningStatus& t = tunings_[id];
    if (t.state() != v1::RUNNING) continue;
    const v1::TuningStatus before = t;
    Advance(t);
    if (!google::protobuf::util::MessageDifferencer::Equals(before, t)) Save(t).IgnoreError();
  }
}

void Tuner::StopTrial(v1::TuningStatus& t, v1::Trial& trial, v1::TrialState state, const std::string& why) {
  if (!trial.job_id().empty()) {
    auto job = runner_->Cancel(trial.job_id());
    if (job.ok()) {
      trial.set_job_state(job->state());
    } else if (job.status().code() != absl::StatusCode::kFailedPrecondition) {
      LOG(WARNING) << "tuning " << t.id() << ": cancelling trial " << trial.number() << "'s job "
                   << trial.job_id() << ": " << job.status();
    }
  }
  trial.set_state(state);
  trial.set_message(why);
  trial.set_ended_unix_ms(absl::ToUnixMillis(options_.now()));
  LOG(INFO) << "tuning " << t.id() << ": trial " << trial.number() << " (" << ParamsText(trial) << ") "
            << (state == v1::TRIAL_STOPPED ? "stopped" : "cancelled") << ": " << why;
}

void Tuner::Refresh(v1::TuningStatus& t, v1::Trial& trial) {
  const v1::TuningSpec& spec = t.spec();
  if (trial.job_id().empty()) {
    SubmitTrialJob(t, trial, /*may_exist=*/true);
    if (trial.job_id().empty()) return;
  }
  auto job = runner_->Get(trial.job_id());
  if (!job.ok()) {
    trial.set_state(v1::TRIAL_FAILED);
    trial.set_message(absl::StrCat("its job ", trial.job_id(), " cannot be read: ", job.status().message()));
    trial.set_ended_unix_ms(absl::ToUnixMillis(options_.now()));
    return;
  }
  trial.set_job_state(job->state());
  trial.clear_objective();
  for (const auto& e : job->epochs()) {
    // Epochs are recorded in order, one record each (a resumed epoch replaces its record).
    if (e.epoch() != trial.objective_size()) break;
    trial.add_objective(core::ObjectiveValue(spec, e));
  }
  const std::vector<int> rungs = core::AshaRungs(spec);
  for (size_t r = static_cast<size_t>(trial.rungs_size()); r < rungs.size(); ++r) {
    const int epochs = rungs[r];
    if (trial.objective_size() < epochs) break;
    std::vector<double> recorded;
    for (const auto& other : t.trials()) {
      if (other.number() != trial.number() && other.rungs_size() > static_cast<int>(r)) {
        recorded.push_back(other.rungs(static_cast<int>(r)).value());
      }
    }
    const double value = trial.objective(epochs - 1);
    const bool promoted = core::AshaPromotes(recorded, value, spec.reduction_factor(), core::Maximizes(spec));
    auto* rung = trial.add_rungs();
    rung->set_epochs(epochs);
    rung->set_value(value);
    rung->set_promoted(promoted);
    rung->set_judged_against(static_cast<int32_t>(recorded.size()));
    LOG(INFO) << "tuning " << t.id() << ": trial " << trial.number() << " at rung " << epochs << " epochs: "
              << ObjectiveName(spec) << " " << value << (promoted ? ", promoted" : ", not in the top")
              << " (against " << recorded.size() << " trials recorded there)";
    if (!promoted && !Ended(job->state())) {
      StopTrial(t, trial, v1::TRIAL_STOPPED,
                absl::StrFormat("ASHA stopped it after %d epochs: %s %.4g is not in the top 1/%d of the %d trials "
                                "recorded at that rung",
                                epochs, ObjectiveName(spec), value, spec.reduction_factor(), recorded.size() + 1));
      return;
    }
  }
  switch (job->state()) {
    case v1::SUCCEEDED:
      trial.set_state(v1::TRIAL_COMPLETED);
      trial.set_model_name(job->model_name());
      trial.set_model_version(job->model_version());
      trial.clear_message();
      trial.set_ended_unix_ms(absl::ToUnixMillis(options_.now()));
      LOG(INFO) << "tuning " << t.id() << ": trial " << trial.number() << " (" << ParamsText(trial)
                << ") completed: " << ObjectiveName(spec) << " "
                << (trial.objective().empty() ? 0.0 : *trial.objective().rbegin());
      break;
    case v1::FAILED:
      trial.set_state(v1::TRIAL_FAILED);
      trial.set_message(absl::StrCat("its job failed: ", job->message()));
      trial.set_ended_unix_ms(absl::ToUnixMillis(options_.now()));
      LOG(WARNING) << "tuning " << t.id() << ": trial " << trial.number() << " failed: " << job->message();
      break;
    case v1::CANCELLED:
      trial.set_state(v1::TRIAL_CANCELLED);
      trial.set_message("its job was cancelled outside the tuning job");
      trial.set_ended_unix_ms(absl::ToUnixMillis(options_.now()));
      break;
    default:
      trial.set_message(job->message());  // What it waits for (trainers, a recovery).
      break;
  }
}

void Tuner::SubmitTrialJob(v1::TuningStatus& t, v1::Trial& trial, bool may_exist) {
  core::TrialParams params(trial.params().begin(), trial.params().end());
  auto spec = core::TrialJob(t.spec(), trial.number(), params);
  if (!spec.ok()) {
    trial.set_state(v1::TRIAL_FAILED);
    trial.set_message(absl::StrCat("its job cannot be made: ", spec.status().message()));
    trial.set_ended_unix_ms(absl::ToUnixMillis(options_.now()));
    return;
  }
  // Recorded but maybe not submitted before a restart: the job may exist already.
  auto existing = may_exist ? runner_->Find(spec->name(), trial.started_unix_ms()) : std::vector<v1::JobStatus>{};
  if (!existing.empty()) {
    trial.set_job_id(existing.front().id());
    LOG(INFO) << "tuning " << t.id() << ": trial " << trial.number() << " is job " << trial.job_id()
              << " (submitted before the coordinator restarted)";
    return;
  }
  auto job = runner_->Submit(*std::move(spec));
  if (!job.ok()) {
    trial.set_state(v1::TRIAL_FAILED);
    trial.set_message(absl::StrCat("its job was refused: ", job.status().message()));
    trial.set_ended_unix_ms(absl::ToUnixMillis(options_.now()));
    LOG(WARNING) << "tuning " << t.id() << ": trial " << trial.number() << "'s job was refused: " << job.status();
    return;
  }
  trial.set_job_id(job->id());
  trial.set_job_state(job->state());
  LOG(INFO) << "tuning " << t.id() << ": trial " << trial.number() << " (" << ParamsText(trial) << ", seed "
            << trial.seed() << ") submitted as " << job->id();
}

void Tuner::StartTrial(v1::TuningStatus& t, int number) {
  v1::Trial* trial = t.add_trials();
  trial->set_number(number);
  for (const auto& [field, value] : core::SampleTrial(t.spec(), number)) (*trial->mutable_params())[field] = value;
  trial->set_seed(t.spec().seed() + static_cast<uint64_t>(number));
  trial->set_state(v1::TRIAL_RUNNING);
  trial->set_started_unix_ms(absl::ToUnixMillis(options_.now()));
  // On disk before its job exists: after a restart the trial is found again, never lost or
  // run twice.
  Save(t).IgnoreError();
  SubmitTrialJob(t, *trial, /*may_exist=*/false);
}

bool Tuner::EpochsAllowAnother(const v1::TuningStatus& t) const {
  const v1::TuningSpec& spec = t.spec();
  if (spec.max_trial_epochs() == 0) return true;
  const std::vector<int> rungs = core::AshaRungs(spec);
  const int epochs = spec.trial().training().epochs();
  int64_t committed = t.trial_epochs();
  for (const auto& trial : t.trials()) {
    if (trial.state() != v1::TRIAL_RUNNING) continue;
    const int horizon = trial.rungs_size() < static_cast<int>(rungs.size()) ? rungs[trial.rungs_size()] : epochs;
    committed += std::max(0, horizon - trial.objective_size());
  }
  const int first = rungs.empty() ? epochs : rungs.front();
  return committed + first <= spec.max_trial_epochs();
}

void Tuner::UpdateTotals(v1::TuningStatus& t) {
  const int64_t now = absl::ToUnixMillis(options_.now());
  int64_t epochs = 0;
  double seconds = 0;
  for (const auto& trial : t.trials()) {
    epochs += trial.objective_size();
    const int64_t end = trial.ended_unix_ms() > 0 ? trial.ended_unix_ms() : now;
    seconds += static_cast<double>(std::max<int64_t>(0, end - trial.started_unix_ms())) / 1000.0;
  }
  t.set_trial_epochs(epochs);
  t.set_trial_seconds(seconds);
  for (const auto& trial : t.trials()) {
    if (trial.state() != v1::TRIAL_COMPLETED || trial.objective().empty()) continue;
    const double value = *trial.objective().rbegin();
    if (t.best_trial() == 0 || Better(t.spec(), value, t.best_objective())) {
      t.set_best_trial(trial.number());
      t.set_best_objective(value);
    }
  }
}

void Tuner::Advance(v1::TuningStatus& t) {
  const v1::TuningSpec& spec = t.spec();
  for (auto& trial : *t.mutable_trials()) {
    if (trial.state() == v1::TRIAL_RUNNING) Refresh(t, trial);
  }
  UpdateTotals(t);

  // A spec that keeps failing stops before it spends the budget.
  std::vector<const v1::Trial*> ended;
  for (const auto& trial : t.trials()) {
    if (trial.state() != v1::TRIAL_RUNNING) ended.push_back(&trial);
  }
  std::stable_sort(ended.begin(), ended.end(),
                   [](const v1::Trial* a, const v1::Trial* b) { return a->ended_unix_ms() < b->ended_unix_ms(); });
  int failed_in_a_row = 0;
  for (auto it = ended.rbegin(); it != ended.rend() && (*it)->state() == v1::TRIAL_FAILED; ++it) failed_in_a_row++;
  if (failed_in_a_row >= options_.max_consecutive_failures) {
    const std::string last = (*ended.rbegin())->message();
    for (auto& trial : *t.mutable_trials()) {
      if (trial.state() == v1::TRIAL_RUNNING) StopTrial(t, trial, v1::TRIAL_CANCELLED, "the tuning job failed");
    }
    Finish(t, v1::FAILED, absl::StrCat(failed_in_a_row, " trials in a row failed; the last: ", last));
    return;
  }

  // Budget: past the wall time or the trial-epochs, running trials stop.
  const absl::Time now = options_.now();
  const bool out_of_time =
      spec.max_seconds() > 0 && now >= absl::FromUnixMillis(t.created_unix_ms()) + absl::Seconds(spec.max_seconds());
  const bool out_of_epochs = spec.max_trial_epochs() > 0 && t.trial_epochs() >= spec.max_trial_epochs();
  if (out_of_time || out_of_epochs) {
    for (auto& trial : *t.mutable_trials()) {
      if (trial.state() != v1::TRIAL_RUNNING) continue;
      StopTrial(t, trial, v1::TRIAL_CANCELLED,
                out_of_time ? absl::StrCat("the tuning job's ", spec.max_seconds(), " s ran out")
                            : absl::StrCat("the tuning job's ", spec.max_trial_epochs(), " trial-epochs ran out"));
    }
  }

  auto running = [&t] {
    int n = 0;
    for (const auto& trial : t.trials()) n += trial.state() == v1::TRIAL_RUNNING;
    return n;
  };
  while (!out_of_time && running() < spec.parallelism() &&
         (spec.max_trials() == 0 || t.trials_size() < spec.max_trials()) && EpochsAllowAnother(t)) {
    StartTrial(t, t.trials_size() + 1);
    if (t.trials().rbegin()->state() == v1::TRIAL_FAILED) break;  // Counted at the next step.
  }
  UpdateTotals(t);
  if (running() > 0) {
    const int waiting = [&t] {
      int n = 0;
      for (const auto& trial : t.trials()) n += trial.state() == v1::TRIAL_RUNNING && trial.job_state() == v1::PENDING;
      return n;
    }();
    const int n = running();
    t.set_message(absl::StrCat(n, n == 1 ? " trial" : " trials", " running",
                               waiting > 0 ? absl::StrCat(" (", waiting, " waiting for trainers)") : ""));
    return;
  }
  Finish(t, v1::SUCCEEDED,
         out_of_time ? "its wall time ran out" : out_of_epochs ? "its trial-epochs ran out" : "every trial ended");
}

void Tuner::Finish(v1::TuningStatus& t, v1::JobState state, const std::string& why) {
  UpdateTotals(t);
  const v1::Trial* best = nullptr;
  for (const auto& trial : t.trials()) {
    if (trial.number() == t.best_trial()) best = &trial;
  }
  std::string outcome;
  if (best == nullptr) {
    if (state == v1::SUCCEEDED) state = v1::FAILED;
    outcome = "no trial trained all its epochs, so no model was registered";
  } else {
    v1::Lineage lineage;
    lineage.set_tuning_id(t.id());
    lineage.set_trial(best->number());
    *lineage.mutable_hyperparameters() = best->params();
    auto model = runner_->Publish(best->model_name(), best->model_version(), t.spec().name(), lineage, best->job_id());
    if (model.ok()) {
      t.set_model_name(model->name());
      t.set_model_version(model->version());
      outcome = absl::StrFormat("best: trial %d (%s), %s %.4f; model %s version %d", best->number(),
                                ParamsText(*best), ObjectiveName(t.spec()), t.best_objective(), model->name(),
                                model->version());
    } else {
      // The search's results stand; only the registration is missing. Say so.
      state = v1::FAILED;
      outcome = absl::StrFormat("best: trial %d, but registering its model (%s version %d) failed: %s",
                                best->number(), best->model_name(), best->model_version(), model.status().message());
    }
  }
  t.set_state(state);
  t.set_message(absl::StrCat(why, "; ", outcome));
  t.set_ended_unix_ms(absl::ToUnixMillis(options_.now()));
  LOG(INFO) << "tuning " << t.id() << " " << v1::JobState_Name(state) << " after " << t.trials_size() << " trials, "
            << t.trial_epochs() << " trial-epochs: " << t.message();
}

}  // namespace kennel::coordinator
