#include "trainer_node/trainer.h"

#include <ATen/autocast_mode.h>
#include "core/logging.h"
#include <torch/torch.h>
#include <torch/version.h>

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/ml/dataset.h"
#include "core/files.h"
#include "core/job_spec.h"
#include "core/shard_plan.h"
#include "core/status_macros.h"
#include "core/ml/torch_errors.h"
#include "core/ml/weights.h"
#include "trainer_node/batch_loader.h"
#include "trainer_node/grad_sync.h"
#include "trainer_node/trainable_model.h"

namespace kennel::trainer {
namespace {

using Clock = std::chrono::steady_clock;

// Scoped bf16 autocast for CUDA ops (autocast state is per thread). PyTorch 2.4 replaced the
// CUDA-only calls with per-device ones.
class MixedPrecision {
 public:
  explicit MixedPrecision(bool on) : on_(on) {
    if (!on_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
#else
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(true);
#endif
  }
  ~MixedPrecision() {
    if (!on_) return;
    at::autocast::clear_cache();
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(at::kCUDA, false);
#else
    at::autocast::set_enabled(false);
#endif
  }

 private:
  bool on_;
};

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
double Millis(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Sums the epoch's steps into means (v1::StepTimeline).
class TimelineAccumulator {
 public:
  struct Step {
    Clock::time_point start, batch, broadcast, forward, backward, synced, optimized;
  };
  void Add(const Step& s, const std::vector<GradientSynchronizer::BucketTimes>& buckets) {
    ++steps_;
    t_.set_step_ms(t_.step_ms() + Millis(s.optimized - s.start));
    t_.set_data_ms(t_.data_ms() + Millis(s.batch - s.start));
    t_.set_broadcast_ms(t_.broadcast_ms() + Millis(s.broadcast - s.batch));
    t_.set_forward_ms(t_.forward_ms() + Millis(s.forward - s.broadcast));
    t_.set_backward_ms(t_.backward_ms() + Millis(s.backward - s.forward));
    t_.set_sync_wait_ms(t_.sync_wait_ms() + Millis(s.synced - s.backward));
    t_.set_optimizer_ms(t_.optimizer_ms() + Millis(s.optimized - s.synced));
    while (t_.buckets_size() < static_cast<int>(buckets.size())) t_.add_buckets();
    for (size_t i = 0; i < buckets.size(); ++i) {
      v1::BucketTimeline* b = t_.mutable_buckets(static_cast<int>(i));
      b->set_bytes(buckets[i].wire_bytes);
      b->set_ready_ms(b->ready_ms() + Millis(buckets[i].ready - s.forward));
      b->set_reduce_start_ms(b->reduce_start_ms() + Millis(buckets[i].reduce_start - s.forward));
      b->set_reduce_end_ms(b->reduce_end_ms() + Millis(buckets[i].reduce_end - s.forward));
    }
  }
  v1::StepTimeline Mean() const {
    v1::StepTimeline m = t_;
    m.set_steps(steps_);
    if (steps_ == 0) return m;
    const double n = static_cast<double>(steps_);
    m.set_step_ms(m.step_ms() / n);
    m.set_data_ms(m.data_ms() / n);
    m.set_broadcast_ms(m.broadcast_ms() / n);
    m.set_forward_ms(m.forward_ms() / n);
    m.set_backward_ms(m.backward_ms() / n);
    m.set_sync_wait_ms(m.sync_wait_ms() / n);
    m.set_optimizer_ms(m.optimizer_ms() / n);
    for (auto& b : *m.mutable_buckets()) {
      b.set_ready_ms(b.ready_ms() / n);
      b.set_reduce_start_ms(b.reduce_start_ms() / n);
      b.set_reduce_end_ms(b.reduce_end_ms() / n);
    }
    return m;
  }

 private:
  int64_t steps_ = 0;
  v1::StepTimeline t_;
};

std::string TimelineSummary(const v1::StepTimeline& t) {
  std::string s = absl::StrFormat(
      "step %.1f ms: data %.1f, buffers %.1f, forward %.1f, backward %.1f, waiting for all-reduce %.1f, "
      "optimizer %.1f",
      t.step_ms(), t.data_ms(), t.broadcast_ms(), t.forward_ms(), t.backward_ms(), t.sync_wait_ms(), t.optimizer_ms());
  for (int i = 0; i < t.buckets_size(); ++i) {
    const auto& b = t.buckets(i);
    absl::StrAppendFormat(&s, "; bucket %d (%d kB) ready %.1f, all-reduce %.1f-%.1f", i, b.bytes() / 1000, b.ready_ms(),
                          b.reduce_start_ms(), b.reduce_end_ms());
  }
  return s;
}

// Overwrites `tensors` on every rank with rank 0's values, in one flattened broadcast.
absl::Status BroadcastFromRankZero(Communicator& comm, const std::vector<torch::Tensor>& tensors) {
  if (tensors.empty() || comm.world_size() == 1) return absl::OkStatus();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> flat_parts;
  for (const auto& t : tensors) flat_parts.push_back(t.detach().reshape({-1}).to(torch::kFloat32));
  torch::Tensor flat = torch::cat(flat_parts);
  RETURN_IF_ERROR(comm.Broadcast(flat, 0));
  int64_t offset = 0;
  for (const auto& t : tensors) {
    t.detach().copy_(flat.narrow(0, offset, t.numel()).view(t.sizes()));
    offset += t.numel();
  }
  return absl::OkStatus();
}

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(const v1::TrainingSpec& t,
                                                       const std::vector<torch::Tensor>& params) {
  if (t.optimizer() == v1::ADAMW) {
    return std::make_unique<torch::optim::AdamW>(
        params, torch::optim::AdamWOptions(t.learning_rate()).weight_decay(t.weight_decay()));
  }
  return std::make_unique<torch::optim::SGD>(
      params,
      torch::optim::SGDOptions(t.learning_rate()).momentum(t.momentum()).weight_decay(t.weight_decay()));
}

torch::Device DeviceOf(const TrainableModel& m) { return m.Parameters().front().device(); }

void SetLearningRate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

// Evaluates on this rank's share of the evaluation set; sums are combined over ranks, so the
// result counts every sample exactly once.
absl::StatusOr<v1::EpochMetrics> Evaluate(const TrainingRun& run, TrainableModel& model,
                                          const core::DatasetReader& reader) {
  model.SetTraining(false);
  torch::NoGradGuard no_grad;
  BatchLoader loader({.reader = &reader,
                      .pin_memory = DeviceOf(model).is_cuda(),
                      .preprocess = run.spec.preprocess(),
                      .batch_size = std::max(run.spec.training().batch_size(), 256),
                      .workers = run.spec.training().data_workers()},
                     core::EvalShardIndices(reader.size(), run.rank, run.world_size));
  double loss_sum = 0, correct = 0, count = 0;
  for (int64_t b = 0; b < loader.num_batches(); ++b) {
    ASSIGN_OR_RETURN(Batch batch, loader.Next());
    const torch::Device device = DeviceOf(model);
    batch.labels = batch.labels.to(device);
    torch::Tensor logits = model.Forward(batch.images.to(device));
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, batch.labels,
                    torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    correct += logits.argmax(1).eq(batch.labels).sum().item<double>();
    count += static_cast<double>(batch.labels.size(0));
  }
  torch::Tensor sums = torch::tensor({loss_sum, correct, count}, torch::kFloat64).to(DeviceOf(model));
  RETURN_IF_ERROR(run.comm->AllReduceSum(sums));
  sums = sums.cpu();
  v1::EpochMetrics m;
  const double total = sums[2].item<double>();
  m.set_eval_count(static_cast<int64_t>(total));
  m.set_eval_loss(total > 0 ? sums[0].item<double>() / total : 0);
  m.set_eval_accuracy(total > 0 ? sums[1].item<double>() / total : 0);
  model.SetTraining(true);
  return m;
}

// One rank's run, in named parts: Setup (data, model, optimizer, resume, rank 0's state,
// gradient sync), then per epoch StartEpoch (its shard and loader), Step (data, forward and
// loss, backward with bucketed all-reduce, optimizer), Report and MaybeCheckpoint after each
// step, and FinishEpoch (evaluation, metrics, the epoch's checkpoint).
class TrainingLoop {
 public:
  explicit TrainingLoop(const TrainingRun& run) : run_(run), spec_(run.spec), t_(run.spec.training()) {}

  absl::StatusOr<TrainingResult> Run() {
    RETURN_IF_ERROR(Setup());
    for (int64_t epoch = position_.epoch; epoch < t_.epochs(); ++epoch) {
      RETURN_IF_ERROR(StartEpoch(epoch));
      for (int64_t step = epoch_.first_step; step < epoch_.stage_steps; ++step) {
        if (run_.cancelled != nullptr && run_.cancelled->load()) return absl::CancelledError("training cancelled");
        ASSIGN_OR_RETURN(const StepOutcome outcome, Step(step));
        const bool last = step + 1 == epoch_.stage_steps;
        if (run_.after_step) run_.after_step(outcome.global_step + 1, *model_);
        Report(step, outcome, last);
        if (!last) RETURN_IF_ERROR(MaybeCheckpoint(step, outcome.global_step));
      }
      RETURN_IF_ERROR(FinishEpoch());
    }
    result_.metrics.set_images_per_second(total_seconds_ > 0 ? total_images_ / total_seconds_ : 0);
    model_->SetTraining(false);
    result_.param_digest = ParamDigest(*model_);
    if (auto* builtin = dynamic_cast<BuiltinModel*>(model_.get())) result_.model = builtin->classifier();
    result_.trained = model_;
    return std::move(result_);
  }

 private:
  struct StepOutcome {
    int64_t global_step = 0;
    int64_t images = 0;
    double loss = 0;
    double lr = 0;
  };
  // What one epoch (or the rest of a resumed one) trains on, and its running sums.
  struct Epoch {
    int64_t epoch = 0;
    int64_t stage_start = 0;   // Where this group's part of the epoch's permutation starts.
    int64_t first_step = 0;    // A resumed epoch's next step.
    int64_t stage_steps = 0;
    int64_t steps_before = 0;  // Steps an earlier membership took, in this group's steps.
    bool resumed = false;
    std::vector<int64_t> shard;  // Kept only for on_batch_samples.
    std::unique_ptr<BatchLoader> loader;
    Clock::time_point start, window_start;
    int64_t window_images = 0, images = 0;
    double loss_sum = 0, loss_count = 0;
    TimelineAccumulator timeline;
  };

  absl::Status Setup() {
    torch::set_num_threads(t_.torch_threads());
    torch::manual_seed(t_.seed());
    ASSIGN_OR_RETURN(train_reader_, core::DatasetReader::Create(*run_.train, run_.dataset_root));
    ASSIGN_OR_RETURN(eval_reader_, core::DatasetReader::Create(*run_.eval, run_.dataset_root));
    if (run_.train->class_names_size() != spec_.model().num_classes()) {
      return absl::InvalidArgumentError(absl::StrCat("the dataset has ", run_.train->class_names_size(),
                                                     " classes, the model ", spec_.model().num_classes()));
    }
    ASSIGN_OR_RETURN(model_, CreateTrainableModel(spec_));
    // NCCL groups train on this process's CUDA device; Gloo groups on the CPU. On a GPU with
    // mixed precision: cuDNN picks its fastest kernels per shape (benchmark mode) and
    // convolutions run channels-last, the layout bf16 tensor cores want.
    device_ = spec_.backend() == "nccl" ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
    channels_last_ = device_.is_cuda() && t_.mixed_precision();
    if (device_.is_cuda()) at::globalContext().setBenchmarkCuDNN(true);
    model_->To(device_, channels_last_);
    model_->SetTraining(true);

    std::vector<torch::Tensor> trainable;
    for (const auto& p : model_->Parameters()) {
      if (p.requires_grad()) trainable.push_back(p);
    }
    optimizer_ = MakeOptimizer(t_, trainable);
    if (run_.resume) {
      ASSIGN_OR_RETURN(std::optional<std::string> blob, run_.checkpoints->LoadLatest());
      if (blob.has_value()) {
        RETURN_IF_ERROR(RestoreCheckpoint(*blob, *model_, *optimizer_, &position_));
        LOG(INFO) << "rank " << run_.rank << ": resumed at epoch " << position_.epoch << " step "
                  << position_.step_in_epoch;
      }
    }
    // Every rank starts from rank 0's parameters and buffers.
    buffers_ = model_->FloatBuffers();
    std::vector<torch::Tensor> state = model_->Parameters();
    state.insert(state.end(), buffers_.begin(), buffers_.end());
    RETURN_IF_ERROR(BroadcastFromRankZero(*run_.comm, state));

    const torch::ScalarType wire = t_.gradient_compression() == v1::FP16   ? torch::kHalf
                                   : t_.gradient_compression() == v1::BF16 ? torch::kBFloat16
                                                                           : torch::kFloat32;
    GradientSynchronizer::LowRank low_rank;
    if (t_.gradient_compression() == v1::POWERSGD) {
      // A resumed run starts a fresh Q and no error feedback (neither is checkpointed): the next
      // step's approximation is a cold start's, as after the warm-up.
      low_rank = {.rank = t_.powersgd_rank(), .warmup_steps = t_.powersgd_warmup_steps(),
                  .steps_done = position_.global_step, .seed = t_.seed()};
    }
    ASSIGN_OR_RETURN(sync_, GradientSynchronizer::Create(model_->Parameters(), run_.comm, t_.bucket_cap_bytes(),
                                                         wire, low_rank));
    steps_per_epoch_ =
        (core::ShardSize(train_reader_->size(), run_.world_size) + t_.batch_size() - 1) / t_.batch_size();
    // A resumed run's clock starts where its checkpoint's left off.
    run_start_ = Clock::now() - std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(position_.elapsed_seconds));
    last_checkpoint_ = Clock::now();
    next_global_step_ = position_.global_step;
    return absl::OkStatus();
  }

  // Which part of the epoch this group trains on (the shard ledger): all of it, or, when
  // resuming, the rest after what the checkpointing group had done. The same group goes on at
  // its step; a group of another size shards the rest of the permutation anew.
  absl::Status StartEpoch(int64_t epoch) {
    const int64_t dataset_size = train_reader_->size();
    const int64_t batch_size = t_.batch_size();
    Epoch& e = epoch_;
    e = Epoch();
    e.epoch = epoch;
    e.resumed = epoch == position_.epoch && position_.step_in_epoch > 0;
    if (epoch == position_.epoch) {
      const int32_t saved_world = position_.world_size > 0 ? position_.world_size : run_.world_size;
      if (saved_world == run_.world_size) {
        e.stage_start = position_.stage_start;
        e.first_step = position_.step_in_epoch;
      } else {
        e.stage_start = position_.EpochSamplesDone(batch_size, dataset_size, run_.world_size);
        LOG(INFO) << "rank " << run_.rank << ": the group changed from " << saved_world << " to " << run_.world_size
                  << " trainers; epoch " << epoch + 1
                  << (e.stage_start > 0 ? absl::StrCat(" goes on from sample ", e.stage_start, " of ", dataset_size)
                                        : std::string(" starts"));
      }
    }
    ASSIGN_OR_RETURN(std::vector<int64_t> indices,
                     core::ShardIndices({.seed = t_.seed(), .epoch = epoch, .rank = run_.rank,
                                         .world_size = run_.world_size, .dataset_size = dataset_size,
                                         .start = e.stage_start}));
    e.stage_steps = (static_cast<int64_t>(indices.size()) + batch_size - 1) / batch_size;
    e.steps_before = (e.stage_start + run_.world_size * batch_size - 1) / (run_.world_size * batch_size);
    if (run_.on_batch_samples) e.shard = indices;
    e.loader = std::make_unique<BatchLoader>(BatchLoaderOptions{.reader = train_reader_.get(),
                                                                  .pin_memory = device_.is_cuda(),
                                                                  .preprocess = spec_.preprocess(),
                                                                  .augment = t_.augment(),
                                                                  .seed = t_.seed(),
                                                                  .epoch = epoch,
                                                                  .batch_size = t_.batch_size(),
                                                                  .workers = t_.data_workers()},
                                             std::move(indices), e.first_step);
    // A resumed epoch carries on from its checkpoint's partial sums (on rank 0 only, so the
    // sums over ranks count them once) and time.
    e.start = Clock::now() - std::chrono::duration_cast<Clock::duration>(
                                 std::chrono::duration<double>(e.resumed ? position_.epoch_seconds : 0.0));
    e.window_start = Clock::now();
    e.images = e.resumed ? static_cast<int64_t>(position_.epoch_images) : 0;
    e.loss_sum = e.resumed && run_.rank == 0 ? position_.epoch_loss_sum : 0;
    e.loss_count = e.resumed && run_.rank == 0 ? position_.epoch_loss_count : 0;
    return absl::OkStatus();
  }

  // Data, forward and loss, backward with bucketed all-reduce, optimizer.
  absl::StatusOr<StepOutcome> Step(int64_t step) {
    Epoch& e = epoch_;
    const int64_t batch_size = t_.batch_size();
    TimelineAccumulator::Step times;
    times.start = Clock::now();
    ASSIGN_OR_RETURN(Batch batch, e.loader->Next());
    times.batch = Clock::now();
    if (run_.on_batch_samples) {
      const auto from = e.shard.begin() + step * batch_size;
      run_.on_batch_samples(std::vector<int64_t>(from, std::min(from + batch_size, e.shard.end())));
    }
    StepOutcome out;
    out.global_step = next_global_step_++;
    // The schedule follows the epoch's progress (equal to global_step while the group is
    // unchanged).
    out.lr = core::LearningRateAt(t_, e.epoch * steps_per_epoch_ + e.steps_before + step, steps_per_epoch_);
    SetLearningRate(*optimizer_, out.lr);
    RETURN_IF_ERROR(BroadcastFromRankZero(*run_.comm, buffers_));  // As DDP's broadcast_buffers.
    times.broadcast = Clock::now();
    optimizer_->zero_grad();
    sync_->BeginStep();
    batch.images = batch.images.to(device_, /*non_blocking=*/true);
    if (channels_last_) batch.images = batch.images.contiguous(at::MemoryFormat::ChannelsLast);
    batch.labels = batch.labels.to(device_, /*non_blocking=*/true);
    torch::Tensor loss;
    {
      // bf16 autocast on GPU (no loss scaling needed, unlike fp16).
      MixedPrecision amp(t_.mixed_precision() && device_.is_cuda());
      loss = torch::nn::functional::cross_entropy(model_->Forward(batch.images), batch.labels);
    }
    times.forward = Clock::now();
    loss.backward();
    times.backward = Clock::now();
    RETURN_IF_ERROR(sync_->FinishStep());
    times.synced = Clock::now();
    optimizer_->step();
    times.optimized = Clock::now();
    e.timeline.Add(times, sync_->LastStepTimes());

    out.images = batch.labels.size(0);
    out.loss = loss.item<double>();
    if (!std::isfinite(out.loss)) {
      // Diverged: every later step is NaN too, and a model trained on would register as if
      // it were fine. Fail the job, saying where and why.
      return absl::FailedPreconditionError(absl::StrFormat(
          "training diverged: the loss is %f at epoch %d step %d (learning rate %g); lower --lr "
          "or add warm-up (--warmup-steps)",
          out.loss, e.epoch + 1, step + 1, out.lr));
    }
    e.loss_sum += out.loss * static_cast<double>(out.images);
    e.loss_count += static_cast<double>(out.images);
    e.window_images += out.images * run_.world_size;
    e.images += out.images * run_.world_size;
    return out;
  }

  // Step metrics, at most once per report interval and after the epoch's last step.
  void Report(int64_t step, const StepOutcome& s, bool last) {
    Epoch& e = epoch_;
    const auto now = Clock::now();
    if (!run_.on_step || (!last && now - e.window_start < absl::ToChronoNanoseconds(run_.report_interval))) return;
    v1::StepMetrics m;
    m.set_epoch(e.epoch);
    m.set_step(e.steps_before + step + 1);
    m.set_steps_per_epoch(e.steps_before + e.stage_steps);
    m.set_global_step(s.global_step + 1);
    m.set_loss(s.loss);
    m.set_images_per_second(static_cast<double>(e.window_images) / Seconds(now - e.window_start));
    m.set_learning_rate(s.lr);
    run_.on_step(m);
    e.window_start = now;
    e.window_images = 0;
  }

  // Mid-epoch checkpoints. Every rank takes the same branch (it depends on the step only):
  // every N steps when asked for, and every kCheckpointPollSteps steps the ranks agree whether
  // rank 0 wants one (its interval passed, or the coordinator asked). The same all-reduce sums
  // the epoch's partial loss, so the checkpoint holds the whole group's.
  absl::Status MaybeCheckpoint(int64_t step, int64_t global_step) {
    Epoch& e = epoch_;
    const bool every_n = t_.checkpoint_every_steps() > 0 && (global_step + 1) % t_.checkpoint_every_steps() == 0;
    if (run_.checkpoints == nullptr || !(every_n || (global_step + 1) % kCheckpointPollSteps == 0)) {
      return absl::OkStatus();
    }
    bool want = every_n;
    if (run_.rank == 0) {
      const bool interval_passed = t_.checkpoint_interval_s() > 0 &&
                                   Clock::now() - last_checkpoint_ >= std::chrono::seconds(t_.checkpoint_interval_s());
      const bool asked = run_.checkpoint_now != nullptr && run_.checkpoint_now->exchange(false);
      want = want || interval_passed || asked;
    }
    torch::Tensor poll = torch::tensor({want ? 1.0 : 0.0, e.loss_sum, e.loss_count}, torch::kFloat64).to(device_);
    RETURN_IF_ERROR(run_.comm->AllReduceSum(poll));
    poll = poll.cpu();
    const double* p = poll.data_ptr<double>();
    if (p[0] > 0 && run_.rank == 0) {
      SaveCheckpoint({.epoch = e.epoch, .step_in_epoch = step + 1, .global_step = global_step + 1,
                      .world_size = run_.world_size, .stage_start = e.stage_start,
                      .epoch_loss_sum = p[1], .epoch_loss_count = p[2],
                      .epoch_images = static_cast<double>(e.images),
                      .epoch_seconds = Seconds(Clock::now() - e.start)},
                     every_n ? "every N steps" : "interval or request");
    }
    return absl::OkStatus();
  }

  // The epoch's training loss over all ranks, evaluation, metrics, and the epoch-end checkpoint.
  absl::Status FinishEpoch() {
    Epoch& e = epoch_;
    const double epoch_seconds = Seconds(Clock::now() - e.start);
    torch::Tensor train_sums = torch::tensor({e.loss_sum, e.loss_count}, torch::kFloat64).to(device_);
    RETURN_IF_ERROR(run_.comm->AllReduceSum(train_sums));
    train_sums = train_sums.cpu();
    // Each rank's last forward updated its own batch-norm statistics: evaluate (and end) with
    // rank 0's, the registered model's, on every rank, so the metrics are that model's and the
    // ranks' digests agree.
    RETURN_IF_ERROR(BroadcastFromRankZero(*run_.comm, buffers_));
    ASSIGN_OR_RETURN(v1::EpochMetrics metrics, Evaluate(run_, *model_, *eval_reader_));
    if (!std::isfinite(metrics.eval_loss())) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "training diverged: the evaluation loss after epoch %d is %f", e.epoch + 1, metrics.eval_loss()));
    }
    metrics.set_epoch(e.epoch);
    metrics.set_train_loss(train_sums[1].item<double>() > 0
                               ? train_sums[0].item<double>() / train_sums[1].item<double>() : 0);
    metrics.set_images_per_second(static_cast<double>(e.images) / epoch_seconds);
    metrics.set_seconds(epoch_seconds);
    metrics.set_train_samples(e.images);
    metrics.set_elapsed_seconds(Seconds(Clock::now() - run_start_));
    *metrics.mutable_timeline() = e.timeline.Mean();
    if (run_.rank == 0) LOG(INFO) << "epoch " << e.epoch + 1 << " " << TimelineSummary(metrics.timeline());
    total_images_ += static_cast<double>(e.images);
    total_seconds_ += epoch_seconds;
    // The checkpoint first: a coordinator that re-forms the group on this epoch's report
    // (to grow it) finds the epoch's end saved.
    if (run_.rank == 0 && run_.checkpoints != nullptr) {
      SaveCheckpoint({.epoch = e.epoch + 1, .step_in_epoch = 0, .global_step = next_global_step_,
                      .world_size = run_.world_size},
                     "epoch end");
    }
    if (run_.on_epoch) run_.on_epoch(metrics);
    result_.metrics.set_epochs(static_cast<int32_t>(e.epoch + 1));
    result_.metrics.set_train_loss(metrics.train_loss());
    result_.metrics.set_validation_loss(metrics.eval_loss());
    result_.metrics.set_validation_accuracy(metrics.eval_accuracy());
    return absl::OkStatus();
  }

  // Rank 0 saves a checkpoint at `at` with the epoch's partial sums (already summed over ranks).
  void SaveCheckpoint(TrainingPosition at, const char* why) {
    at.elapsed_seconds = Seconds(Clock::now() - run_start_);
    auto blob = SerializeCheckpoint(*model_, *optimizer_, at);
    absl::Status saved = blob.ok() ? run_.checkpoints->Save(*blob, at) : blob.status();
    last_checkpoint_ = Clock::now();
    if (!saved.ok()) {
      LOG(ERROR) << "checkpoint (" << why << ") at step " << at.global_step << " failed: " << saved;
      return;
    }
    if (run_.on_checkpoint) run_.on_checkpoint(at);
  }

  const TrainingRun& run_;
  const v1::JobSpec& spec_;
  const v1::TrainingSpec& t_;
  std::unique_ptr<core::DatasetReader> train_reader_, eval_reader_;
  std::shared_ptr<TrainableModel> model_;
  torch::Device device_ = torch::kCPU;
  bool channels_last_ = false;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::vector<torch::Tensor> buffers_;
  std::unique_ptr<GradientSynchronizer> sync_;
  TrainingPosition position_;
  int64_t steps_per_epoch_ = 0;
  int64_t next_global_step_ = 0;  // Optimizer steps taken in the whole run.
  Clock::time_point run_start_, last_checkpoint_;
  Epoch epoch_;
  double total_images_ = 0, total_seconds_ = 0;
  TrainingResult result_;
};

}  // namespace

std::string ParamDigest(const CheckpointableModel& model) {
  std::string bytes;
  for (const auto& [name, tensor] : model.State()) {
    torch::Tensor t = tensor.contiguous().cpu();
    bytes += name;
    bytes.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  }
  return core::Sha256Hex(bytes);
}

absl::StatusOr<TrainingResult> Train(const TrainingRun& run) {
  if (run.comm == nullptr || run.train == nullptr || run.eval == nullptr) {
    return absl::InvalidArgumentError("training run needs a communicator and datasets");
  }
  if (run.resume && run.checkpoints == nullptr) {
    return absl::InvalidArgumentError("resuming needs a checkpoint store");
  }
  // LibTorch throws on shape errors and the like; none may escape this library.
  auto result = core::CallTorch("training", [&] { return TrainingLoop(run).Run(); });
  if (!result.ok()) return result.status();
  return *std::move(result);
}

}  // namespace kennel::trainer
