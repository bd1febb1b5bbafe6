// The rules of tuning jobs (v1::TuningSpec), shared by kennelctl (which refuses a bad spec
// before sending it) and the coordinator (which runs the search): defaults and validation,
// sampling a trial's hyperparameters, the trial's job, and ASHA's rungs and promotion rule.
// No state and no clock: the coordinator keeps the search's state in its database and asks
// these functions what follows from it.
#ifndef KENNEL_CORE_TUNING_H_
#define KENNEL_CORE_TUNING_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kennel/v1/job.pb.h"
#include "kennel/v1/tuning.pb.h"

namespace kennel::core {

// A trial's hyperparameters: TrainingSpec field name -> value as text (what is recorded, shown
// and applied, so a trial re-runs from its record exactly).
using TrialParams = std::map<std::string, std::string>;

// Fills defaults (strategy ASHA, objective eval accuracy, parallelism 1, min_epochs 1,
// reduction factor 3) and checks everything before anything runs, naming the first problem:
// the trial's job (NormalizeJobSpec), each dimension (a known TrainingSpec field that is not
// epochs or seed, searched once; min < max; 0 < min for log ranges; integers for integer
// fields; choices that parse), every range's ends and every choice as a trial job, and the
// budget (at least one limit; trial-epochs at least one rung). INVALID_ARGUMENT.
absl::StatusOr<kennel::v1::TuningSpec> NormalizeTuningSpec(kennel::v1::TuningSpec spec);

// Trial `number`'s values, drawn from a generator seeded with (spec.seed, number): the same
// spec gives the same trials whatever order they run in. Reals keep 4 significant digits.
TrialParams SampleTrial(const kennel::v1::TuningSpec& spec, int number);

// The trial's job: spec.trial with `params` applied, named "<tuning name>-trial-<number>",
// training seed spec.seed + number. INVALID_ARGUMENT if a value does not apply.
absl::StatusOr<kennel::v1::JobSpec> TrialJob(const kennel::v1::TuningSpec& spec, int number,
                                             const TrialParams& params);

// The epochs after which ASHA judges a trial: min_epochs * eta^k below the trial's epochs
// (RANDOM_SEARCH: none).
std::vector<int> AshaRungs(const kennel::v1::TuningSpec& spec);

// Whether a trial that reached a rung with objective `value` goes on, given the values other
// trials recorded at that rung before it: it must reach their (1 - 1/eta) quantile (linearly
// interpolated, as numpy's percentile); the first at a rung always goes on. This is Ray Tune's
// ASHAScheduler rule (the stopping variant of Li et al.'s ASHA).
bool AshaPromotes(const std::vector<double>& recorded, double value, int eta, bool maximize);

// The objective's value from an epoch's metrics (a non-finite one as the worst finite value),
// and whether larger is better.
double ObjectiveValue(const kennel::v1::TuningSpec& spec, const kennel::v1::EpochMetrics& m);
bool Maximizes(const kennel::v1::TuningSpec& spec);

}  // namespace kennel::core

#endif  // KENNEL_CORE_TUNING_H_
