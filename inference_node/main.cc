// kennel-inference: flags -> InferenceNodeOptions -> InferenceNode::Create -> serve until
// SIGINT/SIGTERM.
#include "core/logging.h"

#include "core/process_setup.h"
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <iostream>
#include <thread>

#include "core/tls_flags.h"
#include "inference_node/inference_node.h"
#include "inference_node/serving_model.h"
#include "inference_node/thread_plan.h"

namespace {
volatile std::sig_atomic_t g_signal = 0;
}

int main(int argc, char** argv) {
  kennel::inference::InferenceNodeOptions o;
  int max_delay_us = 0, torch_threads = 0;
  CLI::App app(
      "kennel-inference: serves a Kennel model over gRPC (Classify, ClassifyStream) with dynamic "
      "batching, grpc.health.v1 and Prometheus metrics; takes deploys from the coordinator.");
  app.add_option("--listen", o.listen_address, "host:port for the Inference service")->capture_default_str();
  app.add_option("--metrics_port", o.metrics_port, "Prometheus /metrics port on the --listen host (0: any free, -1: off)")
      ->capture_default_str();
  app.add_option("--metrics_listen", o.metrics_address,
                 "host:port for /metrics instead, e.g. a private interface while --listen faces clients");
  app.add_option("--name", o.name, "Node name in the cluster (with --tls_cert: the certificate's name)")
      ->capture_default_str();
  app.add_option("--coordinator", o.coordinator, "Coordinator host:port (registration, deploys)");
  app.add_option("--advertise", o.advertise_address, "Address clients reach this node on (default: --listen)");
  app.add_option("--model_dir", o.model_dir, "Serve this local artifact folder at start");
  app.add_option("--model", o.model, "Serve name[:version] from the coordinator at start");
  app.add_option("--cache_dir", o.cache_dir, "Where downloaded artifacts are kept")->capture_default_str();
  int instances = 0;
  app.add_option("--instances", instances,
                 "Model instances, each with its own weights and thread, all taking batches from one queue (0: min(4, cores) on a CPU, "
                 "where several single-thread instances beat one multi-thread forward; 2 on a GPU, "
                 "so one copies its batch in while the other computes)")
      ->check(CLI::Range(0, 64))->capture_default_str();
  app.add_option("--max_batch", o.engine.model.batcher.max_batch_size, "Largest batch the batcher forms")
      ->check(CLI::Range(1, 4096))->capture_default_str();
  app.add_option("--max_delay_us", max_delay_us, "Longest a request waits for a batch to fill")
      ->check(CLI::Range(0, 10'000'000))->capture_default_str();
  app.add_option("--queue", o.engine.model.batcher.max_queue_size, "Requests queued per instance before RESOURCE_EXHAUSTED (the instances share one queue of --queue x instances)")
      ->check(CLI::Range(1, 1'000'000))->capture_default_str();
  app.add_option("--preprocess_queue", o.engine.preprocess_queue,
                 "Requests waiting for decoding; with --queue x instances, the most the node holds "
                 "(streams pause reading beyond it, unary calls get RESOURCE_EXHAUSTED)")
      ->check(CLI::Range(1, 1'000'000))->capture_default_str();
  app.add_option("--max_stream_in_flight", o.max_in_flight_per_stream,
                 "Requests of one stream read but not yet answered (reading pauses beyond it)")
      ->check(CLI::Range(1, 100'000))->capture_default_str();
  int preprocess_threads = 0;
  app.add_option("--preprocess_threads", preprocess_threads,
                 "Decode/resize threads, one pool for all streams (0: the cores the model does not use: "
                 "cores - instances on a GPU; on a CPU, whose instances use every core by default, one per "
                 "core, sharing them with the model)")
      ->check(CLI::Range(0, 256))->capture_default_str();
  app.add_option("--device", o.engine.model.device, "Where the model runs: cpu, cuda or cuda:N")
      ->capture_default_str();
  app.add_option("--precision", o.engine.model.precision,
                 "fp32, bf16, or fp16 (CUDA only); requests are converted on the device")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}))->capture_default_str();
  app.add_option("--torch_threads", torch_threads, "Intra-op threads per forward (0: cores / instances on a CPU, 1 on a GPU)")
      ->check(CLI::Range(0, 256))->capture_default_str();
  std::string cuda_tuning = "all";
  app.add_option("--cuda_settings", cuda_tuning,
                 "On CUDA: all, none, or a comma list of channels_last (NHWC weights and inputs), "
                 "cudnn_benchmark (cuDNN times its algorithms per batch size at warm-up), pinned_upload "
                 "(batches assembled in page-locked memory, uploaded asynchronously), own_stream (a CUDA "
                 "stream per instance, so one's upload overlaps another's forward); ignored on a CPU")
      ->capture_default_str();
  app.add_option("--max_message_mb", o.max_message_bytes, "Largest request, MiB")->transform([](std::string s) {
    return std::to_string(std::stoll(s) << 20);
  });
  kennel::core::AddTlsFlags(app, o.tls, &o.insecure);
  CLI11_PARSE(app, argc, argv);
  o.engine.model.batcher.max_queue_delay = absl::Microseconds(max_delay_us);
  o.engine.limits.max_encoded_bytes = o.max_message_bytes;

  kennel::core::TuneAllocator();

  kennel::core::DisableMutexDeadlockDetection();
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  auto cuda = kennel::inference::ParseCudaTuning(cuda_tuning);
  if (!cuda.ok()) {
    std::cerr << "kennel-inference: --cuda_settings: " << cuda.status().message() << "\n";
    return 2;
  }
  o.engine.model.cuda = *cuda;
  const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  auto plan = kennel::inference::PlanThreads(cores, o.engine.model.on_gpu(), instances, torch_threads,
                                             preprocess_threads);
  if (!plan.ok()) {
    std::cerr << "kennel-inference: " << plan.status().message() << "\n";
    return 2;
  }
  o.engine.model.instances = plan->instances;
  o.engine.preprocess_threads = plan->preprocess_threads;
  torch::set_num_threads(plan->torch_threads);
  LOG(INFO) << "threads: " << plan->summary;
  if (o.engine.model.on_gpu()) LOG(INFO) << "CUDA settings: " << kennel::inference::CudaTuningText(o.engine.model.cuda);
  // Before anything starts: a SIGTERM during start-up stops cleanly too.
  std::signal(SIGINT, [](int s) { g_signal = s; });
  std::signal(SIGTERM, [](int s) { g_signal = s; });
  auto node = kennel::inference::InferenceNode::Create(o);
  if (!node.ok()) {
    std::cerr << "kennel-inference: " << node.status().message() << "\n";
    return 1;
  }
  std::cout << "listening on port " << (*node)->port() << " metrics " << (*node)->metrics_port() << std::endl;
  while (g_signal == 0 && !(*node)->retired()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (g_signal == 0) {
    LOG(INFO) << "retired by the coordinator: drained, exiting";
    return 0;
  }
  LOG(INFO) << "signal " << g_signal << ": draining and shutting down";
  (*node)->Shutdown();
  return 0;
}
