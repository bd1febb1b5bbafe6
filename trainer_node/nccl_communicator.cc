// NCCL backend of Communicator, compiled only when CMake finds a CUDA LibTorch and NCCL
// (KENNEL_WITH_NCCL). The unique id travels through the rendezvous store; every collective
// is enqueued on the current CUDA stream and then polled against the group timeout, so a
// lost peer ends in DEADLINE_EXCEEDED naming it (ncclCommAbort frees the hung kernel)
// rather than a silent hang. Every NCCL and CUDA return code is checked.
#ifdef KENNEL_WITH_NCCL

#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <optional>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "trainer_node/communicator_internal.h"

namespace kennel::trainer {
namespace {

absl::Status NcclError(absl::string_view what, ncclResult_t r) {
  return absl::InternalError(absl::StrCat(what, ": ", ncclGetErrorString(r)));
}

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(const CommunicatorOptions& options, ncclComm_t comm)
      : options_(options), comm_(comm) {}
  ~NcclCommunicator() override {
    if (comm_ != nullptr) ncclCommDestroy(comm_);
  }
  int rank() const override { return options_.rank; }
  int world_size() const override { return options_.world_size; }

  absl::Status AllReduceSum(torch::Tensor& t) override {
    return Run("all-reduce", t, [&](cudaStream_t stream, ncclDataType_t type) {
      return ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), type, ncclSum,
                           comm_, stream);
    });
  }
  absl::Status Broadcast(torch::Tensor& t, int root) override {
    if (root < 0 || root >= options_.world_size) return absl::InvalidArgumentError("bad broadcast root");
    return Run("broadcast", t, [&](cudaStream_t stream, ncclDataType_t type) {
      return ncclBroadcast(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), type, root, comm_,
                           stream);
    });
  }
  absl::Status Barrier() override {
    torch::Tensor one = torch::ones({1}, torch::TensorOptions().dtype(torch::kFloat32).device(torch::kCUDA));
    return AllReduceSum(one);
  }

  // The collective's own thread polls the flag and calls ncclCommAbort (NCCL's abort frees a
  // kernel blocked on a peer; it must not race the thread using the communicator).
  void Abort(const std::string& reason) override {
    absl::MutexLock lock(&abort_mu_);
    if (!aborted_.has_value()) aborted_ = reason;
  }

 private:
  std::optional<std::string> AbortReason() {
    absl::MutexLock lock(&abort_mu_);
    return aborted_;
  }

  template <typename Fn>
  absl::Status Run(absl::string_view op, const torch::Tensor& t, Fn&& enqueue) {
    if (!broken_.ok()) return broken_;
    if (!t.is_cuda() || !t.is_contiguous() ||
        (t.scalar_type() != torch::kFloat32 && t.scalar_type() != torch::kFloat64 &&
         t.scalar_type() != torch::kHalf && t.scalar_type() != torch::kBFloat16)) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, " needs a contiguous CUDA float32/float64/float16/bfloat16 tensor"));
    }
    const int64_t seq = ++seq_;
    auto aborted = [&](const std::string& reason) {
      if (comm_ != nullptr) ncclCommAbort(comm_);
      comm_ = nullptr;
      return broken_ = absl::AbortedError(absl::StrCat(op, " #", seq, " on rank ", options_.rank, " aborted: ", reason));
    };
    if (auto reason = AbortReason()) return aborted(*reason);
    cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
    const ncclDataType_t type = t.scalar_type() == torch::kFloat64  ? ncclFloat64
                                : t.scalar_type() == torch::kHalf     ? ncclFloat16
                                : t.scalar_type() == torch::kBFloat16 ? ncclBfloat16
                                                                      : ncclFloat32;
    if (ncclResult_t r = enqueue(stream, type); r != ncclSuccess && r != ncclInProgress) {
      return broken_ = NcclError(op, r);
    }
    const absl::Time deadline = absl::Now() + options_.timeout;
    while (true) {
      const cudaError_t e = cudaStreamQuery(stream);
      if (e == cudaSuccess) return absl::OkStatus();
      if (e != cudaErrorNotReady) {
        return broken_ = absl::InternalError(absl::StrCat(op, ": ", cudaGetErrorString(e)));
      }
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) return broken_ = NcclError(op, async);
      if (auto reason = AbortReason()) return aborted(*reason);
      if (absl::Now() > deadline) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        const std::vector<int> missing = FindMissingRanks(*options_.store, options_.rank, options_.world_size,
                                                          seq, std::min(options_.timeout, absl::Seconds(5)));
        return broken_ = TimeoutError(op, seq, options_.rank, options_.timeout, missing, "NCCL");
      }
      absl::SleepFor(absl::Microseconds(50));
    }
  }

  CommunicatorOptions options_;
  ncclComm_t comm_;
  int64_t seq_ = 0;
  absl::Status broken_;
  absl::Mutex abort_mu_;
  std::optional<std::string> aborted_ ABSL_GUARDED_BY(abort_mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(const CommunicatorOptions& options) {
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", options.rank, " is not in a world of size ", options.world_size));
  }
  ncclUniqueId id;
  if (options.rank == 0) {
    if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) return NcclError("ncclGetUniqueId", r);
    if (absl::Status s = options.store->Set("nccl_unique_id", std::string(id.internal, sizeof(id.internal)));
        !s.ok()) {
      return s;
    }
  } else {
    auto v = options.store->Get({"nccl_unique_id"}, options.timeout);
    if (!v.ok()) return v.status();
    if ((*v)[0].size() != sizeof(id.internal)) return absl::DataLossError("bad NCCL unique id in the store");
    std::memcpy(id.internal, (*v)[0].data(), sizeof(id.internal));
  }
  // Non-blocking initialisation, polled against the timeout: a rank that never joins cannot
  // hang the others.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&comm, options.world_size, id, options.rank, &config);
  const absl::Time deadline = absl::Now() + options.timeout;
  while (r == ncclInProgress) {
    if (absl::Now() > deadline) {
      ncclCommAbort(comm);
      const std::vector<int> missing =
          FindMissingRanks(*options.store, options.rank, options.world_size, 0, absl::Seconds(5));
      return TimeoutError("NCCL init", 0, options.rank, options.timeout, missing, "ncclCommInitRank");
    }
    absl::SleepFor(absl::Milliseconds(1));
    ncclCommGetAsyncError(comm, &r);
  }
  if (r != ncclSuccess) return NcclError("ncclCommInitRankConfig", r);
  return std::unique_ptr<Communicator>(new NcclCommunicator(options, comm));
}

}  // namespace kennel::trainer

#endif  // KENNEL_WITH_NCCL
