// kennel-coordinator: flags -> CoordinatorOptions -> Coordinator::Create -> serve until
// SIGINT/SIGTERM.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/tls_flags.h"
#include "core/logging.h"

#include "core/process_setup.h"

#include <CLI/CLI.hpp>
#include <csignal>
#include <iostream>
#include <thread>

#include "coordinator/coordinator.h"

namespace {
volatile std::sig_atomic_t g_signal = 0;
}

int main(int argc, char** argv) {
  kennel::coordinator::CoordinatorOptions options;
  int heartbeat_timeout_s = 10;
  CLI::App app(
      "kennel-coordinator: membership, training jobs, rendezvous and model registry of a Kennel "
      "cluster. State lives in <data_dir>/state.db (SQLite) and <data_dir>/artifacts.");
  app.add_option("--listen", options.listen_address, "host:port to serve on (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--data_dir", options.data_dir, "Folder for the state database and artifacts")
      ->capture_default_str();
  app.add_option("--heartbeat_timeout_s", heartbeat_timeout_s,
                 "A trainer silent this long is declared dead")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app.add_option("--max_recoveries", options.cluster.max_recoveries,
                 "Recoveries (re-formed groups after a lost trainer or a broken collective) a job may have "
                 "within --recovery_window_s before it fails")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  int recovery_window_s = 3600;
  app.add_option("--recovery_window_s", recovery_window_s, "The window --max_recoveries counts in")
      ->check(CLI::Range(1, 86400 * 365))
      ->capture_default_str();
  int shutdown_checkpoint_s = 30;
  app.add_option("--shutdown_checkpoint_s", shutdown_checkpoint_s,
                 "On SIGTERM/SIGINT, wait up to this long for every running job to checkpoint before "
                 "stopping (0: stop at once)")
      ->check(CLI::Range(0, 3600))
      ->capture_default_str();
  app.add_option("--metrics_listen", options.metrics_address,
                 "host:port for the coordinator's Prometheus /metrics (the autoscaler's desired and actual "
                 "nodes per model; plain HTTP: give a private address). Empty: none");
  app.add_option("--autoscale_provider", options.autoscale.provider,
                 "How the autoscaler adds and removes inference nodes: none (it decides and reports "
                 "kennel_autoscale_desired_nodes, for Kubernetes' HPA or KEDA), local (kennel-inference "
                 "processes on this machine) or command (--autoscale_scale_out / --autoscale_scale_in)")
      ->check(CLI::IsMember({"none", "local", "command"}))
      ->capture_default_str();
  std::string node_args;
  app.add_option("--autoscale_node_args", node_args,
                 "local: more flags for every node it starts, space-separated (e.g. \"--instances 2\")");
  app.add_option("--autoscale_pin_cores", options.autoscale.first_core,
                 "local: pin node i to CPU core (N + i) modulo the cores (-1: no pinning)")
      ->check(CLI::Range(-1, 4096))
      ->capture_default_str();
  app.add_option("--autoscale_scale_out", options.autoscale.scale_out,
                 "command: run through /bin/sh for each node to add, with KENNEL_NODE, KENNEL_MODEL "
                 "(name:version), KENNEL_COORDINATOR and KENNEL_ACTION set; the node it starts must register "
                 "under KENNEL_NODE (README: EC2 Auto Scaling, kubectl scale)");
  app.add_option("--autoscale_scale_in", options.autoscale.scale_in,
                 "command: run for each node that has drained and left (empty: nothing; a retired node exits "
                 "by itself)");
  kennel::core::AddTlsFlags(app, options.tls, &options.insecure);
  CLI11_PARSE(app, argc, argv);
  options.cluster.heartbeat_timeout = absl::Seconds(heartbeat_timeout_s);
  options.cluster.recovery_window = absl::Seconds(recovery_window_s);
  options.autoscale.node_args = absl::StrSplit(node_args, ' ', absl::SkipEmpty());

  kennel::core::TuneAllocator();

  kennel::core::DisableMutexDeadlockDetection();
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  auto coordinator = kennel::coordinator::Coordinator::Create(options);
  if (!coordinator.ok()) {
    std::cerr << "kennel-coordinator: " << coordinator.status().message() << "\n";
    return 1;
  }
  LOG(INFO) << "coordinator serving on port " << (*coordinator)->port() << ", data in " << options.data_dir
            << ", autoscale provider " << options.autoscale.provider
            << ((*coordinator)->metrics_port() > 0 ? absl::StrCat(", metrics on port ", (*coordinator)->metrics_port()) : "");
  std::cout << "listening on port " << (*coordinator)->port() << std::endl;
  std::signal(SIGINT, [](int s) { g_signal = s; });
  std::signal(SIGTERM, [](int s) { g_signal = s; });
  while (g_signal == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  LOG(INFO) << "signal " << g_signal << ": shutting down";
  if (shutdown_checkpoint_s > 0) {
    // Running jobs lose nothing: they resume from here when the coordinator is back.
    const auto [saved, running] = (*coordinator)->cluster().CheckpointRunningJobs(absl::Seconds(shutdown_checkpoint_s));
    if (running > 0) LOG(INFO) << saved << " of " << running << " running jobs checkpointed before stopping";
  }
  (*coordinator)->Shutdown();
  return 0;
}
