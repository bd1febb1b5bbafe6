#include "cli/autoscale_command.h"

#include <iostream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/client.h"
#include "core/autoscale_spec.h"

namespace kennel::cli {

std::vector<std::string> AutoscaleHeader() {
  return {"MODEL", "NODES (DESIRED/SERVING/STARTING/DRAINING)", "LOAD", "SETTINGS", "LAST DECISION", "PROBLEM"};
}

std::vector<std::string> AutoscaleRow(const v1::AutoscaleStatus& a) {
  return {absl::StrCat(a.model(), ":", a.version()),
          absl::StrCat(a.desired_nodes(), "/", a.serving_nodes(), "/", a.starting_nodes(), "/", a.draining_nodes()),
          absl::StrFormat("%.2f%s", a.load(), a.panic() ? " (panic)" : ""),
          absl::StrCat(core::AutoscaleSpecText(a.spec()), ", provider ", a.provider()),
          a.last_decision().empty() ? "-"
                                    : absl::StrCat(Ago(a.last_decision_unix_ms()), ": ", a.last_decision()),
          a.problem().empty() ? "-" : a.problem()};
}

namespace {

int Autoscale(const GlobalOptions& global, const std::string& model, const std::string& settings) {
  auto stub = AdminStub(global.coordinator);
  if (settings.empty()) {
    v1::GetAutoscaleRequest request;
    request.set_name(model);
    v1::GetAutoscaleResponse response;
    grpc::Status rpc = stub->GetAutoscale(Context().get(), request, &response);
    if (!rpc.ok()) return Fail(RpcError(rpc, Peer::kCoordinator, global.coordinator));
    if (global.json()) {
      PrintJson(ProtoToJson(response));
      return kExitOk;
    }
    if (response.models().empty()) {
      std::cout << "(no model is autoscaled)\n";
      return kExitOk;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& a : response.models()) rows.push_back(AutoscaleRow(a));
    PrintTable(AutoscaleHeader(), rows);
    return kExitOk;
  }
  v1::SetAutoscaleRequest request;
  request.set_name(model);
  if (settings == "off") {
    request.set_disable(true);
  } else {
    auto spec = core::ParseAutoscaleSpec(settings);
    if (!spec.ok()) return Fail(spec.status());
    *request.mutable_spec() = *spec;
  }
  v1::AutoscaleStatus response;
  grpc::Status rpc = stub->SetAutoscale(Context(60).get(), request, &response);
  if (!rpc.ok()) return Fail(RpcError(rpc, Peer::kCoordinator, global.coordinator));
  if (global.json()) {
    PrintJson(ProtoToJson(response));
  } else if (request.disable()) {
    std::cout << "autoscaling of " << model << " is off; its nodes stay\n";
  } else {
    std::cout << "autoscaling " << model << " version " << response.version() << ": "
              << core::AutoscaleSpecText(response.spec()) << " (provider " << response.provider() << ")\n";
  }
  return kExitOk;
}

}  // namespace

void AddAutoscaleCommand(CLI::App& app, const GlobalOptions& global) {
  auto model = std::make_shared<std::string>();
  auto settings = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand(
      "autoscale",
      "Show or set how many inference nodes serve a model, by their load. SETTINGS: "
      "min=N,max=N[,target=0.7][,stable=60][,panic=6][,panic-threshold=2][,start-timeout=300]"
      "[,max-start-failures=3][,version=V]: target is the share of a node's capacity each node should "
      "carry (offered load: busy time x arrivals / answers); scale-out is at once, scale-in one node at a "
      "time after `stable` seconds of less load, none while in panic (load at panic-threshold x target). "
      "`off` turns it off (the nodes stay). Without SETTINGS: the models' autoscaling state");
  cmd->add_option("model", *model, "Model name (without SETTINGS: empty for every model)");
  cmd->add_option("settings", *settings, "min=N,max=N,... or off");
  cmd->callback([&global, model, settings] {
    if (!settings->empty() && model->empty()) throw CLI::RuntimeError(Fail(absl::InvalidArgumentError("autoscale: name the model")));
    throw CLI::RuntimeError(Autoscale(global, *model, *settings));
  });
}

}  // namespace kennel::cli
