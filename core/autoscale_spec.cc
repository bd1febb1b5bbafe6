#include "core/autoscale_spec.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace kennel::core {
namespace v1 = kennel::v1;

absl::StatusOr<v1::AutoscaleSpec> CheckAutoscaleSpec(v1::AutoscaleSpec spec) {
  auto bad = [](auto&&... what) { return absl::InvalidArgumentError(absl::StrCat("autoscale: ", what...)); };
  if (spec.min_nodes() < 1) return bad("min must be at least 1 (got ", spec.min_nodes(), "): clients need a node to go to");
  if (spec.max_nodes() == 0) spec.set_max_nodes(std::max(spec.min_nodes(), 1));
  if (spec.max_nodes() < spec.min_nodes()) {
    return bad("min (", spec.min_nodes(), ") is above max (", spec.max_nodes(), ")");
  }
  if (spec.max_nodes() > 1000) return bad("max ", spec.max_nodes(), " is more than 1000 nodes");
  if (spec.target() == 0) spec.set_target(0.7);
  if (!(spec.target() > 0 && spec.target() <= 1)) {
    return bad("target must be in (0, 1], the share of a node's capacity each node should carry (got ",
               spec.target(), ")");
  }
  struct Window {
    const char* name;
    double (v1::AutoscaleSpec::*get)() const;
    void (v1::AutoscaleSpec::*set)(double);
    double fallback;
  };
  for (const Window& w : {Window{"stable_window", &v1::AutoscaleSpec::stable_window_s, &v1::AutoscaleSpec::set_stable_window_s, 60},
                          Window{"panic_window", &v1::AutoscaleSpec::panic_window_s, &v1::AutoscaleSpec::set_panic_window_s, 6},
                          Window{"start_timeout", &v1::AutoscaleSpec::start_timeout_s, &v1::AutoscaleSpec::set_start_timeout_s, 300}}) {
    const double value = (spec.*w.get)();
    if (value == 0) {
      (spec.*w.set)(w.fallback);
    } else if (!(value > 0 && value <= 86400)) {
      return bad(w.name, " must be a positive number of seconds up to a day (got ", value, ")");
    }
  }
  if (spec.panic_window_s() > spec.stable_window_s()) {
    return bad("the panic window (", spec.panic_window_s(), " s) is longer than the stable window (",
               spec.stable_window_s(), " s)");
  }
  if (spec.panic_threshold() == 0) spec.set_panic_threshold(2);
  if (!(spec.panic_threshold() > 1 && spec.panic_threshold() <= 100)) {
    return bad("panic_threshold must be above 1 (a multiple of the target; got ", spec.panic_threshold(), ")");
  }
  if (spec.max_start_failures() == 0) spec.set_max_start_failures(3);
  if (spec.max_start_failures() < 0) return bad("max_start_failures must be positive (got ", spec.max_start_failures(), ")");
  if (spec.version() < 0) return bad("version must be positive (got ", spec.version(), ")");
  return spec;
}

absl::StatusOr<v1::AutoscaleSpec> ParseAutoscaleSpec(const std::string& text) {
  v1::AutoscaleSpec spec;
  bool min = false, max = false;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    const size_t eq = part.find('=');
    const std::string key(absl::StripAsciiWhitespace(part.substr(0, eq)));
    const std::string value = eq == absl::string_view::npos ? "" : std::string(absl::StripAsciiWhitespace(part.substr(eq + 1)));
    double number = 0;
    if (eq == absl::string_view::npos || !absl::SimpleAtod(value, &number) || !std::isfinite(number)) {
      return absl::InvalidArgumentError(absl::StrCat("autoscale: '", part, "' is not key=number (e.g. min=1,max=8,target=0.7)"));
    }
    auto whole = [&](const char* what) -> absl::StatusOr<int64_t> {
      if (number != std::floor(number) || std::abs(number) > 1e9) {
        return absl::InvalidArgumentError(absl::StrCat("autoscale: ", what, " must be a whole number (got ", value, ")"));
      }
      return static_cast<int64_t>(number);
    };
    if (key == "min") {
      auto n = whole("min");
      if (!n.ok()) return n.status();
      spec.set_min_nodes(static_cast<int32_t>(*n));
      min = true;
    } else if (key == "max") {
      auto n = whole("max");
      if (!n.ok()) return n.status();
      spec.set_max_nodes(static_cast<int32_t>(*n));
      max = true;
    } else if (key == "target") {
      if (number == 0) return absl::InvalidArgumentError("autoscale: target must be in (0, 1] (got 0)");
      spec.set_target(number);
    } else if (key == "stable") {
      if (number == 0) return absl::InvalidArgumentError("autoscale: stable must be a positive number of seconds (got 0)");
      spec.set_stable_window_s(number);
    } else if (key == "panic") {
      if (number == 0) return absl::InvalidArgumentError("autoscale: panic must be a positive number of seconds (got 0)");
      spec.set_panic_window_s(number);
    } else if (key == "panic-threshold") {
      spec.set_panic_threshold(number);
    } else if (key == "start-timeout") {
      if (number == 0) return absl::InvalidArgumentError("autoscale: start-timeout must be a positive number of seconds (got 0)");
      spec.set_start_timeout_s(number);
    } else if (key == "max-start-failures") {
      auto n = whole("max-start-failures");
      if (!n.ok()) return n.status();
      if (*n <= 0) return absl::InvalidArgumentError("autoscale: max-start-failures must be positive");
      spec.set_max_start_failures(static_cast<int32_t>(*n));
    } else if (key == "version") {
      auto n = whole("version");
      if (!n.ok()) return n.status();
      if (*n <= 0) return absl::InvalidArgumentError("autoscale: version must be positive");
      spec.set_version(*n);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "autoscale: unknown setting '", key,
          "' (min, max, target, stable, panic, panic-threshold, start-timeout, max-start-failures, version)"));
    }
  }
  if (!min || !max) return absl::InvalidArgumentError("autoscale: min and max are needed (e.g. min=1,max=8)");
  return CheckAutoscaleSpec(spec);
}

std::string AutoscaleSpecText(const v1::AutoscaleSpec& s) {
  return absl::StrCat("min=", s.min_nodes(), ",max=", s.max_nodes(), ",target=", s.target(), ",stable=",
                      s.stable_window_s(), ",panic=", s.panic_window_s(), ",panic-threshold=", s.panic_threshold(),
                      ",start-timeout=", s.start_timeout_s(), ",max-start-failures=", s.max_start_failures(),
                      s.version() > 0 ? absl::StrCat(",version=", s.version()) : "");
}

}  // namespace kennel::core
