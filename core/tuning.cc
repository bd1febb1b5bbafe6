#include "core/tuning.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/job_spec.h"
#include "core/model_spec.h"
#include "core/status_macros.h"
#include "google/protobuf/descriptor.h"

namespace kennel::core {
namespace {

namespace v1 = kennel::v1;
using google::protobuf::FieldDescriptor;

constexpr int kDefaultReductionFactor = 3;
// Stands for a non-finite objective: worse than any real one, and still finite so ASHA's
// quantile arithmetic stays finite.
constexpr double kWorstLoss = 1e300;

// Fields the tuner sets itself.
bool Reserved(const std::string& field) { return field == "epochs" || field == "seed"; }

const FieldDescriptor* TrainingField(const std::string& name) {
  return v1::TrainingSpec::descriptor()->FindFieldByName(name);
}

bool IsInteger(const FieldDescriptor* f) {
  return f->cpp_type() == FieldDescriptor::CPPTYPE_INT32 || f->cpp_type() == FieldDescriptor::CPPTYPE_INT64 ||
         f->cpp_type() == FieldDescriptor::CPPTYPE_UINT32 || f->cpp_type() == FieldDescriptor::CPPTYPE_UINT64;
}
bool IsReal(const FieldDescriptor* f) {
  return f->cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE || f->cpp_type() == FieldDescriptor::CPPTYPE_FLOAT;
}

// Sets `field` of `t` from its text, as the field's type reads it.
absl::Status SetField(v1::TrainingSpec& t, const std::string& name, const std::string& text) {
  const FieldDescriptor* f = TrainingField(name);
  if (f == nullptr || f->is_repeated() || Reserved(name)) {
    return absl::InvalidArgumentError(absl::StrCat("'", name, "' is not a training field that can be searched"));
  }
  const auto* r = t.GetReflection();
  const auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not ", what, " (for ", name, ")"));
  };
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT: {
      double v;
      if (!absl::SimpleAtod(text, &v) || !std::isfinite(v)) return bad("a number");
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE) r->SetDouble(&t, f, v);
      else r->SetFloat(&t, f, static_cast<float>(v));
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_INT64:
    case FieldDescriptor::CPPTYPE_UINT32:
    case FieldDescriptor::CPPTYPE_UINT64: {
      int64_t v;
      if (!absl::SimpleAtoi(text, &v)) return bad("an integer");
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_INT32) {
        if (v < INT32_MIN || v > INT32_MAX) return bad("a 32-bit integer");
        r->SetInt32(&t, f, static_cast<int32_t>(v));
      } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_INT64) {
        r->SetInt64(&t, f, v);
      } else {
        if (v < 0) return bad("a non-negative integer");
        if (f->cpp_type() == FieldDescriptor::CPPTYPE_UINT32) r->SetUInt32(&t, f, static_cast<uint32_t>(v));
        else r->SetUInt64(&t, f, static_cast<uint64_t>(v));
      }
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_BOOL:
      if (text != "true" && text != "false") return bad("true or false");
      r->SetBool(&t, f, text == "true");
      return absl::OkStatus();
    case FieldDescriptor::CPPTYPE_ENUM: {
      const auto* value = f->enum_type()->FindValueByName(text);
      if (value == nullptr || value->number() == 0) {
        std::string names;
        for (int i = 1; i < f->enum_type()->value_count(); ++i) {
          absl::StrAppend(&names, i > 1 ? ", " : "", f->enum_type()->value(i)->name());
        }
        return bad(absl::StrCat("one of ", names));
      }
      r->SetEnum(&t, f, value);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_STRING:
      r->SetString(&t, f, text);
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(absl::StrCat("'", name, "' is not a training field that can be searched"));
  }
}

// NormalizeJobSpec, except that a model without num_classes keeps 0: the coordinator counts
// the dataset's classes for each trial's job, as for any job submitted without them.
absl::StatusOr<v1::JobSpec> NormalizeTrialJob(v1::JobSpec job) {
  const bool classes_from_data = job.model().num_classes() == 0;
  if (classes_from_data) job.mutable_model()->set_num_classes(1);
  ASSIGN_OR_RETURN(job, NormalizeJobSpec(std::move(job)));
  if (classes_from_data) job.mutable_model()->set_num_classes(0);
  return job;
}

std::string RealText(double v) { return absl::StrFormat("%.4g", v); }

std::string IntText(double v) { return absl::StrCat(static_cast<int64_t>(std::llround(v))); }

absl::Status CheckDimension(const v1::SearchDimension& d) {
  const std::string where = absl::StrCat("search dimension '", d.field(), "': ");
  const FieldDescriptor* f = TrainingField(d.field());
  if (d.field().empty()) return absl::InvalidArgumentError("a search dimension has no field");
  if (f == nullptr || f->is_repeated() || f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    return absl::InvalidArgumentError(absl::StrCat(where, "not a training field (e.g. learning_rate, batch_size, momentum, weight_decay, optimizer)"));
  }
  if (Reserved(d.field())) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, d.field() == "epochs" ? "the epochs a trial trains are the trial job's (ASHA stops trials early)"
                                     : "each trial's seed is the tuning seed plus its number"));
  }
  switch (d.kind()) {
    case v1::SearchDimension::UNIFORM:
    case v1::SearchDimension::LOG_UNIFORM:
    case v1::SearchDimension::INT_UNIFORM: {
      if (!std::isfinite(d.min()) || !std::isfinite(d.max())) return absl::InvalidArgumentError(absl::StrCat(where, "the range's ends must be finite"));
      if (!(d.min() < d.max())) {
        return absl::InvalidArgumentError(absl::StrFormat("%sthe range [%g, %g] is empty: min must be below max", where, d.min(), d.max()));
      }
      if (d.kind() == v1::SearchDimension::LOG_UNIFORM && d.min() <= 0) {
        return absl::InvalidArgumentError(absl::StrFormat("%sa log-uniform range must be above 0; [%g, %g] is not", where, d.min(), d.max()));
      }
      if (d.kind() == v1::SearchDimension::INT_UNIFORM) {
        if (!IsInteger(f)) return absl::InvalidArgumentError(absl::StrCat(where, "an integer range for a field that is not an integer"));
        if (d.min() != std::floor(d.min()) || d.max() != std::floor(d.max())) {
          return absl::InvalidArgumentError(absl::StrFormat("%san integer range needs integer ends, not [%g, %g]", where, d.min(), d.max()));
        }
      } else if (!IsReal(f)) {
        return absl::InvalidArgumentError(absl::StrCat(where, "a real range for a field that is not a number; use an integer range or choices"));
      }
      if (!d.choices().empty()) return absl::InvalidArgumentError(absl::StrCat(where, "a range takes no choices"));
      return absl::OkStatus();
    }
    case v1::SearchDimension::CHOICE: {
      if (d.choices().empty()) return absl::InvalidArgumentError(absl::StrCat(where, "no choices"));
      std::set<std::string> seen;
      for (const auto& c : d.choices()) {
        if (!seen.insert(c).second) return absl::InvalidArgumentError(absl::StrCat(where, "'", c, "' is a choice twice"));
      }
      return absl::OkStatus();
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat(where, "no kind (uniform, log-uniform, integer or choice)"));
  }
}

}  // namespace

absl::StatusOr<v1::TuningSpec> NormalizeTuningSpec(v1::TuningSpec spec) {
  if (spec.strategy() == v1::TUNING_STRATEGY_UNSPECIFIED) spec.set_strategy(v1::ASHA);
  if (spec.objective() == v1::TUNING_OBJECTIVE_UNSPECIFIED) spec.set_objective(v1::MAXIMIZE_EVAL_ACCURACY);
  if (spec.parallelism() == 0) spec.set_parallelism(1);
  if (spec.min_epochs() == 0) spec.set_min_epochs(1);
  if (spec.reduction_factor() == 0) spec.set_reduction_factor(kDefaultReductionFactor);
  if (spec.name().empty()) return absl::InvalidArgumentError("a tuning job needs a name");
  if (absl::Status s = ValidateModelName(spec.name()); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("the tuning job's name (its best model is registered under it): ", s.message()));
  }
  // Trials are named "<name>-trial-<n>" (TrialJob); the name checked here is the model's.
  spec.mutable_trial()->set_name(spec.name());
  if (spec.parallelism() < 0) return absl::InvalidArgumentError("parallelism must be at least 1");
  if (spec.max_trials() < 0 || spec.max_trial_epochs() < 0 || spec.max_seconds() < 0) {
    return absl::InvalidArgumentError("budget limits cannot be negative");
  }
  if (spec.max_trials() == 0 && spec.max_trial_epochs() == 0 && spec.max_seconds() == 0) {
    return absl::InvalidArgumentError("a tuning job needs a budget: trials, trial-epochs or seconds");
  }
  if (spec.space().empty()) return absl::InvalidArgumentError("the search space is empty: give at least one dimension");
  auto job = NormalizeTrialJob(spec.trial());
  if (!job.ok()) return absl::InvalidArgumentError(absl::StrCat("the trial job: ", job.status().message()));
  *spec.mutable_trial() = *std::move(job);
  const int epochs = spec.trial().training().epochs();
  if (spec.strategy() == v1::ASHA) {
    if (spec.min_epochs() < 0 || spec.min_epochs() > epochs) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ASHA's first rung (%d epochs) must be between 1 and the trial's %d epochs", spec.min_epochs(), epochs));
    }
    if (spec.reduction_factor() < 2) return absl::InvalidArgumentError("ASHA's reduction factor must be at least 2");
  }
  const int first_rung = spec.strategy() == v1::ASHA ? spec.min_epochs() : epochs;
  if (spec.max_trial_epochs() > 0 && spec.max_trial_epochs() < first_rung) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a budget of %d trial-epochs is less than one trial's first %s (%d epochs)", spec.max_trial_epochs(),
        spec.strategy() == v1::ASHA ? "rung" : "run", first_rung));
  }
  std::set<std::string> fields;
  for (const auto& d : spec.space()) {
    RETURN_IF_ERROR(CheckDimension(d));
    if (!fields.insert(d.field()).second) {
      return absl::InvalidArgumentError(absl::StrCat("search dimension '", d.field(), "' is given twice"));
    }
    // Each end of a range and each choice must make a job that would be accepted.
    std::vector<std::string> values;
    if (d.kind() == v1::SearchDimension::CHOICE) {
      values.assign(d.choices().begin(), d.choices().end());
    } else if (d.kind() == v1::SearchDimension::INT_UNIFORM) {
      values = {IntText(d.min()), IntText(d.max())};
    } else {
      values = {RealText(d.min()), RealText(d.max())};
    }
    for (const auto& v : values) {
      v1::JobSpec trial = spec.trial();
      RETURN_IF_ERROR(SetField(*trial.mutable_training(), d.field(), v));
      auto checked = NormalizeTrialJob(trial);
      if (!checked.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("search dimension '", d.field(), "': the value ", v,
                                                       " makes a job that is refused: ", checked.status().message()));
      }
    }
  }
  return spec;
}

TrialParams SampleTrial(const v1::TuningSpec& spec, int number) {
  std::seed_seq seq{static_cast<uint32_t>(spec.seed()), static_cast<uint32_t>(spec.seed() >> 32),
                    static_cast<uint32_t>(number)};
  std::mt19937_64 gen(seq);
  // Drawn by hand from 53 random bits, not by <random>'s distributions, whose results the
  // standard leaves to each library: a recorded search samples the same on every build.
  auto unit = [&gen] { return static_cast<double>(gen() >> 11) * 0x1.0p-53; };  // [0, 1)
  TrialParams params;
  for (const auto& d : spec.space()) {
    switch (d.kind()) {
      case v1::SearchDimension::UNIFORM:
        params[d.field()] = RealText(d.min() + unit() * (d.max() - d.min()));
        break;
      case v1::SearchDimension::LOG_UNIFORM:
        params[d.field()] = RealText(std::exp(std::log(d.min()) + unit() * (std::log(d.max()) - std::log(d.min()))));
        break;
      case v1::SearchDimension::INT_UNIFORM: {
        const double span = d.max() - d.min() + 1;
        params[d.field()] = IntText(d.min() + std::min(span - 1, std::floor(unit() * span)));
        break;
      }
      case v1::SearchDimension::CHOICE: {
        const int n = d.choices_size();
        params[d.field()] = d.choices(std::min(n - 1, static_cast<int>(unit() * n)));
        break;
      }
      default:
        break;
    }
  }
  return params;
}

absl::StatusOr<v1::JobSpec> TrialJob(const v1::TuningSpec& spec, int number, const TrialParams& params) {
  v1::JobSpec job = spec.trial();
  job.set_name(absl::StrCat(spec.name(), "-trial-", number));
  for (const auto& [field, value] : params) RETURN_IF_ERROR(SetField(*job.mutable_training(), field, value));
  job.mutable_training()->set_seed(spec.seed() + static_cast<uint64_t>(number));
  return NormalizeTrialJob(std::move(job));
}

std::vector<int> AshaRungs(const v1::TuningSpec& spec) {
  std::vector<int> rungs;
  if (spec.strategy() != v1::ASHA || spec.min_epochs() < 1 || spec.reduction_factor() < 2) return rungs;
  for (int64_t e = spec.min_epochs(); e < spec.trial().training().epochs(); e *= spec.reduction_factor()) {
    rungs.push_back(static_cast<int>(e));
  }
  return rungs;
}

bool AshaPromotes(const std::vector<double>& recorded, double value, int eta, bool maximize) {
  if (recorded.empty()) return true;
  // Minimising is maximising the negation.
  std::vector<double> before = recorded;
  if (!maximize) {
    for (double& v : before) v = -v;
    value = -value;
  }
  std::sort(before.begin(), before.end());
  const double q = (1.0 - 1.0 / eta) * static_cast<double>(before.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(q));
  const size_t hi = std::min(lo + 1, before.size() - 1);
  const double cutoff = before[lo] + (q - static_cast<double>(lo)) * (before[hi] - before[lo]);
  return value >= cutoff;
}

double ObjectiveValue(const v1::TuningSpec& spec, const v1::EpochMetrics& m) {
  const bool loss = spec.objective() == v1::MINIMIZE_EVAL_LOSS;
  const double v = loss ? m.eval_loss() : m.eval_accuracy();
  // A diverged trial (NaN or infinite loss) ranks below every finite one.
  if (!std::isfinite(v)) return loss ? kWorstLoss : -kWorstLoss;
  return v;
}

bool Maximizes(const v1::TuningSpec& spec) { return spec.objective() != v1::MINIMIZE_EVAL_LOSS; }

}  // namespace kennel::core
