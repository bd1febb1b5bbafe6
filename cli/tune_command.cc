#include "cli/tune_command.h"

#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <memory>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "cli/client.h"
#include "cli/interrupt.h"
#include "cli/train_command.h"
#include "core/files.h"
#include "core/tuning.h"

namespace kennel::cli {
namespace {

struct TuneFlags {
  TrainFlags job;
  std::string spec_file;
  std::string name = "fashion-search";
  std::vector<std::string> space;
  std::string strategy = "asha";
  std::string objective = "accuracy";
  int max_trials = 0;
  int64_t max_trial_epochs = 0;
  std::string max_time;
  int parallelism = 0;
  int min_epochs = 0;
  int reduction_factor = 0;
  uint64_t seed = 0;
  bool wait = false, detach = false;
};

std::string TrialStateName(v1::TrialState s) {
  switch (s) {
    case v1::TRIAL_RUNNING: return "running";
    case v1::TRIAL_COMPLETED: return "completed";
    case v1::TRIAL_STOPPED: return "stopped";
    case v1::TRIAL_FAILED: return "failed";
    case v1::TRIAL_CANCELLED: return "cancelled";
    default: return "-";
  }
}

bool TuningEnded(const v1::TuningStatus& t) {
  return t.state() == v1::SUCCEEDED || t.state() == v1::FAILED || t.state() == v1::CANCELLED;
}

// Seconds from "3600", "90m", "2h30m", "45s".
absl::StatusOr<int64_t> ParseSeconds(const std::string& text) {
  int64_t seconds;
  if (absl::SimpleAtoi(text, &seconds) && seconds > 0) return seconds;
  absl::Duration d;
  if (absl::ParseDuration(text, &d) && d >= absl::Seconds(1)) return absl::ToInt64Seconds(d);
  return absl::InvalidArgumentError(
      absl::StrCat("--max-time '", text, "' is not a duration of a second or more (e.g. 3600, 90m, 2h30m)"));
}

absl::StatusOr<v1::TuningSpec> BuildTuningSpec(TuneFlags& f, const CLI::App& cmd) {
  v1::TuningSpec spec;
  if (!f.spec_file.empty()) {
    auto text = core::ReadFile(f.spec_file, 1 << 20);
    if (!text.ok()) return text.status();
    auto parsed = google::protobuf::util::JsonStringToMessage(*text, &spec);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.spec_file, " is not a TuningSpec in JSON: ", parsed.message().as_string()));
    }
    f.job.base = spec.trial();
  }
  auto given = [&](const char* flag) { return f.spec_file.empty() || cmd.count(flag) > 0; };
  auto job = SpecFromFlags(f.job, cmd);
  if (!job.ok()) return job.status();
  *spec.mutable_trial() = *std::move(job);
  if (given("--name")) spec.set_name(f.name);
  for (const auto& text : f.space) {
    auto d = ParseSearchDimension(text);
    if (!d.ok()) return d.status();
    // A flag replaces the file's dimension of the same field.
    auto* dims = spec.mutable_space();
    dims->erase(std::remove_if(dims->begin(), dims->end(),
                               [&](const v1::SearchDimension& x) { return x.field() == d->field(); }),
                dims->end());
    *spec.add_space() = *d;
  }
  if (given("--strategy")) spec.set_strategy(f.strategy == "random" ? v1::RANDOM_SEARCH : v1::ASHA);
  if (given("--objective")) {
    spec.set_objective(f.objective == "loss" ? v1::MINIMIZE_EVAL_LOSS : v1::MAXIMIZE_EVAL_ACCURACY);
  }
  if (cmd.count("--max-trials") > 0) spec.set_max_trials(f.max_trials);
  if (cmd.count("--max-trial-epochs") > 0) spec.set_max_trial_epochs(f.max_trial_epochs);
  if (cmd.count("--max-time") > 0) {
    auto seconds = ParseSeconds(f.max_time);
    if (!seconds.ok()) return seconds.status();
    spec.set_max_seconds(*seconds);
  }
  if (cmd.count("--parallelism") > 0) spec.set_parallelism(f.parallelism);
  if (cmd.count("--min-epochs") > 0) spec.set_min_epochs(f.min_epochs);
  if (cmd.count("--reduction-factor") > 0) spec.set_reduction_factor(f.reduction_factor);
  if (cmd.count("--seed") > 0) spec.set_seed(f.seed);
  // Without any budget, the seed's 16 trials.
  if (spec.max_trials() == 0 && spec.max_trial_epochs() == 0 && spec.max_seconds() == 0) spec.set_max_trials(16);
  return core::NormalizeTuningSpec(std::move(spec));
}

std::string Value(double v) { return absl::StrFormat("%.4f", v); }

// The leaderboard: best last objective first (as far as each trial got), then by number.
std::vector<std::string> Leaderboard(const v1::TuningStatus& t) {
  const auto& spec = t.spec();
  const bool maximize = core::Maximizes(spec);
  const std::vector<int> rungs = core::AshaRungs(spec);
  std::vector<const v1::Trial*> trials;
  for (const auto& trial : t.trials()) trials.push_back(&trial);
  auto last = [&](const v1::Trial* x) {
    if (x->objective().empty()) return maximize ? -1e300 : 1e300;
    return *x->objective().rbegin();
  };
  std::stable_sort(trials.begin(), trials.end(), [&](const v1::Trial* a, const v1::Trial* b) {
    return maximize ? last(a) > last(b) : last(a) < last(b);
  });
  std::vector<std::string> headers = {"TRIAL", "STATE", "JOB"};
  for (const auto& d : spec.space()) headers.push_back(absl::AsciiStrToUpper(d.field()));
  for (int r : rungs) headers.push_back(absl::StrCat("@", r, r == 1 ? " EPOCH" : " EPOCHS"));
  headers.push_back("EPOCHS");
  headers.push_back(maximize ? "ACCURACY" : "LOSS");
  std::vector<std::vector<std::string>> rows;
  for (const v1::Trial* trial : trials) {
    std::vector<std::string> row = {absl::StrCat(trial->number(), trial->number() == t.best_trial() ? " *" : ""),
                                    TrialStateName(trial->state()),
                                    trial->job_id().empty() ? "-" : trial->job_id()};
    for (const auto& d : spec.space()) {
      auto it = trial->params().find(d.field());
      row.push_back(it == trial->params().end() ? "-" : it->second);
    }
    for (size_t r = 0; r < rungs.size(); ++r) {
      row.push_back(static_cast<int>(r) < trial->rungs_size()
                        ? absl::StrCat(Value(trial->rungs(static_cast<int>(r)).value()),
                                       trial->rungs(static_cast<int>(r)).promoted() ? " up" : " out")
                        : "-");
    }
    row.push_back(absl::StrCat(trial->objective_size(), "/", spec.trial().training().epochs()));
    row.push_back(trial->objective().empty() ? "-" : Value(*trial->objective().rbegin()));
    rows.push_back(std::move(row));
  }
  return FormatTable(headers, rows);
}

std::vector<std::string> Summary(const v1::TuningStatus& t) {
  const auto& spec = t.spec();
  std::vector<std::string> lines;
  lines.push_back(absl::StrFormat("%s %s: %s, %s (%s)", t.id(), spec.name(),
                                  spec.strategy() == v1::ASHA ? absl::StrFormat("ASHA (eta %d)", spec.reduction_factor())
                                                              : "random search",
                                  Lower(v1::JobState_Name(t.state())), t.message()));
  std::string budget = absl::StrCat("trials ", t.trials_size(), spec.max_trials() > 0 ? absl::StrCat("/", spec.max_trials()) : "",
                                    ", trial-epochs ", t.trial_epochs(),
                                    spec.max_trial_epochs() > 0 ? absl::StrCat("/", spec.max_trial_epochs()) : "",
                                    ", trial time ", absl::FormatDuration(absl::Seconds(static_cast<int64_t>(t.trial_seconds()))));
  if (spec.max_seconds() > 0) absl::StrAppend(&budget, ", wall-time budget ", absl::FormatDuration(absl::Seconds(spec.max_seconds())));
  lines.push_back(budget);
  if (t.best_trial() > 0) {
    lines.push_back(absl::StrCat("best: trial ", t.best_trial(), ", ", core::Maximizes(spec) ? "eval accuracy " : "eval loss ",
                                 Value(t.best_objective()),
                                 t.model_version() > 0 ? absl::StrCat("; model ", t.model_name(), " version ", t.model_version(),
                                                                      " (kennelctl deploy ", t.model_name(), ")")
                                                       : ""));
  }
  return lines;
}

void PrintTuning(const v1::TuningStatus& t) {
  for (const auto& line : Summary(t)) std::cout << line << "\n";
  std::cout << "\n";
  if (t.trials().empty()) {
    std::cout << "(no trials yet)\n";
    return;
  }
  for (const auto& line : Leaderboard(t)) std::cout << line << "\n";
}

int ExitCodeOf(const v1::TuningStatus& t) { return t.state() == v1::SUCCEEDED ? kExitOk : kExitJobFailed; }

absl::StatusOr<v1::TuningStatus> GetTuning(v1::Admin::Stub& stub, const GlobalOptions& global, const std::string& id) {
  v1::GetTuningRequest request;
  request.set_tuning_id(id);
  v1::TuningStatus t;
  grpc::Status rpc = stub.GetTuning(Context().get(), request, &t);
  if (!rpc.ok()) return RpcError(rpc, Peer::kCoordinator, global.coordinator);
  return t;
}

// Follows a search until it ends: on a terminal the leaderboard redrawn in place, otherwise a
// line per trial that starts or ends. Ctrl-C detaches.
int Follow(const GlobalOptions& global, const std::string& id, bool quiet) {
  auto stub = AdminStub(global.coordinator);
  const bool tty = ::isatty(STDOUT_FILENO) != 0 && !global.json();
  const InterruptWatch ctrl_c;
  int drawn = 0;
  std::map<int, v1::TrialState> seen;
  v1::TuningStatus t;
  while (true) {
    auto got = GetTuning(*stub, global, id);
    if (!got.ok()) {
      if (got.status().code() != absl::StatusCode::kUnavailable) {
        return Fail(got.status());
      }
      // The coordinator restarting: the search continues there; ask again.
    } else {
      t = *std::move(got);
      if (!quiet && tty) {
        if (drawn > 0) std::cout << "\033[" << drawn << "A\033[J";
        std::vector<std::string> lines = Summary(t);
        lines.push_back("");
        for (auto& l : Leaderboard(t)) lines.push_back(std::move(l));
        for (const auto& l : lines) std::cout << l << "\n";
        std::cout << std::flush;
        drawn = static_cast<int>(lines.size());
      } else if (!quiet) {
        for (const auto& trial : t.trials()) {
          auto it = seen.find(trial.number());
          if (it != seen.end() && it->second == trial.state()) continue;
          seen[trial.number()] = trial.state();
          std::vector<std::string> params;
          for (const auto& d : t.spec().space()) params.push_back(absl::StrCat(d.field(), "=", trial.params().at(d.field())));
          std::cerr << "trial " << trial.number() << " " << TrialStateName(trial.state()) << " ("
                    << absl::StrJoin(params, " ") << ")"
                    << (trial.objective().empty() ? "" : absl::StrCat(": ", Value(*trial.objective().rbegin()), " after ",
                                                                      trial.objective_size(), " epochs"))
                    << (trial.state() == v1::TRIAL_RUNNING || trial.message().empty() ? "" : absl::StrCat(" - ", trial.message()))
                    << "\n";
        }
      }
      if (TuningEnded(t)) break;
    }
    for (int i = 0; i < 10 && !ctrl_c.interrupted(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (ctrl_c.interrupted()) {
      std::cerr << "\ndetached; " << id << " keeps running (kennelctl tune status " << id << ")\n";
      return kExitOk;
    }
  }
  if (global.json()) {
    PrintJson(ProtoToJson(t));
  } else if (!tty || quiet) {
    PrintTuning(t);
  }
  return ExitCodeOf(t);
}

int Tune(TuneFlags& f, const CLI::App& cmd, const GlobalOptions& global) {
  auto spec = BuildTuningSpec(f, cmd);
  if (!spec.ok()) return Fail(spec.status());
  auto stub = AdminStub(global.coordinator);
  v1::SubmitTuningRequest request;
  *request.mutable_spec() = *spec;
  v1::TuningStatus t;
  grpc::Status rpc = stub->SubmitTuning(Context(600).get(), request, &t);
  if (!rpc.ok()) return Fail(RpcError(rpc, Peer::kCoordinator, global.coordinator));
  if (f.detach) {
    if (global.json()) PrintJson(ProtoToJson(t));
    else std::cout << t.id() << "\n";
    return kExitOk;
  }
  std::cerr << "submitted " << t.id() << ": " << t.spec().name() << ", "
            << (t.spec().strategy() == v1::ASHA ? "ASHA" : "random search") << " over " << t.spec().space_size()
            << " hyperparameters, " << t.spec().parallelism() << " trials at a time\n";
  return Follow(global, t.id(), f.wait || global.json());
}

int StatusCommand(const GlobalOptions& global, const std::string& id, bool watch, int limit) {
  auto stub = AdminStub(global.coordinator);
  if (!id.empty()) {
    if (watch) return Follow(global, id, false);
    auto t = GetTuning(*stub, global, id);
    if (!t.ok()) return Fail(t.status());
    if (global.json()) PrintJson(ProtoToJson(*t));
    else PrintTuning(*t);
    return kExitOk;
  }
  v1::ListTuningsRequest request;
  request.set_limit(limit);
  v1::ListTuningsResponse response;
  grpc::Status rpc = stub->ListTunings(Context().get(), request, &response);
  if (!rpc.ok()) return Fail(RpcError(rpc, Peer::kCoordinator, global.coordinator));
  if (global.json()) {
    PrintJson(ProtoToJson(response));
    return kExitOk;
  }
  if (response.tunings().empty()) {
    std::cout << "(no tuning jobs)\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& t : response.tunings()) {
    rows.push_back({t.id(), t.spec().name(), t.spec().strategy() == v1::ASHA ? "asha" : "random",
                    Lower(v1::JobState_Name(t.state())), absl::StrCat(t.trials_size()), absl::StrCat(t.trial_epochs()),
                    t.best_trial() > 0 ? absl::StrCat(t.best_trial(), ": ", Value(t.best_objective())) : "-",
                    t.model_version() > 0 ? absl::StrCat(t.model_name(), ":", t.model_version()) : "-",
                    Ago(t.created_unix_ms())});
  }
  PrintTable({"ID", "NAME", "STRATEGY", "STATE", "TRIALS", "TRIAL-EPOCHS", "BEST", "MODEL", "CREATED"}, rows);
  return kExitOk;
}

int CancelCommand(const GlobalOptions& global, const std::string& id) {
  auto stub = AdminStub(global.coordinator);
  v1::GetTuningRequest request;
  request.set_tuning_id(id);
  v1::TuningStatus t;
  grpc::Status rpc = stub->CancelTuning(Context().get(), request, &t);
  if (!rpc.ok()) return Fail(RpcError(rpc, Peer::kCoordinator, global.coordinator));
  if (global.json()) PrintJson(ProtoToJson(t));
  else std::cout << t.id() << " cancelled: " << t.message() << "\n";
  return kExitOk;
}

}  // namespace

absl::StatusOr<v1::SearchDimension> ParseSearchDimension(const std::string& text) {
  const auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--space '", text, "': ", why,
        " (forms: FIELD=log:MIN:MAX, FIELD=uniform:MIN:MAX, FIELD=int:MIN:MAX, FIELD=choice:A,B,C)"));
  };
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0) return bad("no FIELD=");
  v1::SearchDimension d;
  d.set_field(text.substr(0, eq));
  const std::string rest = text.substr(eq + 1);
  const size_t colon = rest.find(':');
  if (colon == std::string::npos) return bad("no kind");
  const std::string kind = Lower(rest.substr(0, colon));
  const std::string args = rest.substr(colon + 1);
  if (kind == "choice") {
    d.set_kind(v1::SearchDimension::CHOICE);
    for (absl::string_view c : absl::StrSplit(args, ',')) {
      if (c.empty()) return bad("an empty choice");
      d.add_choices(std::string(c));
    }
    return d;
  }
  if (kind == "log") d.set_kind(v1::SearchDimension::LOG_UNIFORM);
  else if (kind == "uniform") d.set_kind(v1::SearchDimension::UNIFORM);
  else if (kind == "int") d.set_kind(v1::SearchDimension::INT_UNIFORM);
  else return bad(absl::StrCat("unknown kind '", kind, "'"));
  std::vector<std::string> ends = absl::StrSplit(args, ':');
  double lo, hi;
  if (ends.size() != 2 || !absl::SimpleAtod(ends[0], &lo) || !absl::SimpleAtod(ends[1], &hi)) {
    return bad("a range is MIN:MAX, two numbers");
  }
  d.set_min(lo);
  d.set_max(hi);
  return d;
}

void AddTuneCommand(CLI::App& app, const GlobalOptions& global) {
  auto f = std::make_shared<TuneFlags>();
  f->job.name = "";  // The tuning's --name names the model.
  f->job.world_size = 1;
  f->job.epochs = 9;
  CLI::App* cmd = app.add_subcommand(
      "tune",
      "Search hyperparameters: each trial an ordinary training job (the flags of `kennelctl train`) with "
      "the searched fields sampled, scheduled on free trainers. ASHA (default) judges trials after "
      "--min-epochs * eta^k epochs and stops those not in the top 1/eta at once; random search trains "
      "every trial fully. The best trial's model is registered under --name, ready for `kennelctl "
      "deploy`. Example: kennelctl tune --space learning_rate=log:1e-3:1e-1 --space "
      "batch_size=choice:32,64,128,256 --space momentum=uniform:0.5:0.99 --max-trials 16");
  AddJobFlags(*cmd, f->job);
  // The job's --name becomes the search's (trials are named NAME-trial-N).
  cmd->get_option("--name")->description("Name of the search; its best model is registered under it, each trial's as NAME-trial-N")
      ->default_str("fashion-search");
  cmd->add_option("--spec", f->spec_file,
                  "TuningSpec as JSON (name, trial: a JobSpec, space, strategy, budget...); flags given override it")
      ->check(CLI::ExistingFile);
  cmd->add_option("--space", f->space,
                  "A searched TrainingSpec field, repeatable: FIELD=log:MIN:MAX, FIELD=uniform:MIN:MAX, "
                  "FIELD=int:MIN:MAX or FIELD=choice:A,B,C (e.g. learning_rate=log:1e-3:1e-1)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--strategy", f->strategy, "asha or random")->check(CLI::IsMember({"asha", "random"}))->capture_default_str();
  cmd->add_option("--objective", f->objective, "accuracy (eval accuracy, maximized) or loss (eval loss, minimized)")
      ->check(CLI::IsMember({"accuracy", "loss"}))->capture_default_str();
  cmd->add_option("--max-trials", f->max_trials, "Budget: trials to start (default 16 when no budget is given)")
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--max-trial-epochs", f->max_trial_epochs, "Budget: epochs trained by all trials together")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  cmd->add_option("--max-time", f->max_time, "Budget: wall time (3600, 90m, 2h); running trials stop when it ends");
  cmd->add_option("--parallelism", f->parallelism, "Trials at once (default 1)")->check(CLI::Range(1, 10000));
  cmd->add_option("--min-epochs", f->min_epochs, "ASHA: epochs before the first judgement (default 1)")->check(CLI::Range(1, 10000));
  cmd->add_option("--reduction-factor", f->reduction_factor, "ASHA: eta, the fraction 1/eta goes on at each rung (default 3)")
      ->check(CLI::Range(2, 1000));
  cmd->get_option("--seed")->description("Seed for sampling; trial N trains with seed + N, so any trial re-runs exactly (default 0)");
  cmd->add_flag("--wait", f->wait, "Block until the search ends without a live view (for scripts)");
  cmd->add_flag("--detach", f->detach, "Print the tuning job's id and return at once");

  auto status_id = std::make_shared<std::string>();
  auto watch = std::make_shared<bool>(false);
  auto limit = std::make_shared<int>(50);
  CLI::App* status = cmd->add_subcommand("status", "One search's leaderboard (params, metric per rung, state), or every search");
  status->add_option("id", *status_id, "Tuning job id (tune-N); none: list the searches");
  status->add_flag("--watch", *watch, "Redraw the leaderboard until the search ends");
  status->add_option("--limit", *limit, "Searches to list")->check(CLI::Range(1, 10000))->capture_default_str();
  status->callback([status_id, watch, limit, &global] {
    throw CLI::RuntimeError(StatusCommand(global, *status_id, *watch, *limit));
  });
  auto cancel_id = std::make_shared<std::string>();
  CLI::App* cancel = cmd->add_subcommand("cancel", "Stop a search's trials; the best finished trial is still registered");
  cancel->add_option("id", *cancel_id, "Tuning job id (tune-N)")->required();
  cancel->callback([cancel_id, &global] { throw CLI::RuntimeError(CancelCommand(global, *cancel_id)); });
  cmd->callback([f, cmd, &global] {
    // The seed flag lives in the job flags; a search's seed is the sampling seed.
    if (cmd->count("--seed") > 0) f->seed = f->job.seed.value_or(0);
    f->job.seed.reset();
    if (cmd->count("--name") > 0) f->name = f->job.name;
    throw CLI::RuntimeError(Tune(*f, *cmd, global));
  });
}

}  // namespace kennel::cli
