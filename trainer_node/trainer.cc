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

std::vector<torch::Tensor> FloatBuffers(const torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (const auto& b : m.buffers()) {
    if (b.is_floating_point()) out.push_back(b);
  }
  return out;
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

torch::Device DeviceOf(const torch::nn::Module& m) { return m.parameters().front().device(); }

void SetLearningRate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

// Evaluates on this rank's share of the evaluation set; sums are combined over ranks, so the
// result counts every sample exactly once.
absl::StatusOr<v1::EpochMetrics> Evaluate(const TrainingRun& run, core::Classifier& model,
                                          const core::DatasetReader& reader) {
  model.eval();
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
    torch::Tensor logits = model.forward(batch.images.to(device));
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
  model.train();
  return m;
}

absl::StatusOr<TrainingResult> TrainImpl(const TrainingRun& run) {
  const v1::JobSpec& spec = run.spec;
  const v1::TrainingSpec& t = spec.training();
  torch::set_num_threads(t.torch_threads());
  torch::manual_seed(t.seed());

  ASSIGN_OR_RETURN(auto train_reader, core::DatasetReader::Create(*run.train, run.dataset_root));
  ASSIGN_OR_RETURN(auto eval_reader, core::DatasetReader::Create(*run.eval, run.dataset_root));
  if (run.train->class_names_size() != spec.model().num_classes()) {
    return absl::InvalidArgumentError(absl::StrCat("the dataset has ", run.train->class_names_size(),
                                                   " classes, the model ", spec.model().num_classes()));
  }

  ASSIGN_OR_RETURN(std::shared_ptr<core::Classifier> model, core::CreateModel(spec.model()));
  if (!t.init_weights().empty()) {
    ASSIGN_OR_RETURN(core::StateDict weights, core::ReadWeightsFile(t.init_weights()));
    RETURN_IF_ERROR(core::LoadStateDict(*model, weights, {.strict = false}));
    LOG(INFO) << "rank " << run.rank << ": initial weights from " << t.init_weights();
  }
  if (t.freeze_backbone()) model->FreezeBackbone();
  // NCCL groups train on this process's CUDA device; Gloo groups on the CPU.
  const torch::Device device = spec.backend() == "nccl" ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  model->to(device);
  // On a GPU with mixed precision: cuDNN picks its fastest kernels per shape (benchmark mode)
  // and convolutions run channels-last, the layout bf16 tensor cores want.
  const bool channels_last = device.is_cuda() && t.mixed_precision();
  if (device.is_cuda()) at::globalContext().setBenchmarkCuDNN(true);
  if (channels_last) {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) {
      if (p.dim() == 4) p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
    }
  }
  model->train();

  std::vector<torch::Tensor> trainable;
  for (const auto& p : model->parameters()) {
    if (p.requires_grad()) trainable.push_back(p);
  }
  auto optimizer = MakeOptimizer(t, trainable);

  TrainingPosition position;
  if (run.resume) {
    ASSIGN_OR_RETURN(std::optional<std::string> blob, run.checkpoints->LoadLatest());
    if (blob.has_value()) {
      RETURN_IF_ERROR(RestoreCheckpoint(*blob, *model, *optimizer, &position));
      LOG(INFO) << "rank " << run.rank << ": resumed at epoch " << position.epoch << " step "
                << position.step_in_epoch;
    }
  }
  // Every rank starts from rank 0's parameters and buffers.
  std::vector<torch::Tensor> state = model->parameters();
  for (const auto& b : FloatBuffers(*model)) state.push_back(b);
  RETURN_IF_ERROR(BroadcastFromRankZero(*run.comm, state));
  const std::vector<torch::Tensor> buffers = FloatBuffers(*model);

  const torch::ScalarType wire = t.gradient_compression() == v1::FP16   ? torch::kHalf
                                 : t.gradient_compression() == v1::BF16 ? torch::kBFloat16
                                                                        : torch::kFloat32;
  GradientSynchronizer::LowRank low_rank;
  if (t.gradient_compression() == v1::POWERSGD) {
    // A resumed run starts a fresh Q and no error feedback (neither is checkpointed): the next
    // step's approximation is a cold start's, as after the warm-up.
    low_rank = {.rank = t.powersgd_rank(), .warmup_steps = t.powersgd_warmup_steps(),
                .steps_done = position.global_step, .seed = t.seed()};
  }
  ASSIGN_OR_RETURN(auto sync, GradientSynchronizer::Create(model->parameters(), run.comm,
                                                           t.bucket_cap_bytes(), wire, low_rank));
  const int64_t steps_per_epoch =
      (core::ShardSize(train_reader->size(), run.world_size) + t.batch_size() - 1) / t.batch_size();
  TrainingResult result;
  double total_images = 0, total_seconds = 0;
  // A resumed run's clock starts where its checkpoint's left off.
  const auto run_start = Clock::now() - std::chrono::duration_cast<Clock::duration>(
                                            std::chrono::duration<double>(position.elapsed_seconds));
  auto last_checkpoint = Clock::now();
  // Rank 0 saves a checkpoint at `at` with the epoch's partial sums (already summed over ranks).
  auto save_checkpoint = [&](TrainingPosition at, const char* why) {
    at.elapsed_seconds = Seconds(Clock::now() - run_start);
    auto blob = SerializeCheckpoint(*model, *optimizer, at);
    absl::Status saved = blob.ok() ? run.checkpoints->Save(*blob, at) : blob.status();
    last_checkpoint = Clock::now();
    if (!saved.ok()) {
      LOG(ERROR) << "checkpoint (" << why << ") at step " << at.global_step << " failed: " << saved;
      return;
    }
    if (run.on_checkpoint) run.on_checkpoint(at);
  };

  const int64_t dataset_size = train_reader->size();
  const int64_t batch_size = t.batch_size();
  int64_t next_global_step = position.global_step;  // Optimizer steps taken in the whole run.
  for (int64_t epoch = position.epoch; epoch < t.epochs(); ++epoch) {
    // Which part of the epoch this group trains on (the shard ledger): all of it, or, when
    // resuming, the rest after what the checkpointing group had done. The same group goes on
    // at its step; a group of another size shards the rest of the permutation anew.
    int64_t stage_start = 0, first_step = 0;
    const bool resumed_epoch = epoch == position.epoch && position.step_in_epoch > 0;
    if (epoch == position.epoch) {
      const int32_t saved_world = position.world_size > 0 ? position.world_size : run.world_size;
      if (saved_world == run.world_size) {
        stage_start = position.stage_start;
        first_step = position.step_in_epoch;
      } else {
        stage_start = position.EpochSamplesDone(batch_size, dataset_size, run.world_size);
        LOG(INFO) << "rank " << run.rank << ": the group changed from " << saved_world << " to " << run.world_size
                  << " trainers; epoch " << epoch + 1
                  << (stage_start > 0 ? absl::StrCat(" goes on from sample ", stage_start, " of ", dataset_size)
                                      : std::string(" starts"));
      }
    }
    ASSIGN_OR_RETURN(std::vector<int64_t> indices,
                     core::ShardIndices({.seed = t.seed(), .epoch = epoch, .rank = run.rank,
                                         .world_size = run.world_size, .dataset_size = dataset_size,
                                         .start = stage_start}));
    const int64_t stage_steps = (static_cast<int64_t>(indices.size()) + batch_size - 1) / batch_size;
    // Steps an earlier membership took, in this group's steps (for progress and the schedule).
    const int64_t steps_before = (stage_start + run.world_size * batch_size - 1) / (run.world_size * batch_size);
    const std::vector<int64_t> shard = run.on_batch_samples ? indices : std::vector<int64_t>();
    BatchLoader loader({.reader = train_reader.get(),
                        .pin_memory = device.is_cuda(),
                        .preprocess = spec.preprocess(),
                        .augment = t.augment(),
                        .seed = t.seed(),
                        .epoch = epoch,
                        .batch_size = t.batch_size(),
                        .workers = t.data_workers()},
                       std::move(indices), first_step);
    // A resumed epoch carries on from its checkpoint's partial sums (on rank 0 only, so the
    // sums over ranks count them once) and time.
    const auto epoch_start =
        Clock::now() - std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
                           resumed_epoch ? position.epoch_seconds : 0.0));
    auto window_start = Clock::now();
    int64_t window_images = 0;
    int64_t epoch_images = resumed_epoch ? static_cast<int64_t>(position.epoch_images) : 0;
    double loss_sum = resumed_epoch && run.rank == 0 ? position.epoch_loss_sum : 0;
    double loss_count = resumed_epoch && run.rank == 0 ? position.epoch_loss_count : 0;
    TimelineAccumulator timeline;
    for (int64_t step = first_step; step < stage_steps; ++step) {
      if (run.cancelled != nullptr && run.cancelled->load()) {
        return absl::CancelledError("training cancelled");
      }
      TimelineAccumulator::Step times;
      times.start = Clock::now();
      ASSIGN_OR_RETURN(Batch batch, loader.Next());
      times.batch = Clock::now();
      if (run.on_batch_samples) {
        const auto from = shard.begin() + step * batch_size;
        run.on_batch_samples(std::vector<int64_t>(from, std::min(from + batch_size, shard.end())));
      }
      const int64_t global_step = next_global_step++;
      // The schedule follows the epoch's progress (equal to global_step while the group is
      // unchanged).
      const double lr = core::LearningRateAt(t, epoch * steps_per_epoch + steps_before + step, steps_per_epoch);
      SetLearningRate(*optimizer, lr);
      RETURN_IF_ERROR(BroadcastFromRankZero(*run.comm, buffers));  // As DDP's broadcast_buffers.
      times.broadcast = Clock::now();
      optimizer->zero_grad();
      sync->BeginStep();
      batch.images = batch.images.to(device, /*non_blocking=*/true);
      if (channels_last) batch.images = batch.images.contiguous(at::MemoryFormat::ChannelsLast);
      batch.labels = batch.labels.to(device, /*non_blocking=*/true);
      torch::Tensor loss;
      {
        // bf16 autocast on GPU (no loss scaling needed, unlike fp16).
        MixedPrecision amp(t.mixed_precision() && device.is_cuda());
        loss = torch::nn::functional::cross_entropy(model->forward(batch.images), batch.labels);
      }
      times.forward = Clock::now();
      loss.backward();
      times.backward = Clock::now();
      RETURN_IF_ERROR(sync->FinishStep());
      times.synced = Clock::now();
      optimizer->step();
      times.optimized = Clock::now();
      timeline.Add(times, sync->LastStepTimes());

      const int64_t n = batch.labels.size(0);
      const double step_loss = loss.item<double>();
      if (!std::isfinite(step_loss)) {
        // Diverged: every later step is NaN too, and a model trained on would register as if
        // it were fine. Fail the job, saying where and why.
        return absl::FailedPreconditionError(absl::StrFormat(
            "training diverged: the loss is %f at epoch %d step %d (learning rate %g); lower --lr "
            "or add warm-up (--warmup-steps)",
            step_loss, epoch + 1, step + 1, lr));
      }
      loss_sum += step_loss * static_cast<double>(n);
      loss_count += static_cast<double>(n);
      window_images += n * run.world_size;
      epoch_images += n * run.world_size;
      const auto now = Clock::now();
      const bool last = step + 1 == stage_steps;
      if (run.after_step) run.after_step(global_step + 1, *model);
      if (run.on_step &&
          (last || now - window_start >= absl::ToChronoNanoseconds(run.report_interval))) {
        v1::StepMetrics m;
        m.set_epoch(epoch);
        m.set_step(steps_before + step + 1);
        m.set_steps_per_epoch(steps_before + stage_steps);
        m.set_global_step(global_step + 1);
        m.set_loss(step_loss);
        m.set_images_per_second(static_cast<double>(window_images) / Seconds(now - window_start));
        m.set_learning_rate(lr);
        run.on_step(m);
        window_start = now;
        window_images = 0;
      }
      // Mid-epoch checkpoints. Every rank takes the same branch (it depends on the step only):
      // every N steps when asked for, and every kCheckpointPollSteps steps the ranks agree
      // whether rank 0 wants one (its interval passed, or the coordinator asked). The same
      // all-reduce sums the epoch's partial loss, so the checkpoint holds the whole group's.
      const bool every_n = t.checkpoint_every_steps() > 0 && (global_step + 1) % t.checkpoint_every_steps() == 0;
      if (run.checkpoints != nullptr && !last && (every_n || (global_step + 1) % kCheckpointPollSteps == 0)) {
        bool want = every_n;
        if (run.rank == 0) {
          const bool interval_passed =
              t.checkpoint_interval_s() > 0 && now - last_checkpoint >= std::chrono::seconds(t.checkpoint_interval_s());
          const bool asked = run.checkpoint_now != nullptr && run.checkpoint_now->exchange(false);
          want = want || interval_passed || asked;
        }
        torch::Tensor poll = torch::tensor({want ? 1.0 : 0.0, loss_sum, loss_count}, torch::kFloat64).to(device);
        RETURN_IF_ERROR(run.comm->AllReduceSum(poll));
        poll = poll.cpu();
        const double* p = poll.data_ptr<double>();
        if (p[0] > 0 && run.rank == 0) {
          save_checkpoint({.epoch = epoch, .step_in_epoch = step + 1, .global_step = global_step + 1,
                           .world_size = run.world_size, .stage_start = stage_start,
                           .epoch_loss_sum = p[1], .epoch_loss_count = p[2],
                           .epoch_images = static_cast<double>(epoch_images),
                           .epoch_seconds = Seconds(Clock::now() - epoch_start)},
                          every_n ? "every N steps" : "interval or request");
        }
      }
    }
    const double epoch_seconds = Seconds(Clock::now() - epoch_start);
    torch::Tensor train_sums = torch::tensor({loss_sum, loss_count}, torch::kFloat64).to(device);
    RETURN_IF_ERROR(run.comm->AllReduceSum(train_sums));
    train_sums = train_sums.cpu();
    ASSIGN_OR_RETURN(v1::EpochMetrics metrics, Evaluate(run, *model, *eval_reader));
    if (!std::isfinite(metrics.eval_loss())) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "training diverged: the evaluation loss after epoch %d is %f", epoch + 1, metrics.eval_loss()));
    }
    metrics.set_epoch(epoch);
    metrics.set_train_loss(train_sums[1].item<double>() > 0
                               ? train_sums[0].item<double>() / train_sums[1].item<double>() : 0);
    metrics.set_images_per_second(static_cast<double>(epoch_images) / epoch_seconds);
    metrics.set_seconds(epoch_seconds);
    metrics.set_train_samples(epoch_images);
    metrics.set_elapsed_seconds(Seconds(Clock::now() - run_start));
    *metrics.mutable_timeline() = timeline.Mean();
    if (run.rank == 0) LOG(INFO) << "epoch " << epoch + 1 << " " << TimelineSummary(metrics.timeline());
    total_images += static_cast<double>(epoch_images);
    total_seconds += epoch_seconds;
    // The checkpoint first: a coordinator that re-forms the group on this epoch's report
    // (to grow it) finds the epoch's end saved.
    if (run.rank == 0 && run.checkpoints != nullptr) {
      save_checkpoint({.epoch = epoch + 1, .step_in_epoch = 0, .global_step = next_global_step,
                       .world_size = run.world_size},
                      "epoch end");
    }
    if (run.on_epoch) run.on_epoch(metrics);
    result.metrics.set_epochs(static_cast<int32_t>(epoch + 1));
    result.metrics.set_train_loss(metrics.train_loss());
    result.metrics.set_validation_loss(metrics.eval_loss());
    result.metrics.set_validation_accuracy(metrics.eval_accuracy());
  }
  result.metrics.set_images_per_second(total_seconds > 0 ? total_images / total_seconds : 0);
  model->eval();
  result.param_digest = ParamDigest(*model);
  result.model = std::move(model);
  return result;
}

}  // namespace

std::string ParamDigest(const torch::nn::Module& module) {
  std::string bytes;
  for (const auto& [name, tensor] : core::GetStateDict(module)) {
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
  auto result = core::CallTorch("training", [&] { return TrainImpl(run); });
  if (!result.ok()) return result.status();
  return *std::move(result);
}

}  // namespace kennel::trainer
