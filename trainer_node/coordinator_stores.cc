#include "trainer_node/coordinator_stores.h"

#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/member/coordinator_client.h"
#include "core/files.h"
#include "core/grpc_status.h"
#include "core/status_macros.h"

namespace kennel::trainer {
namespace {

std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
  return context;
}

std::string ScratchDir(const std::string& work_dir, const std::string& what) {
  return absl::StrCat(work_dir, "/", what, "-", std::random_device()());
}

}  // namespace

absl::Status CoordinatorKeyValueStore::Set(const std::string& key, const std::string& value) {
  v1::StoreSetRequest request;
  request.set_job_id(job_id_);
  request.set_generation(generation_);
  request.set_key(key);
  request.set_value(value);
  v1::StoreSetResponse response;
  return core::FromGrpcStatus(stub_->StoreSet(Context(absl::Seconds(30)).get(), request, &response));
}

absl::StatusOr<std::vector<std::string>> CoordinatorKeyValueStore::Get(
    const std::vector<std::string>& keys, absl::Duration timeout) {
  v1::StoreGetRequest request;
  request.set_job_id(job_id_);
  request.set_generation(generation_);
  for (const auto& k : keys) request.add_keys(k);
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration backoff = absl::Milliseconds(5);
  while (true) {
    v1::StoreGetResponse response;
    absl::Status s = core::FromGrpcStatus(
        stub_->StoreGet(Context(absl::Seconds(30)).get(), request, &response));
    if (s.ok()) return std::vector<std::string>(response.values().begin(), response.values().end());
    if (!absl::IsNotFound(s) && !absl::IsUnavailable(s)) return s;
    if (absl::Now() + backoff > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("rendezvous: ", s.message(), " after ",
                                                      absl::FormatDuration(timeout)));
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Milliseconds(100));
  }
}

absl::Status CoordinatorCheckpointStore::Save(const std::string& blob, const TrainingPosition&) {
  const std::string dir = ScratchDir(work_dir_, "checkpoint-upload");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  absl::Status s = core::WriteFileSynced(dir + "/checkpoint.bin", blob);
  if (s.ok()) {
    v1::ArtifactRef ref;
    ref.set_kind(v1::ArtifactRef::CHECKPOINT);
    ref.set_job_id(job_id_);
    ref.set_generation(generation_);
    s = core::UploadFolder(*stub_, dir, {"checkpoint.bin"}, ref, absl::Minutes(30)).status();
  }
  std::filesystem::remove_all(dir, ec);
  return s;
}

absl::StatusOr<std::optional<std::string>> CoordinatorCheckpointStore::LoadLatest() {
  const std::string dir = ScratchDir(work_dir_, "checkpoint-download");
  v1::ArtifactRef ref;
  ref.set_kind(v1::ArtifactRef::CHECKPOINT);
  ref.set_job_id(job_id_);
  auto got = core::DownloadFolder(*stub_, ref, dir, absl::Minutes(30));
  if (absl::IsNotFound(got.status())) return std::optional<std::string>();
  if (!got.ok()) return got.status();
  auto blob = core::ReadFile(dir + "/checkpoint.bin");
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (!blob.ok()) return blob.status();
  return std::optional<std::string>(*std::move(blob));
}

}  // namespace kennel::trainer
