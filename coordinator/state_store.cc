#include "coordinator/state_store.h"

#include <sqlite3.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/status_macros.h"

namespace kennel::coordinator {
namespace {

// A prepared statement, finalised on destruction.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    status_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  absl::Status status() const {
    return status_ == SQLITE_OK ? absl::OkStatus()
                                : absl::InternalError(absl::StrCat("sqlite: ", sqlite3_errmsg(db_)));
  }
  Statement& Bind(int i, const std::string& s) {
    sqlite3_bind_blob(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& Text(int i, const std::string& s) {
    sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& Int(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return sqlite3_step(stmt_); }
  absl::Status Run() {
    RETURN_IF_ERROR(status());
    const int rc = Step();
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
      return absl::InternalError(absl::StrCat("sqlite: ", sqlite3_errmsg(db_)));
    }
    return absl::OkStatus();
  }
  std::string Blob(int col) {
    const void* p = sqlite3_column_blob(stmt_, col);
    return p == nullptr ? "" : std::string(static_cast<const char*>(p), sqlite3_column_bytes(stmt_, col));
  }
  int64_t Int64(int col) { return sqlite3_column_int64(stmt_, col); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int status_;
};

template <typename Proto>
absl::StatusOr<Proto> Parse(const std::string& bytes, const char* what) {
  Proto p;
  if (!p.ParseFromString(bytes)) return absl::DataLossError(absl::StrCat("corrupt ", what, " in state database"));
  return p;
}

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS nodes (name TEXT PRIMARY KEY, status BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, seq INTEGER NOT NULL, state INTEGER NOT NULL, status BLOB NOT NULL,
  train_index BLOB NOT NULL, eval_index BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS job_events (
  job_id TEXT NOT NULL, at_ms INTEGER NOT NULL, state INTEGER NOT NULL, event TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS job_events_by_job ON job_events (job_id);
CREATE TABLE IF NOT EXISTS model_versions (
  name TEXT NOT NULL, version INTEGER NOT NULL, model BLOB, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS tunings (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, status BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS autoscale (model TEXT PRIMARY KEY, settings BLOB NOT NULL);
)sql";

}  // namespace

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open state database ", path, ": ", msg));
  }
  sqlite3_busy_timeout(db, 5000);
  std::unique_ptr<StateStore> store(new StateStore(db));
  absl::MutexLock lock(&store->mu_);
  RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"));
  RETURN_IF_ERROR(store->Exec(kSchema));
  return store;
}

StateStore::~StateStore() {
  absl::MutexLock lock(&mu_);
  sqlite3_close(db_);
}

absl::Status StateStore::Exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return absl::InternalError(absl::StrCat("sqlite: ", msg));
  }
  return absl::OkStatus();
}

absl::Status StateStore::SaveNode(const v1::NodeStatus& node) {
  absl::MutexLock lock(&mu_);
  return Statement(db_, "INSERT OR REPLACE INTO nodes (name, status) VALUES (?, ?)")
      .Text(1, node.name()).Bind(2, node.SerializeAsString()).Run();
}

absl::StatusOr<std::vector<v1::NodeStatus>> StateStore::LoadNodes() {
  absl::MutexLock lock(&mu_);
  Statement q(db_, "SELECT status FROM nodes ORDER BY name");
  RETURN_IF_ERROR(q.status());
  std::vector<v1::NodeStatus> out;
  while (q.Step() == SQLITE_ROW) {
    ASSIGN_OR_RETURN(v1::NodeStatus node, Parse<v1::NodeStatus>(q.Blob(0), "node"));
    out.push_back(std::move(node));
  }
  return out;
}

absl::Status StateStore::CreateJob(const StoredJob& job) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  absl::Status s =
      Statement(db_, "INSERT INTO jobs (id, seq, state, status, train_index, eval_index) VALUES "
                     "(?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), ?, ?, ?, ?)")
          .Text(1, job.status.id()).Int(2, job.status.state()).Bind(3, job.status.SerializeAsString())
          .Bind(4, job.train.SerializeAsString()).Bind(5, job.eval.SerializeAsString()).Run();
  if (s.ok()) {
    s = Statement(db_, "INSERT INTO job_events (job_id, at_ms, state, event) VALUES (?, ?, ?, ?)")
            .Text(1, job.status.id()).Int(2, absl::ToUnixMillis(absl::Now()))
            .Int(3, job.status.state()).Text(4, "submitted").Run();
  }
  RETURN_IF_ERROR(Exec(s.ok() ? "COMMIT" : "ROLLBACK"));
  return s;
}

absl::Status StateStore::UpdateJob(const v1::JobStatus& status, const std::string& event) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  absl::Status s = Statement(db_, "UPDATE jobs SET state = ?, status = ? WHERE id = ?")
                       .Int(1, status.state()).Bind(2, status.SerializeAsString())
                       .Text(3, status.id()).Run();
  if (s.ok() && !event.empty()) {
    s = Statement(db_, "INSERT INTO job_events (job_id, at_ms, state, event) VALUES (?, ?, ?, ?)")
            .Text(1, status.id()).Int(2, absl::ToUnixMillis(absl::Now())).Int(3, status.state())
            .Text(4, event).Run();
  }
  RETURN_IF_ERROR(Exec(s.ok() ? "COMMIT" : "ROLLBACK"));
  return s;
}

absl::StatusOr<std::vector<StoredJob>> StateStore::LoadJobs() {
  absl::MutexLock lock(&mu_);
  Statement q(db_, "SELECT status, train_index, eval_index FROM jobs ORDER BY seq");
  RETURN_IF_ERROR(q.status());
  std::vector<StoredJob> out;
  while (q.Step() == SQLITE_ROW) {
    StoredJob job;
    ASSIGN_OR_RETURN(job.status, Parse<v1::JobStatus>(q.Blob(0), "job"));
    ASSIGN_OR_RETURN(job.train, Parse<v1::DatasetIndex>(q.Blob(1), "dataset index"));
    ASSIGN_OR_RETURN(job.eval, Parse<v1::DatasetIndex>(q.Blob(2), "dataset index"));
    out.push_back(std::move(job));
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> StateStore::JobEvents(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  Statement q(db_, "SELECT at_ms, state, event FROM job_events WHERE job_id = ? ORDER BY rowid");
  RETURN_IF_ERROR(q.status());
  q.Text(1, job_id);
  std::vector<std::string> out;
  while (q.Step() == SQLITE_ROW) {
    out.push_back(absl::StrCat(q.Int64(0), " ", v1::JobState_Name(static_cast<v1::JobState>(q.Int64(1))),
                               " ", q.Blob(2)));
  }
  return out;
}

absl::StatusOr<int64_t> StateStore::NextModelVersion(const std::string& name) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  int64_t version = 1;
  {
    Statement q(db_, "SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE name = ?");
    q.Text(1, name);
    if (q.Step() == SQLITE_ROW) version = q.Int64(0);
  }
  // Reserve the version (model filled in by SaveModel) so concurrent uploads never share one.
  absl::Status s = Statement(db_, "INSERT INTO model_versions (name, version, model) VALUES (?, ?, NULL)")
                       .Text(1, name).Int(2, version).Run();
  RETURN_IF_ERROR(Exec(s.ok() ? "COMMIT" : "ROLLBACK"));
  if (!s.ok()) return s;
  return version;
}

absl::Status StateStore::SaveModel(const v1::ModelVersion& model) {
  absl::MutexLock lock(&mu_);
  return Statement(db_, "INSERT OR REPLACE INTO model_versions (name, version, model) VALUES (?, ?, ?)")
      .Text(1, model.name()).Int(2, model.version()).Bind(3, model.SerializeAsString()).Run();
}

absl::StatusOr<std::vector<v1::ModelVersion>> StateStore::LoadModels(const std::string& name) {
  absl::MutexLock lock(&mu_);
  Statement q(db_, name.empty()
                       ? "SELECT model FROM model_versions WHERE model IS NOT NULL ORDER BY name, version"
                       : "SELECT model FROM model_versions WHERE model IS NOT NULL AND name = ? "
                         "ORDER BY version");
  RETURN_IF_ERROR(q.status());
  if (!name.empty()) q.Text(1, name);
  std::vector<v1::ModelVersion> out;
  while (q.Step() == SQLITE_ROW) {
    ASSIGN_OR_RETURN(v1::ModelVersion m, Parse<v1::ModelVersion>(q.Blob(0), "model"));
    out.push_back(std::move(m));
  }
  return out;
}

absl::Status StateStore::SaveTuning(const v1::TuningStatus& tuning) {
  absl::MutexLock lock(&mu_);
  return Statement(db_, "INSERT INTO tunings (id, seq, status) VALUES "
                        "(?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM tunings), ?2) "
                        "ON CONFLICT (id) DO UPDATE SET status = ?2")
      .Text(1, tuning.id()).Bind(2, tuning.SerializeAsString()).Run();
}

absl::StatusOr<std::vector<v1::TuningStatus>> StateStore::LoadTunings() {
  absl::MutexLock lock(&mu_);
  Statement q(db_, "SELECT status FROM tunings ORDER BY seq");
  RETURN_IF_ERROR(q.status());
  std::vector<v1::TuningStatus> out;
  while (q.Step() == SQLITE_ROW) {
    ASSIGN_OR_RETURN(v1::TuningStatus t, Parse<v1::TuningStatus>(q.Blob(0), "tuning job"));
    out.push_back(std::move(t));
  }
  return out;
}

absl::Status StateStore::SaveAutoscale(const v1::AutoscaleStatus& settings) {
  absl::MutexLock lock(&mu_);
  return Statement(db_, "INSERT INTO autoscale (model, settings) VALUES (?1, ?2) "
                        "ON CONFLICT (model) DO UPDATE SET settings = ?2")
      .Text(1, settings.model()).Bind(2, settings.SerializeAsString()).Run();
}

absl::Status StateStore::DeleteAutoscale(const std::string& model) {
  absl::MutexLock lock(&mu_);
  return Statement(db_, "DELETE FROM autoscale WHERE model = ?1").Text(1, model).Run();
}

absl::StatusOr<std::vector<v1::AutoscaleStatus>> StateStore::LoadAutoscale() {
  absl::MutexLock lock(&mu_);
  Statement q(db_, "SELECT settings FROM autoscale ORDER BY model");
  RETURN_IF_ERROR(q.status());
  std::vector<v1::AutoscaleStatus> out;
  while (q.Step() == SQLITE_ROW) {
    ASSIGN_OR_RETURN(v1::AutoscaleStatus a, Parse<v1::AutoscaleStatus>(q.Blob(0), "autoscaling settings"));
    out.push_back(std::move(a));
  }
  return out;
}

}  // namespace kennel::coordinator
