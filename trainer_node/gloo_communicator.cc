// Gloo backend of Communicator: a full-mesh TCP context bootstrapped through the
// KeyValueStore, and Gloo's ring-based collectives with per-call timeouts.
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/address.h>
#include <gloo/transport/tcp/device.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <stdexcept>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/logging.h"
#include "trainer_node/communicator_internal.h"

namespace kennel::trainer {
namespace {

absl::Duration ToDuration(std::chrono::milliseconds ms) { return absl::Milliseconds(ms.count()); }

// Gloo's reduce function for 16-bit floats (compressed gradients): each sum computed in
// float32 and rounded once, as NCCL does.
template <typename T>
void SumIn(void* out, const void* a, const void* b, size_t n) {
  T* c = static_cast<T*>(out);
  const T* x = static_cast<const T*>(a);
  const T* y = static_cast<const T*>(b);
  for (size_t i = 0; i < n; ++i) c[i] = static_cast<T>(static_cast<float>(x[i]) + static_cast<float>(y[i]));
}

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
    std::vector<char> value((*v)[0].begin(), (*v)[0].end());
    got_.emplace_back(key, value);
    return value;
  }
  // What get() returned, in order: the peers' published addresses among it.
  const std::vector<std::pair<std::string, std::vector<char>>>& got() const { return got_; }
  void wait(const std::vector<std::string>& keys) override { wait(keys, kDefaultTimeout); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& t) override {
    auto v = store_->Get(keys, std::min(timeout_, ToDuration(t)));
    if (!v.ok()) throw std::runtime_error(std::string(v.status().message()));
  }

 private:
  KeyValueStore* store_;
  absl::Duration timeout_;
  std::vector<std::pair<std::string, std::vector<char>>> got_;
};

bool SameEndpoint(const sockaddr_storage& a, const sockaddr_storage& b) {
  if (a.ss_family != b.ss_family) return false;
  if (a.ss_family == AF_INET) {
    const auto& x = reinterpret_cast<const sockaddr_in&>(a);
    const auto& y = reinterpret_cast<const sockaddr_in&>(b);
    return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
  }
  if (a.ss_family == AF_INET6) {
    const auto& x = reinterpret_cast<const sockaddr_in6&>(a);
    const auto& y = reinterpret_cast<const sockaddr_in6&>(b);
    return x.sin6_port == y.sin6_port && std::memcmp(&x.sin6_addr, &y.sin6_addr, sizeof(x.sin6_addr)) == 0;
  }
  return false;
}

// The TCP endpoints of one group's connections, to find its sockets again: every connection
// of a pair either was accepted on this rank's listening address or goes to a peer's. Both
// are public (Pair::address(), and the addresses the peers published in the rendezvous store).
struct GroupEndpoints {
  sockaddr_storage own{};
  std::vector<sockaddr_storage> peers;

  bool Matches(int fd) const {
    sockaddr_storage local{}, remote{};
    socklen_t n = sizeof(local), m = sizeof(remote);
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &n) != 0) return false;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&remote), &m) != 0) return false;  // Not connected.
    if (SameEndpoint(local, own)) return true;
    for (const auto& p : peers) {
      if (SameEndpoint(remote, p)) return true;
    }
    return false;
  }
};

GroupEndpoints FindEndpoints(gloo::Context& context, const GlooStore& store) {
  GroupEndpoints e;
  size_t address_size = 0;
  for (int peer = 0; peer < context.size; ++peer) {
    if (peer == context.rank) continue;
    const auto* address = dynamic_cast<const gloo::transport::tcp::Address*>(&context.getPair(peer)->address());
    if (address == nullptr) continue;
    e.own = address->getSockaddr();
    address_size = address->bytes().size();
  }
  if (address_size == 0) return e;
  // Each rank publishes, under its rank number, its pairs' addresses one after another.
  for (const auto& [key, value] : store.got()) {
    int rank = 0;
    if (!absl::SimpleAtoi(key, &rank) || rank == context.rank || value.size() % address_size != 0) continue;
    for (size_t at = 0; at < value.size(); at += address_size) {
      const std::vector<char> bytes(value.begin() + static_cast<std::ptrdiff_t>(at),
                                    value.begin() + static_cast<std::ptrdiff_t>(at + address_size));
      e.peers.push_back(gloo::transport::tcp::Address(bytes).getSockaddr());
    }
  }
  return e;
}

// Shuts down this process's sockets of one group. Gloo has no abort, and Pair::close() (as
// Context::closeConnections()) wakes no operation waiting on the pair: it waits out its
// timeout. A shut-down socket does: the device's event loop reads end-of-stream and fails the
// pair's pending operations, here and at the peer. Not an operation already under way (an
// unbound send in flight, a receive in progress): Debian's Gloo signals neither, and it ends
// at the collective timeout.
int ShutdownGroupSockets(const GroupEndpoints& endpoints) {
  int count = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    int fd = -1;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &fd)) continue;
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode) || !endpoints.Matches(fd)) continue;
    if (::shutdown(fd, SHUT_RDWR) == 0) ++count;
  }
  return count;
}

class GlooCommunicator : public Communicator {
 public:
  GlooCommunicator(const CommunicatorOptions& options, std::shared_ptr<gloo::Context> context,
                   GroupEndpoints endpoints)
      : options_(options), context_(std::move(context)), endpoints_(std::move(endpoints)) {}

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
      } else if (t.scalar_type() == torch::kHalf) {
        opts.setOutput(t.data_ptr<c10::Half>(), static_cast<size_t>(t.numel()));
        opts.setReduceFunction(&SumIn<c10::Half>);
      } else if (t.scalar_type() == torch::kBFloat16) {
        opts.setOutput(t.data_ptr<c10::BFloat16>(), static_cast<size_t>(t.numel()));
        opts.setReduceFunction(&SumIn<c10::BFloat16>);
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
      opts.setOutput(static_cast<uint8_t*>(t.data_ptr()), static_cast<size_t>(t.nbytes()));
      gloo::broadcast(opts);
    });
  }

  absl::Status Barrier() override {
    torch::Tensor one = torch::ones({1}, torch::kFloat32);
    return AllReduceSum(one);
  }

  void Abort(const std::string& reason) override {
    {
      absl::MutexLock lock(&abort_mu_);
      if (aborted_.has_value()) return;
      aborted_ = reason;
    }
    if (options_.world_size == 1) return;
    const int shut = ShutdownGroupSockets(endpoints_);
    LOG(INFO) << "rank " << options_.rank << ": aborting the group's collectives (" << shut
              << " connections shut down): " << reason;
  }

 private:
  std::optional<std::string> AbortReason() {
    absl::MutexLock lock(&abort_mu_);
    return aborted_;
  }

  template <typename Fn>
  absl::Status Run(absl::string_view op, const torch::Tensor& t, Fn&& fn) {
    // After Abort every call says so, even where a peer's abort broke the group first.
    if (!broken_.ok() && !AbortReason()) return broken_;
    if (!t.is_contiguous() || t.device().type() != torch::kCPU ||
        (t.scalar_type() != torch::kFloat32 && t.scalar_type() != torch::kFloat64 &&
         t.scalar_type() != torch::kHalf && t.scalar_type() != torch::kBFloat16)) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, " needs a contiguous CPU float32/float64/float16/bfloat16 tensor"));
    }
    const int64_t seq = ++seq_;
    auto aborted = [&](const std::string& reason) {
      return broken_ = absl::AbortedError(absl::StrCat(op, " #", seq, " on rank ", options_.rank, " aborted: ", reason));
    };
    if (auto reason = AbortReason()) return aborted(*reason);
    if (options_.world_size == 1) return absl::OkStatus();
    const auto timeout = std::chrono::milliseconds(absl::ToInt64Milliseconds(options_.timeout));
    try {
      fn(static_cast<uint32_t>(seq & 0x7fffffff), timeout);
      return absl::OkStatus();
    } catch (const std::exception& e) {
      if (auto reason = AbortReason()) return aborted(*reason);
      const std::vector<int> missing =
          FindMissingRanks(*options_.store, options_.rank, options_.world_size, seq,
                           std::min(options_.timeout, absl::Seconds(5)));
      // A peer's abort closes its connections an instant before this rank's own abort
      // arrives: the coordinator aborts every survivor. Say that, not "a connection broke".
      if (auto reason = AbortReason()) return aborted(*reason);
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
  const GroupEndpoints endpoints_;
  absl::Mutex abort_mu_;
  std::optional<std::string> aborted_ ABSL_GUARDED_BY(abort_mu_);
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
    GroupEndpoints endpoints;
    if (options.world_size > 1) {
      GlooStore store(options.store, options.timeout);
      context->connectFullMesh(store, device);
      endpoints = FindEndpoints(*context, store);
    }
    return std::unique_ptr<Communicator>(new GlooCommunicator(options, std::move(context), std::move(endpoints)));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("rank ", options.rank, " could not join a group of ",
                                               options.world_size, ": ", e.what()));
  }
}

}  // namespace kennel::trainer
