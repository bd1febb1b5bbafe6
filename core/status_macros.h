// Status propagation helpers. Debian's abseil (20220623) ships no public
// RETURN_IF_ERROR / ASSIGN_OR_RETURN, so Kennel defines its own, with the usual meaning.
#ifndef KENNEL_CORE_STATUS_MACROS_H_
#define KENNEL_CORE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define KENNEL_CONCAT_INNER_(a, b) a##b
#define KENNEL_CONCAT_(a, b) KENNEL_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::absl::Status kennel_status_ = (expr);        \
    if (!kennel_status_.ok()) return kennel_status_; \
  } while (0)

// ASSIGN_OR_RETURN(lhs, expr): evaluates a StatusOr expression; returns its status on error,
// otherwise moves its value into `lhs` (which may be a declaration).
#define ASSIGN_OR_RETURN(lhs, expr) \
  KENNEL_ASSIGN_OR_RETURN_IMPL_(KENNEL_CONCAT_(kennel_statusor_, __LINE__), lhs, expr)
#define KENNEL_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // KENNEL_CORE_STATUS_MACROS_H_
