// Converts exceptions thrown by LibTorch (c10::Error) and the standard library into
// absl::Status at the one call site that invokes them, so no exception crosses a library
// boundary.
#ifndef KENNEL_CORE_ML_TORCH_ERRORS_H_
#define KENNEL_CORE_ML_TORCH_ERRORS_H_

#include <c10/util/Exception.h>

#include <exception>
#include <string>
#include "absl/strings/string_view.h"
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace kennel::core {

// The first line of a c10::Error's message, without LibTorch's C++ backtrace.
inline std::string TorchErrorMessage(const c10::Error& e) {
  std::string msg = e.what_without_backtrace();
  if (auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
  return msg;
}

// Runs `fn` and maps exceptions to `code` with `context` prefixed; an out-of-memory error of
// a device allocator becomes RESOURCE_EXHAUSTED. `fn` returns a value (then
// the result is StatusOr<value>) or void (then the result is Status).
template <typename Fn>
auto CallTorch(absl::string_view context, Fn&& fn,
               absl::StatusCode code = absl::StatusCode::kInternal) {
  using R = std::invoke_result_t<Fn>;
  using Out = std::conditional_t<std::is_void_v<R>, absl::Status, absl::StatusOr<R>>;
  try {
    if constexpr (std::is_void_v<R>) {
      fn();
      return Out(absl::OkStatus());
    } else {
      return Out(fn());
    }
  } catch (const c10::OutOfMemoryError& e) {
    // Device memory is exhausted (a GPU batch too big for what is free): the caller may retry
    // smaller or later, and nothing else is wrong.
    return Out(absl::ResourceExhaustedError(absl::StrCat(context, ": out of memory: ", TorchErrorMessage(e))));
  } catch (const c10::Error& e) {
    return Out(absl::Status(code, absl::StrCat(context, ": ", TorchErrorMessage(e))));
  } catch (const std::exception& e) {
    return Out(absl::Status(code, absl::StrCat(context, ": ", e.what())));
  }
}

}  // namespace kennel::core

#endif  // KENNEL_CORE_ML_TORCH_ERRORS_H_
