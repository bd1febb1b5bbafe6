#include "trainer_node/communicator_internal.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kennel::trainer {

std::vector<int> FindMissingRanks(KeyValueStore& store, int rank, int world_size, int64_t seq,
                                  absl::Duration grace) {
  // Every rank that reaches this point announces itself; whoever stays silent is the rank
  // the group was waiting for.
  const std::string prefix = absl::StrCat("timeout/", seq, "/");
  (void)store.Set(absl::StrCat(prefix, rank), "1");
  std::vector<std::string> keys;
  for (int r = 0; r < world_size; ++r) keys.push_back(absl::StrCat(prefix, r));
  if (store.Get(keys, grace).ok()) return {};
  std::vector<int> missing;
  for (int r = 0; r < world_size; ++r) {
    if (!store.Get({keys[r]}, absl::ZeroDuration()).ok()) missing.push_back(r);
  }
  return missing;
}

absl::Status TimeoutError(absl::string_view op, int64_t seq, int rank, absl::Duration timeout,
                          const std::vector<int>& missing, absl::string_view cause) {
  std::string who = missing.empty()
                        ? "every rank reached it; a peer connection failed"
                        : absl::StrCat("waiting for rank", missing.size() > 1 ? "s " : " ",
                                       absl::StrJoin(missing, ", "));
  return absl::DeadlineExceededError(absl::StrCat(op, " #", seq, " on rank ", rank,
                                                  " timed out after ", absl::FormatDuration(timeout),
                                                  ", ", who, " (", cause, ")"));
}

absl::Status PeerLostError(absl::string_view op, int64_t seq, int rank, const std::vector<int>& missing,
                           absl::string_view cause) {
  std::string who = missing.empty() ? "every rank reached it"
                                    : absl::StrCat("waiting for rank", missing.size() > 1 ? "s " : " ",
                                                   absl::StrJoin(missing, ", "));
  return absl::UnavailableError(absl::StrCat(op, " #", seq, " on rank ", rank,
                                             " failed: the connection to a peer broke (", cause, "); ", who));
}

int MissingRankFromMessage(absl::string_view message) {
  const size_t at = message.find("waiting for rank ");
  if (at == absl::string_view::npos) return -1;
  int rank = 0;
  bool any = false;
  for (size_t i = at + 17; i < message.size() && message[i] >= '0' && message[i] <= '9'; ++i) {
    rank = rank * 10 + (message[i] - '0');
    any = true;
  }
  return any ? rank : -1;
}

#ifndef KENNEL_WITH_NCCL
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(const CommunicatorOptions&) {
  return absl::UnimplementedError(
      "this trainer was built without NCCL (needs a CUDA LibTorch and NCCL at build time); "
      "use backend \"gloo\"");
}
#endif

}  // namespace kennel::trainer
