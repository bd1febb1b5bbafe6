#!/usr/bin/python3
"""kennelctl ui in a real browser: headless Chromium (Debian's chromium, chromium-driver and
python3-selenium) against a real local cluster on loopback.

The cluster: a coordinator, two trainers and an inference node. Before the browser opens it has a
finished two-rank job, a finished tuning search (ASHA, three trials) and a deployed model; while
the browser looks, a second job trains (one trainer, many short epochs) and a load generator sends
requests (some of them not images, so errors have a code).

Checked: every view loads with no console errors (a CSP violation would be one); every chart
holds the data points the cluster's own answers (kennelctl -o json) say it should, read from the
page's Chart objects; the running job's page shows a new epoch without a reload; a coordinator
that stops shows a banner with the last data kept, and the page recovers by itself when it is back;
the security rules (wrong Host 403, POST/PUT/DELETE 405, no CORS headers, the CSP, listening on
127.0.0.1 only, not reachable on another address of this machine) and a port in use named in the
error. Screenshots of each view go to --screenshots.

Exit status 0 on success, 1 on a failed check, 77 (skipped) when the browser or Selenium is missing.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def log(*args):
    print("[console_browser_test]", *args, flush=True)


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def eventually(predicate, timeout, what, interval=0.5):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as e:  # A page mid-update; try again.
            last = e
        time.sleep(interval)
    raise Failure(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


class Cluster:
    def __init__(self, build, work):
        self.build = build
        self.work = work
        self.procs = {}
        self.address = None

    def start(self, name, argv, env=None):
        out = open(os.path.join(self.work, name + ".log"), "w")
        full_env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        full_env.update(env or {})
        self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=full_env)
        return self.procs[name]

    def wait_line(self, name, pattern, timeout=60):
        path = os.path.join(self.work, name + ".log")

        def found():
            with open(path) as f:
                m = re.search(pattern, f.read())
            if self.procs[name].poll() is not None and not m:
                raise Failure(f"{name} exited ({self.procs[name].returncode}): {open(path).read()[-2000:]}")
            return m
        return eventually(found, timeout, f"'{pattern}' in {name}.log")

    def start_coordinator(self, listen):
        self.start("coordinator", [f"{self.build}/coordinator/kennel-coordinator", "--listen", listen,
                                   "--data_dir", os.path.join(self.work, "coord"), "--heartbeat_timeout_s", "5"])
        port = self.wait_line("coordinator", r"listening on port (\d+)").group(1)
        self.address = f"127.0.0.1:{port}"

    def ctl(self, *args, check_ok=True, timeout=600):
        argv = [f"{self.build}/cli/kennelctl", "-c", self.address, "-o", "json", *args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check_ok and r.returncode != 0:
            raise Failure(f"{' '.join(argv)} exited {r.returncode}: {r.stdout[-2000:]} {r.stderr[-2000:]}")
        try:
            return json.loads(r.stdout) if r.stdout.strip() else None
        except json.JSONDecodeError:
            return r.stdout

    def stop(self, name, sig=signal.SIGTERM):
        p = self.procs.get(name)
        if p and p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self):
        for name in list(self.procs)[::-1]:
            self.stop(name)


def http_request(port, method, path, host=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest(method, path, skip_host=True)
    conn.putheader("Host", host or f"127.0.0.1:{port}")
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), body


def check_security(port, build, coordinator):
    status, headers, _ = http_request(port, "GET", "/", headers={"Origin": "http://evil.example"})
    check(status == 200, f"GET / answered {status}")
    csp = headers.get("content-security-policy", "")
    check("script-src 'self'" in csp and "default-src 'none'" in csp, f"CSP: {csp!r}")
    check(not any(k.startswith("access-control-") for k in headers), f"CORS headers sent: {headers}")
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1"):
        status, _, body = http_request(port, "GET", "/api/cluster", host=host)
        check(status == 403, f"Host {host!r} answered {status}: {body[:200]!r}")
    check(http_request(port, "GET", "/", host=f"localhost:{port}")[0] == 200, "Host localhost:PORT refused")
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        status, headers, _ = http_request(port, method, "/api/cluster")
        check(status == 405, f"{method} answered {status}")
        check(headers.get("allow") == "GET, HEAD", f"{method}: Allow {headers.get('allow')!r}")
    check(http_request(port, "HEAD", "/")[0] == 200, "HEAD / refused")
    # Listening on 127.0.0.1 only: the kernel's table of listening sockets, and a connection
    # to another address of this machine (when it has one) is refused.
    listening = []
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            listening.append(local.split(":")[0])
    check(listening == ["0100007F"], f"listening addresses for port {port}: {listening} (want 127.0.0.1 only)")
    check(not any(f":{port:04X} " in l and " 0A " in l for l in open("/proc/net/tcp6").read().splitlines()[1:]),
          "listening on IPv6 too")
    try:
        others = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    except OSError:
        others = []
    others = [a for a in others if ":" not in a and not a.startswith("127.")]
    for address in others[:2]:
        try:
            socket.create_connection((address, port), timeout=3).close()
            raise Failure(f"the console answered on {address}:{port}")
        except (ConnectionRefusedError, socket.timeout, OSError) as e:
            if isinstance(e, Failure):
                raise
    log(f"security: 403 on foreign Hosts, 405 on writes, CSP, no CORS, listening on 127.0.0.1 only"
        f" (refused on {', '.join(others[:2]) or 'no other address'})")
    # A port in use is an error naming the port.
    r = subprocess.run([f"{build}/cli/kennelctl", "-c", coordinator, "ui", "--port", str(port)],
                       capture_output=True, text=True, timeout=30)
    check(r.returncode == 2 and f"port {port} is in use" in r.stderr, f"second ui on {port}: {r.returncode} {r.stderr!r}")


def check_roles(cluster, browser, build, work):
    """With TLS, a role that may not read a view sees why (a client's certificate: classify only),
    and a viewer's sees the cluster."""
    certs = os.path.join(work, "certs")
    cluster.ctl("certs", "init", "--dir", certs)
    for issue in (["coordinator", "--host", "127.0.0.1"], ["client-1", "--role", "client"],
                  ["viewer-1", "--role", "viewer"]):
        cluster.ctl("certs", "issue", issue[0], "--dir", certs, *issue[1:])
    pem = lambda name: os.path.join(certs, name + ".pem")
    key = lambda name: os.path.join(certs, name + "-key.pem")
    cluster.start("tls-coordinator", [f"{build}/coordinator/kennel-coordinator", "--listen", "127.0.0.1:0",
                                      "--data_dir", os.path.join(work, "tls-coord"), "--tls_ca", pem("ca"),
                                      "--tls_cert", pem("coordinator"), "--tls_key", key("coordinator")])
    tls_address = "127.0.0.1:" + cluster.wait_line("tls-coordinator", r"listening on port (\d+)").group(1)
    for who in ("client-1", "viewer-1"):
        env = {"KENNEL_TLS_CA": pem("ca"), "KENNEL_TLS_CERT": pem(who), "KENNEL_TLS_KEY": key(who)}
        cluster.start("ui-" + who, [f"{build}/cli/kennelctl", "-c", tls_address, "ui", "--port", "0"], env=env)
        port = cluster.wait_line("ui-" + who, r"Kennel console at http://127\.0\.0\.1:(\d+)/").group(1)
        browser.driver.get(f"http://127.0.0.1:{port}/#/cluster")
        if who == "client-1":
            problem = eventually(lambda: browser.driver.find_element("id", "problem").is_displayed()
                                 and browser.text("problem"), 30, "the client's refusal on the page")
            check("may not read this view" in problem and "may not call GetClusterStatus" in problem
                  and "admin or viewer role" in problem, f"refusal says: {problem!r}")
            check(not browser.driver.find_element("id", "content").is_displayed(), "content shown to a refused role")
            browser.screenshot("denied")
            browser.driver.get_log("browser")  # The refused fetch (403) is logged as a failed load.
        else:
            eventually(lambda: "viewer-1 (viewer)" in browser.text("who"), 30, "the viewer's cluster view")
            browser.expect_clean("the viewer's cluster view")
    log("roles: a client's certificate sees why it may not read the cluster; a viewer's reads it")


JS_CHARTS = """
return Array.from(document.querySelectorAll('canvas')).map(c => {
  const ch = Chart.getChart(c);
  return {id: c.id, labels: ch ? ch.data.labels.length : -1, visible: c.offsetParent !== null,
          datasets: ch ? ch.data.datasets.map(d => ({label: d.label, data: d.data})) : []};
});
"""


def charts(driver):
    return {c["id"]: c for c in driver.execute_script(JS_CHARTS)}


def points(chart):
    return sum(1 for d in chart["datasets"] for v in d["data"] if v is not None)


def series(chart, label):
    for d in chart["datasets"]:
        if d["label"] == label:
            return d["data"]
    raise Failure(f"no series {label!r} in {chart['id']}: {[d['label'] for d in chart['datasets']]}")


def close(a, b):
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


class Browser:
    def __init__(self, url, shots):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1360,1000", "--hide-scrollbars"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        self.url = url
        self.shots = shots
        self.errors = []

    def open(self, hash_):
        self.driver.get(self.url + hash_)
        eventually(lambda: self.driver.find_element("id", "updated").text.startswith("updated"), 30,
                   f"{hash_} to show data")

    def go(self, hash_):
        """Follows a link inside the page (no reload)."""
        self.driver.execute_script("location.hash = arguments[0]", hash_)

    def console_errors(self):
        entries = self.driver.get_log("browser")
        bad = [e for e in entries if e["level"] in ("SEVERE", "WARNING")]
        self.errors.extend(bad)
        return bad

    def expect_clean(self, what):
        """No console errors or warnings, and every chart on screen has data points."""
        bad = self.console_errors()
        check(not bad, f"{what}: console messages: {bad}")
        for c in charts(self.driver).values():
            if c["visible"]:
                check(points(c) > 0, f"{what}: chart {c['id']} shows no data points")

    def screenshot(self, name):
        if not self.shots:
            return
        path = os.path.join(self.shots, f"console-{name}.png")
        self.driver.save_screenshot(path)
        try:  # Kept small for the README: a 256-colour palette.
            from PIL import Image
            Image.open(path).convert("RGB").quantize(colors=128).save(path, optimize=True)
        except ImportError:
            pass
        log(f"screenshot {path} ({os.path.getsize(path) // 1024} KiB)")

    def text(self, element_id):
        return self.driver.find_element("id", element_id).text

    def quit(self):
        self.driver.quit()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build-dir", required=True)
    parser.add_argument("--screenshots", default="", help="folder for one PNG per view")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    missing = [p for p in ("/usr/bin/chromium", "/usr/bin/chromedriver") if not os.path.exists(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("python3-selenium")
    if missing:
        log(f"SKIPPED: missing {', '.join(missing)} (apt-get install chromium chromium-driver python3-selenium)")
        return 77
    build = os.path.abspath(args.build_dir)
    if args.screenshots:
        os.makedirs(args.screenshots, exist_ok=True)
    work = tempfile.mkdtemp(prefix="kennel-console-")
    cluster = Cluster(build, work)
    browser = None
    try:
        cluster.start_coordinator("127.0.0.1:0")
        for name in ("trainer-a", "trainer-b"):
            cluster.start(name, [f"{build}/trainer_node/kennel-trainer", "--coordinator", cluster.address,
                                 "--name", name, "--work_dir", os.path.join(work, name)])
        cluster.start("inference-1", [f"{build}/inference_node/kennel-inference", "--coordinator", cluster.address,
                                      "--name", "inference-1", "--listen", "127.0.0.1:0", "--metrics_port", "-1",
                                      "--cache_dir", os.path.join(work, "cache")])
        server = "127.0.0.1:" + cluster.wait_line("inference-1", r"listening on port (\d+)").group(1)

        def idle_trainers():
            nodes = cluster.ctl("status")["nodes"]
            return sum(1 for n in nodes if n["role"] == "TRAINER" and n["state"] == "IDLE") == 2
        eventually(idle_trainers, 60, "two idle trainers")

        log("training the finished job (2 ranks, 2 epochs)")
        finished = cluster.ctl("train", "--name", "finished", "--world-size", "2", "--epochs", "2",
                               "--max-train-samples", "3000", "--max-eval-samples", "500", "--wait")
        check(finished["state"] == "SUCCEEDED", f"finished job: {finished['state']} {finished.get('message')}")
        log("tuning (ASHA, 3 trials)")
        tuning = cluster.ctl("tune", "--name", "search", "--max-trials", "3", "--parallelism", "2", "--epochs", "3",
                             "--max-train-samples", "1500", "--max-eval-samples", "300", "--space",
                             "learning_rate=log:1e-3:1e-1", "--space", "batch_size=choice:32,64", "--seed", "3", "--wait")
        check(tuning["state"] == "SUCCEEDED", f"tuning: {tuning['state']} {tuning.get('message')}")
        deployed = cluster.ctl("deploy", "finished")
        check(all(r["ok"] for r in deployed["results"]), f"deploy: {deployed}")
        log("the running job (1 rank, short epochs)")
        running = cluster.ctl("train", "--name", "running", "--world-size", "1", "--epochs", "5000",
                              "--max-train-samples", "640", "--max-eval-samples", "128", "--detach")
        running_id = running["id"]

        cluster.start("ui", [f"{build}/cli/kennelctl", "-c", cluster.address, "ui", "--port", "0"])
        port = int(cluster.wait_line("ui", r"Kennel console at http://127\.0\.0\.1:(\d+)/").group(1))
        url = f"http://127.0.0.1:{port}/"
        check_security(port, build, cluster.address)

        browser = Browser(url, args.screenshots)
        # Cluster: every node, and the running job.
        browser.open("#/cluster")
        eventually(lambda: all(n in browser.text("nodes") for n in ("trainer-a", "trainer-b", "inference-1"))
                   and running_id in browser.text("active"), 30, "the cluster view's nodes and running job")
        check("anonymous (no TLS)" in browser.text("who"), f"caller: {browser.text('who')!r}")
        browser.expect_clean("cluster view")
        browser.screenshot("cluster")

        # Jobs: both, then the finished job's charts against its status.
        browser.go("#/jobs")
        eventually(lambda: finished["id"] in browser.text("jobs") and running_id in browser.text("jobs"), 30, "the jobs list")
        browser.expect_clean("jobs view")
        # A job that does not exist is said in place of the view (no banner: waiting will not help).
        browser.go("#/jobs/job-404")
        missing = eventually(lambda: browser.driver.find_element("id", "problem").is_displayed()
                             and browser.text("problem"), 30, "the missing job's message")
        check("NOT_FOUND" in missing and "job-404" in missing, f"missing job says: {missing!r}")
        check(not browser.driver.find_element("id", "banner").is_displayed(), "a banner for a missing job")
        browser.driver.get_log("browser")  # The 404 is logged as a failed load.
        browser.go("#/jobs/" + finished["id"])
        epochs = finished["epochs"]

        def job_charts():
            c = charts(browser.driver)
            return c if c.get("chart-loss") and c["chart-loss"]["labels"] == len(epochs) else None
        c = eventually(job_charts, 30, "the finished job's charts")
        check(points(c["chart-loss"]) == 2 * len(epochs), f"loss points {points(c['chart-loss'])}")
        for i, e in enumerate(epochs):
            check(close(series(c["chart-loss"], "train loss")[i], e["train_loss"]), "train loss differs")
            check(close(series(c["chart-loss"], "eval loss")[i], e["eval_loss"]), "eval loss differs")
            check(close(series(c["chart-accuracy"], "eval accuracy")[i], e["eval_accuracy"]), "accuracy differs")
            check(close(series(c["chart-throughput"], "images/s")[i], e["images_per_second"]), "images/s differs")
            check(close(series(c["chart-timeline"], "forward")[i], e["timeline"]["forward_ms"]), "forward ms differs")
            check(close(series(c["chart-timeline"], "waiting (all-reduce)")[i], e["timeline"]["sync_wait_ms"]),
                  "all-reduce wait differs")
        check(points(c["chart-timeline"]) == 6 * len(epochs), f"timeline points {points(c['chart-timeline'])}")
        check("trainer-a" in browser.text("ranks") or "trainer-b" in browser.text("ranks") or
              "No trainers" in browser.text("ranks"), "ranks section")
        check("generation" in browser.text("events").lower(), "memberships table")
        browser.expect_clean("finished job view")
        browser.screenshot("job")

        # Tuning: the list, then the search's leaderboard and both charts.
        browser.go("#/tuning")
        eventually(lambda: tuning["id"] in browser.text("tunings"), 30, "the tuning list")
        browser.expect_clean("tuning list")
        browser.go("#/tuning/" + tuning["id"])
        trials = tuning["trials"]
        want_curve = sum(len(t["objective"]) for t in trials)

        def tuning_charts():
            c = charts(browser.driver)
            return c if c.get("chart-trials") and points(c["chart-trials"]) == want_curve else None
        c = eventually(tuning_charts, 30, f"{want_curve} trial-curve points")
        for t in trials:
            check(series(c["chart-trials"], f"trial {t['number']}") == t["objective"], f"trial {t['number']} curve")
        # Parallel coordinates: two hyperparameters and the objective per trial.
        check(c["chart-parallel"]["labels"] == 3, f"parallel axes {c['chart-parallel']['labels']}")
        check(points(c["chart-parallel"]) == 3 * len(trials), f"parallel points {points(c['chart-parallel'])}")
        best = [r for r in browser.driver.find_elements("css selector", "#leaderboard tr.best")]
        check(len(best) == 1 and best[0].text.startswith(f"★ {tuning['best_trial']}"),
              f"best row: {[b.text for b in best]}")
        browser.expect_clean("tuning view")
        browser.screenshot("tuning")

        # Models: the finished job's model deployed on inference-1, the search's with its lineage.
        browser.go("#/models")
        eventually(lambda: "finished:1" in browser.text("models") and "inference-1" in browser.text("models")
                   and "search" in browser.text("models") and "trial" in browser.text("models"), 30, "the models view")
        browser.expect_clean("models view")
        browser.screenshot("models")

        # Serving: load with some requests that are not images.
        junk = os.path.join(work, "not-an-image.png")
        with open(junk, "wb") as f:
            f.write(b"this is not a PNG")
        bench = subprocess.Popen([f"{build}/cli/kennelctl", "bench", "-s", server, "--fashion-mnist", "500",
                                  "--duration", "20", "--concurrency", "2", "--rate", "150"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(3):
            cluster.ctl("classify", "-s", server, junk, check_ok=False)
        browser.go("#/serving")

        def serving_charts():
            c = charts(browser.driver)
            rps = c.get("chart-rps")
            ok = rps and max((v or 0) for v in series(rps, "total")) > 0 and points(rps) >= 6 \
                and points(c["chart-latency"]) >= 6 and sum(series(c["chart-batches"], "inference-1")) > 0
            return c if ok else None
        c = eventually(serving_charts, 40, "requests per second, latency and batch sizes on the serving view")
        eventually(lambda: "INVALID_ARGUMENT" in browser.text("codes"), 20, "the errors by code")
        browser.expect_clean("serving view")
        browser.screenshot("serving")
        bench.wait(60)

        # Live: the running job's page gains an epoch without a reload.
        browser.go("#/jobs/" + running_id)
        first = eventually(lambda: max(0, (charts(browser.driver).get("chart-loss") or {}).get("labels", 0)), 60,
                           "the running job's first epoch")
        browser.driver.execute_script("window.kennelNoReload = true")
        eventually(lambda: charts(browser.driver)["chart-loss"]["labels"] > first, 90, f"an epoch after {first}")
        check(browser.driver.execute_script("return window.kennelNoReload === true"), "the page was reloaded")
        log(f"live: the running job went from {first} epochs on screen to "
            f"{charts(browser.driver)['chart-loss']['labels']} without a reload")
        browser.expect_clean("running job view")
        browser.screenshot("live-job")

        # What an open page costs (logged, not asserted: a figure for the README).
        for hash_ in ("#/cluster", "#/jobs/" + running_id, "#/models", "#/serving"):
            browser.go(hash_)
            time.sleep(2)
            before = json.loads(http_request(port, "GET", "/api/console")[2])
            time.sleep(10)
            after = json.loads(http_request(port, "GET", "/api/console")[2])
            seconds = (after["now_unix_ms"] - before["now_unix_ms"]) / 1000
            delta = {k: v - before["calls"].get(k, 0) for k, v in after["calls"].items() if v != before["calls"].get(k, 0)}
            coordinator_calls = sum(v for k, v in delta.items() if k != "GetServingStats")
            log(f"cost of {hash_} open: {coordinator_calls / seconds:.2f} coordinator calls/s, "
                f"{delta.get('GetServingStats', 0) / seconds:.2f} inference-node calls/s ({delta} in {seconds:.1f} s)")
        # A tab in the background polls nothing.
        console_tab = browser.driver.current_window_handle
        browser.driver.switch_to.new_window("tab")
        time.sleep(1)
        before = json.loads(http_request(port, "GET", "/api/console")[2])["calls"]
        time.sleep(6)
        after = json.loads(http_request(port, "GET", "/api/console")[2])["calls"]
        log(f"background tab: {sum(after.values()) - sum(before.values())} calls in 6 s")
        check(after == before, f"a hidden console kept polling: {before} -> {after}")
        browser.driver.close()
        browser.driver.switch_to.window(console_tab)
        browser.go("#/jobs/" + running_id)
        eventually(lambda: charts(browser.driver).get("chart-loss", {}).get("labels", 0) > 0, 30, "the running job again")
        browser.console_errors()

        # The coordinator stops: a banner, the last data kept; it comes back: the page recovers.
        before = browser.text("summary")
        cluster.stop("coordinator")
        eventually(lambda: browser.driver.find_element("id", "banner").is_displayed()
                   and "unreachable" in browser.text("banner"), 30, "the coordinator-down banner")
        check(browser.text("summary") and browser.text("summary").split("\n")[0] == before.split("\n")[0],
              "the last data was not kept")
        browser.screenshot("coordinator-down")
        # Failed fetches show in the console as network errors (the 503s); that is expected now.
        browser.driver.get_log("browser")
        cluster.start_coordinator(cluster.address)
        eventually(lambda: not browser.driver.find_element("id", "banner").is_displayed(), 60,
                   "the banner to go once the coordinator is back")
        browser.driver.get_log("browser")
        check(browser.driver.execute_script("return window.kennelNoReload === true"), "the page was reloaded")
        log("outage: banner shown with the data kept; gone by itself after the restart")

        check_roles(cluster, browser, build, work)

        calls = json.loads(http_request(port, "GET", "/api/console")[2])
        log(f"coordinator calls made by the console: {calls['calls']}")
        cluster.ctl("cancel", running_id, check_ok=False)
        log("PASSED")
        return 0
    except Failure as e:
        log(f"FAILED: {e}")
        for name in cluster.procs:
            path = os.path.join(work, name + ".log")
            if os.path.exists(path):
                log(f"--- {name}.log (tail)\n" + open(path).read()[-1500:])
        if browser and args.screenshots:
            browser.screenshot("failure")
        return 1
    finally:
        if browser:
            browser.quit()
        cluster.stop_all()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"work folder kept: {work}")


if __name__ == "__main__":
    sys.exit(main())
