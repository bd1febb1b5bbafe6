// Gloo backend of Communicator: a full-mesh TCP context bootstrapped through the
// KeyValueStore, and Gloo's ring-based collectives with per-call timeouts.
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>

#include <csignal>
#include <mutex>
#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "trainer_node/communicator_internal.h"

namespace kennel::trainer {
namespace {

absl::Duration ToDuration(std::chrono::milliseconds ms) { return absl::Milliseconds(ms.count()); }

// gloo::rendezvous::Store over Kennel's KeyValueStore. Gloo expects exceptions on failure.
class GlooStore : public gloo::rendezvous::Store {
 public:
  GlooStore(KeyValueStore* store, absl::Duration timeout) : store_(store), timeout_(timeout) {}
  void set(const std::string& key, const std::vector<char>& data) override {
    absl::Status s = store_->Set(key, std::string(data.begin(), data.end()));
    if (!s.ok()) throw std::runtime_error(std::string(s.message()));
  }
  std::vector<char> get(const std::string& key) override {
    auto v = store_->Get({key}, timeout_);
    if (!v.ok()) throw std::runtime_error(std::string(v.status().message()));
    return std::vector<char>((*v)[0].begin(), (*v)[0].end());
  }
  void wait(const std::vector<std::string>& keys) override { wait(keys, kDefaultTimeout); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& t) override {
    auto v = store_->Get(keys, std::min(timeout_, ToDuration(t)));
    if (!v.ok()) throw std::runtime_error(std::string(v.status().message()));
  }

 private:
  KeyValueStore* store_;
  absl::Duration timeout_;
};

class GlooCommunicator : public Communicator {
 public:
  GlooCommunicator(const CommunicatorOptions& options, std::shared_ptr<gloo::Context> context)
      : options_(options), context_(std::move(context)) {}

  int rank() const override { return options_.rank; }
  int world_size() const override { return options_.world_size; }

  absl::Status AllReduceSum(torch::Tensor& t) override {
    return Run("all-reduce", t, [&](uint32_t tag, std::chrono::milliseconds timeout) {
      gloo::AllreduceOptions opts(context_);
      opts.setTag(tag);
      opts.setTimeout(timeout);
      if (t.scalar_type() == torch::kFloat64) {
        opts.setOutput(t.data_ptr<double>(), static_cast<size_t>(t.numel()));
        opts.setReduceFunction(
            static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<double>));
      } else {
        opts.setOutput(t.data_ptr<float>(), static_cast<size_t>(t.numel()));
        opts.setReduceFunction(
            static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
      }
      gloo::allreduce(opts);
    });
  }

  absl::Status Broadcast(torch::Tensor& t, int root) override {
    if (root < 0 || root >= options_.world_size) {
      return absl::InvalidArgumentError(absl::StrCat("broadcast root ", root, " out of range"));
    }
    return Run("broadcast", t, [&](uint32_t tag, std::chrono::milliseconds timeout) {
      gloo::BroadcastOptions opts(context_);
      opts.setTag(tag);
      opts.setTimeout(timeout);
      opts.setRoot(root);
      if (t.scalar_type() == torch::kFloat64) {
        opts.setOutput(t.data_ptr<double>(), static_cast<size_t>(t.numel()));
      } else {
        opts.setOutput(t.data_ptr<float>(), static_cast<size_t>(t.numel()));
      }
      gloo::broadcast(opts);
    });
  }

  absl::Status Barrier() override {
    torch::Tensor one = torch::ones({1}, torch::kFloat32);
    return AllReduceSum(one);
  }

 private:
  template <typename Fn>
  absl::Status Run(absl::string_view op, const torch::Tensor& t, Fn&& fn) {
    if (!broken_.ok()) return broken_;
    if (!t.is_contiguous() || t.device().type() != torch::kCPU ||
        (t.scalar_type() != torch::kFloat32 && t.scalar_type() != torch::kFloat64)) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, " needs a contiguous CPU float32/float64 tensor"));
    }
    const int64_t seq = ++seq_;
    if (options_.world_size == 1) return absl::OkStatus();
    const auto timeout = std::chrono::milliseconds(absl::ToInt64Milliseconds(options_.timeout));
    try {
      fn(static_cast<uint32_t>(seq & 0x7fffffff), timeout);
      return absl::OkStatus();
    } catch (const std::exception& e) {
      const std::vector<int> missing =
          FindMissingRanks(*options_.store, options_.rank, options_.world_size, seq,
                           std::min(options_.timeout, absl::Seconds(5)));
      // Gloo says "Timed out" when the group's timeout passed; anything else (a connection
      // reset or closed by a peer that died) happened at once and is no timeout.
      const std::string cause = e.what();
      broken_ = cause.find("imed out") != std::string::npos
                    ? TimeoutError(op, seq, options_.rank, options_.timeout, missing, cause)
                    : PeerLostError(op, seq, options_.rank, missing, cause);
      return broken_;
    }
  }

  CommunicatorOptions options_;
  std::shared_ptr<gloo::Context> context_;
  int64_t seq_ = 0;
  absl::Status broken_;
};

}  // namespace

// Gloo writes to peer sockets with plain write(): a peer that died would kill this process
// with SIGPIPE instead of failing the collective. Every user of this backend needs SIGPIPE
// ignored, so it is done once here (only while it still has its default action).
void IgnoreSigpipe() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current {};
    if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
      ::signal(SIGPIPE, SIG_IGN);
    }
  });
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(
    const CommunicatorOptions& options) {
  IgnoreSigpipe();
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank, " is not in a world of size ", options.world_size));
  }
  if (options.store == nullptr) return absl::InvalidArgumentError("a rendezvous store is required");
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = options.hostname;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    auto context = std::make_shared<gloo::rendezvous::Context>(options.rank, options.world_size);
    context->setTimeout(std::chrono::milliseconds(absl::ToInt64Milliseconds(options.timeout)));
    if (options.world_size > 1) {
      GlooStore store(options.store, options.timeout);
      context->connectFullMesh(store, device);
    }
    return std::unique_ptr<Communicator>(new GlooCommunicator(options, std::move(context)));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("rank ", options.rank, " could not join a group of ",
                                               options.world_size, ": ", e.what()));
  }
}

}  // namespace kennel::trainer
