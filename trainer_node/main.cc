// kennel-trainer: flags -> TrainerNodeOptions -> TrainerNode::Create -> Run until
// SIGINT/SIGTERM.
#include "core/logging.h"

#include "core/process_setup.h"

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <iostream>
#include <thread>

#include "core/tls_flags.h"
#include "trainer_node/trainer_node.h"

namespace {
volatile std::sig_atomic_t g_signal = 0;
// How long SIGTERM waits for the job to stop cleanly (systemd's default stop timeout is 90 s).
constexpr int kStopDeadlineSeconds = 30;
}

int main(int argc, char** argv) {
  kennel::trainer::TrainerNodeOptions options;
  CLI::App app(
      "kennel-trainer: a trainer node. Dials the coordinator, takes training assignments and "
      "trains data-parallel with its peers (Gloo on CPU, NCCL on GPU).");
  app.add_option("--coordinator", options.coordinator, "Coordinator host:port")->capture_default_str();
  app.add_option("--name", options.name,
                 "Node name, unique in the cluster (default: the --tls_cert's name, else the hostname)");
  app.add_option("--dataset_root", options.dataset_root,
                 "This machine's copy of the datasets (default: the path in the job spec)");
  app.add_option("--advertise_host", options.advertise_host,
                 "Address peers use to reach this trainer's collective endpoint")
      ->capture_default_str();
  app.add_option("--work_dir", options.work_dir, "Scratch folder for transfers")->capture_default_str();
  kennel::core::AddTlsFlags(app, options.tls, nullptr);
  CLI11_PARSE(app, argc, argv);

  kennel::core::TuneAllocator();

  kennel::core::DisableMutexDeadlockDetection();
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  // Before anything starts: a SIGTERM during start-up stops cleanly too.
  std::signal(SIGINT, [](int s) { g_signal = s; });
  std::signal(SIGTERM, [](int s) { g_signal = s; });
  auto node = kennel::trainer::TrainerNode::Create(options);
  if (!node.ok()) {
    std::cerr << "kennel-trainer: " << node.status().message() << "\n";
    return 1;
  }
  std::atomic<bool> stopped{false};
  // Only this thread may outlive a stuck stop; it touches nothing but atomics.
  std::thread deadline([&] {
    while (g_signal == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    // A job stops at its next step; a rank blocked in a collective on a vanished peer could
    // take the whole collective timeout. Do not outlive the stop deadline.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(kStopDeadlineSeconds);
    while (!stopped && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!stopped) {
      LOG(ERROR) << "the job did not stop within " << kStopDeadlineSeconds << " s; exiting anyway";
      std::_Exit(1);
    }
  });
  while (g_signal == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  LOG(INFO) << "signal " << g_signal << ": stopping the job and shutting down";
  (*node)->Shutdown();
  node->reset();  // Stops the job and joins its thread.
  stopped = true;
  deadline.join();
  return 0;
}
