// Kennel's one logger: glog. Include this instead of <glog/logging.h>.
//
// Debian's LibTorch 1.13 logs through glog too, so its headers and this one agree. PyTorch
// 2.x from PyPI is built without glog: its c10/util/Logging.h defines c10's own LOG, CHECK,
// DCHECK, VLOG... macros, which torch/torch.h (Kennel's precompiled header) brings in first.
// Those are dropped here so every Kennel file logs through glog, the same way in both builds.
#ifndef KENNEL_CORE_LOGGING_H_
#define KENNEL_CORE_LOGGING_H_

// Targets that link kennel_ml (KENNEL_WITH_TORCH) see c10's macros first whatever the include
// order, so they are dropped once, here.
#ifdef KENNEL_WITH_TORCH
#include <c10/util/Logging.h>
#endif

#if defined(C10_UTIL_LOGGING_IS_NOT_GOOGLE_GLOG_H_)
#undef LOG
#undef LOG_IF
#undef VLOG
#undef VLOG_IF
#undef VLOG_IS_ON
#undef CHECK
#undef DCHECK
#undef DLOG
#undef LOG_EVERY_MS
#undef LOG_FIRST_N
#undef LOG_EVERY_N
#endif

#include <glog/logging.h>

#endif  // KENNEL_CORE_LOGGING_H_
