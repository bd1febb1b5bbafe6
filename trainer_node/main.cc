// kennel-trainer: flags -> TrainerNodeOptions -> TrainerNode::Create -> Run until
// SIGINT/SIGTERM.
#include "core/logging.h"

#include "core/process_setup.h"

#include <CLI/CLI.hpp>
#include <csignal>
#include <iostream>
#include <thread>

#include "trainer_node/trainer_node.h"

namespace {
volatile std::sig_atomic_t g_signal = 0;
}

int main(int argc, char** argv) {
  kennel::trainer::TrainerNodeOptions options;
  CLI::App app(
      "kennel-trainer: a trainer node. Dials the coordinator, takes training assignments and "
      "trains data-parallel with its peers (Gloo on CPU, NCCL on GPU).");
  app.add_option("--coordinator", options.coordinator, "Coordinator host:port")->capture_default_str();
  app.add_option("--name", options.name, "Node name, unique in the cluster (default: hostname)");
  app.add_option("--dataset_root", options.dataset_root,
                 "This machine's copy of the datasets (default: the path in the job spec)");
  app.add_option("--advertise_host", options.advertise_host,
                 "Address peers use to reach this trainer's collective endpoint")
      ->capture_default_str();
  app.add_option("--work_dir", options.work_dir, "Scratch folder for transfers")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  kennel::core::TuneAllocator();
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  auto node = kennel::trainer::TrainerNode::Create(options);
  if (!node.ok()) {
    std::cerr << "kennel-trainer: " << node.status().message() << "\n";
    return 1;
  }
  std::signal(SIGINT, [](int s) { g_signal = s; });
  std::signal(SIGTERM, [](int s) { g_signal = s; });
  std::thread watcher([&] {
    while (g_signal == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    LOG(INFO) << "signal " << g_signal << ": shutting down";
    (*node)->Shutdown();
  });
  (*node)->Run();
  g_signal = g_signal == 0 ? SIGTERM : g_signal;  // Run ended on its own: stop the watcher.
  watcher.join();
  return 0;
}
