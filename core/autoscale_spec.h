// A model's autoscaling settings (kennel.v1.AutoscaleSpec): the one check the coordinator and
// kennelctl both apply, and kennelctl's text form of them.
#ifndef KENNEL_CORE_AUTOSCALE_SPEC_H_
#define KENNEL_CORE_AUTOSCALE_SPEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "kennel/v1/autoscale.pb.h"

namespace kennel::core {

// `spec` with its defaults filled in, or INVALID_ARGUMENT naming what cannot hold (a min above
// the max, a target outside (0, 1], a window that is not positive...).
absl::StatusOr<kennel::v1::AutoscaleSpec> CheckAutoscaleSpec(kennel::v1::AutoscaleSpec spec);

// "min=1,max=8,target=0.7,stable=60,panic=6,panic-threshold=2,start-timeout=300,
// max-start-failures=3,version=N" (any subset; min and max are needed), checked as above:
// INVALID_ARGUMENT naming an unknown key, a value that is not a number, or a rule broken.
absl::StatusOr<kennel::v1::AutoscaleSpec> ParseAutoscaleSpec(const std::string& text);

// The text form of a spec (every field).
std::string AutoscaleSpecText(const kennel::v1::AutoscaleSpec& spec);

}  // namespace kennel::core

#endif  // KENNEL_CORE_AUTOSCALE_SPEC_H_
