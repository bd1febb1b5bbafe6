#include "inference_node/engine.h"

#include <cmath>

#include "core/logging.h"
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace kennel::inference {

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(EngineOptions options, Metrics* metrics, Clock* clock) {
  if (options.preprocess_threads < 1 || options.preprocess_queue < 1) {
    return absl::InvalidArgumentError("preprocess threads and queue must be positive");
  }
  // A node that cannot place its model should fail at start, not at its first deploy.
  RETURN_IF_ERROR(ResolvePlacement(options.model.device, options.model.precision).status());
  return std::unique_ptr<Engine>(new Engine(std::move(options), metrics, clock));
}

Engine::Engine(EngineOptions options, Metrics* metrics, Clock* clock)
    : options_(std::move(options)), metrics_(metrics), clock_(clock != nullptr ? clock : &real_clock_) {
  pool_ = std::make_unique<ThreadPool>(options_.preprocess_threads, options_.preprocess_queue, "kennel-prep");
  metrics_->SetQueueDepth([this] { return queue_depth(); });
}

Engine::~Engine() {
  pool_.reset();  // Finish preprocessing first: its tasks submit to the model.
  std::shared_ptr<ServingModel> model;
  {
    absl::MutexLock lock(&mu_);
    model = std::move(current_);
  }
  // As in Deploy: the last reference must be dropped here, not on a batcher thread.
  while (model && model.use_count() > 1) absl::SleepFor(absl::Milliseconds(5));
}

bool Engine::ready() {
  absl::MutexLock lock(&mu_);
  return current_ != nullptr;
}

std::shared_ptr<ServingModel> Engine::current() {
  absl::MutexLock lock(&mu_);
  return current_;
}

int Engine::queue_depth() {
  auto model = current();
  return pool_->queue_depth() + (model ? model->queue_depth() : 0);
}

absl::Status Engine::Deploy(const std::string& artifact_dir) {
  absl::MutexLock deploy_lock(&deploy_mu_);
  Metrics* metrics = metrics_;
  auto loaded = ServingModel::Load(artifact_dir, options_.model, clock_,
                                   [metrics](int size, absl::Duration busy) {
                                     metrics->ObserveBatch(size);
                                     metrics->ObserveBusy(busy);
                                   });
  if (!loaded.ok()) return loaded.status();
  std::shared_ptr<ServingModel> old;
  {
    absl::MutexLock lock(&mu_);
    old = std::move(current_);
    current_ = *loaded;
  }
  metrics_->SetModel((*loaded)->manifest().name(), (*loaded)->manifest().version());
  LOG(INFO) << "serving " << (*loaded)->manifest().name() << " version " << (*loaded)->manifest().version()
            << " (" << options_.model.instances << " instances, warmed in "
            << absl::FormatDuration((*loaded)->warmup_time()) << ")"
            << (old ? absl::StrCat("; version ", old->manifest().version(), " drains") : "");
  // Drain: requests admitted on the old version finish there. Their callbacks hold
  // references; the last must not be dropped on the old version's own batcher thread (its
  // destructor joins that thread), so this thread waits for them and destroys it.
  if (old) {
    while (old.use_count() > 1) absl::SleepFor(absl::Milliseconds(5));
    const int64_t version = old->manifest().version();
    old.reset();
    LOG(INFO) << "version " << version << " drained and unloaded";
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::ModelInfo> Engine::Info() {
  auto model = current();
  if (!model) return absl::UnavailableError("no model loaded yet");
  v1::ModelInfo info;
  *info.mutable_manifest() = model->manifest();
  info.set_instances(model->options().instances);
  info.set_max_batch_size(model->options().batcher.max_batch_size);
  info.set_max_queue_delay_us(absl::ToInt64Microseconds(model->options().batcher.max_queue_delay));
  info.set_device(model->options().device);
  info.set_precision(model->options().precision);
  return info;
}

void Engine::Fail(const v1::ClassifyRequest& request, const absl::Status& status, const Done& done) {
  metrics_->CountRequest(status.code());
  v1::ClassifyResponse response;
  response.set_request_id(request.request_id());
  done(status, std::move(response));
}

void Engine::Classify(v1::ClassifyRequest request, absl::Time deadline, Done done) {
  const absl::Time start = clock_->Now();
  metrics_->Arrived();  // Every request is answered once, through Fail or Finish (CountRequest).
  std::shared_ptr<ServingModel> model = current();
  if (!model) return Fail(request, absl::UnavailableError("no model loaded yet"), done);
  const auto& spec = model->manifest().preprocess();
  if (request.top_k() < 0) {
    return Fail(request, absl::InvalidArgumentError("top_k must not be negative"), done);
  }
  if (request.input_case() == v1::ClassifyRequest::kTensor) {
    const auto& t = request.tensor();
    const std::vector<int64_t> want = {spec.channels(), spec.height(), spec.width()};
    if (std::vector<int64_t>(t.shape().begin(), t.shape().end()) != want) {
      return Fail(request, absl::InvalidArgumentError(absl::StrCat(
                               "tensor shape must be [", spec.channels(), ", ", spec.height(), ", ",
                               spec.width(), "] for this model")), done);
    }
    if (t.data().size() != static_cast<size_t>(spec.channels() * spec.height() * spec.width()) * 4) {
      return Fail(request, absl::InvalidArgumentError(absl::StrCat(
                               "tensor data holds ", t.data().size(), " bytes; its shape needs ",
                               spec.channels() * spec.height() * spec.width() * 4, " (float32)")), done);
    }
    torch::Tensor input = torch::empty({spec.channels(), spec.height(), spec.width()});
    std::memcpy(input.data_ptr<float>(), t.data().data(), t.data().size());
    const v1::ClassifyRequest meta = [&] {
      v1::ClassifyRequest m;
      m.set_request_id(request.request_id());
      m.set_top_k(request.top_k());
      return m;
    }();
    absl::Status queued = model->Submit(BatchItem{input, deadline, [this, model, meta, start, done](absl::StatusOr<BatchResult> r) {
      Finish(model, meta, start, absl::ZeroDuration(), std::move(r), done);
    }});
    if (!queued.ok()) Fail(request, queued, done);
    return;
  }
  if (request.input_case() != v1::ClassifyRequest::kImage || request.image().empty()) {
    return Fail(request, absl::InvalidArgumentError("request holds no image bytes and no tensor"), done);
  }
  // Decode on the preprocessing pool. The request was moved in: its image bytes are not copied.
  auto shared = std::make_shared<v1::ClassifyRequest>(std::move(request));
  const bool accepted = pool_->TrySubmit([this, model, shared, start, deadline, done] {
    const v1::PreprocessSpec& spec = model->manifest().preprocess();
    const absl::Time begin = clock_->Now();
    auto image = core::DecodeImage(shared->image(), spec.channels(), options_.limits, core::DecodeHint(spec));
    if (!image.ok()) return Fail(*shared, image.status(), done);
    torch::Tensor input = torch::empty({spec.channels(), spec.height(), spec.width()});
    absl::Status ok = core::PreprocessInto(*image, spec, input.data_ptr<float>());
    if (!ok.ok()) return Fail(*shared, ok, done);
    const absl::Duration preprocess = clock_->Now() - begin;
    shared->clear_image();
    absl::Status queued = model->Submit(BatchItem{input, deadline,
        [this, model, shared, start, preprocess, done](absl::StatusOr<BatchResult> r) {
          Finish(model, *shared, start, preprocess, std::move(r), done);
        }});
    if (!queued.ok()) Fail(*shared, queued, done);
  });
  if (!accepted) {
    Fail(*shared, absl::ResourceExhaustedError("preprocessing queue full; retry later"), done);
  }
}

void Engine::Finish(const std::shared_ptr<ServingModel>& model, const v1::ClassifyRequest& request,
                    absl::Time start, absl::Duration preprocess, absl::StatusOr<BatchResult> result,
                    const Done& done) {
  if (!result.ok()) return Fail(request, result.status(), done);
  const auto& manifest = model->manifest();
  v1::ClassifyResponse response;
  response.set_request_id(request.request_id());
  response.set_model_name(manifest.name());
  response.set_model_version(manifest.version());
  response.set_batch_size(result->batch_size);
  // Top-k straight from the probability row: cheaper than torch::topk for a handful of values.
  const float* prob = result->row_data();
  const int classes = static_cast<int>(result->num_classes());
  // A diverged or broken model answers NaN: say so rather than rank garbage as an answer.
  for (int c = 0; c < classes; ++c) {
    if (!std::isfinite(prob[c])) {
      return Fail(request, absl::InternalError(absl::StrCat(
                               "model ", manifest.name(), " version ", manifest.version(),
                               " produced a non-finite output (NaN or infinity); refusing to answer with it")),
                  done);
    }
  }
  const int k = std::min(request.top_k() > 0 ? request.top_k() : 5, classes);
  std::vector<int> order(static_cast<size_t>(classes));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [prob](int a, int b) { return prob[a] > prob[b]; });
  for (int i = 0; i < k; ++i) {
    auto* p = response.add_predictions();
    const int index = order[static_cast<size_t>(i)];
    p->set_class_index(index);
    p->set_label(index < manifest.class_names_size() ? manifest.class_names(index) : std::to_string(index));
    p->set_probability(prob[index]);
  }
  const absl::Duration total = clock_->Now() - start;
  auto* t = response.mutable_server_time();
  t->set_queue_us(absl::ToInt64Microseconds(result->queue_time));
  t->set_preprocess_us(absl::ToInt64Microseconds(preprocess));
  t->set_inference_us(absl::ToInt64Microseconds(result->inference_time));
  t->set_total_us(absl::ToInt64Microseconds(total));
  metrics_->CountRequest(absl::StatusCode::kOk);
  metrics_->ObserveStages(absl::ToDoubleSeconds(result->queue_time), absl::ToDoubleSeconds(preprocess),
                          absl::ToDoubleSeconds(result->inference_time), absl::ToDoubleSeconds(total));
  done(absl::OkStatus(), std::move(response));
}

}  // namespace kennel::inference
