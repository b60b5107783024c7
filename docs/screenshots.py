"""Take the README's MLflow UI screenshots (docs/mlflow_experiment.png, docs/mlflow_trial_run.png).

    .venv/bin/python docs/screenshots.py            # about 2-3 min on 2 cores
    .venv/bin/python docs/screenshots.py --keep     # keep the demo store and print where it is

It runs a tiny demo sweep (search_spaces/demo.yaml, 3 trials of 4 epochs) into a fresh sqlite store in a
temporary folder, serves it with `mlflow ui` on a free local port, opens two pages in headless Chromium
(driven over the DevTools protocol with a minimal websocket client, standard library only) and saves:

- mlflow_experiment.png: the experiment's runs table ("Model training" view) with the sweep's parent run
  expanded to its nested trial runs and the tail-accuracy metrics as columns (val/acc_many, val/acc_medium,
  val/acc_few, val/bal_acc, inv/ekld_few);
- mlflow_trial_run.png: the best trial's Artifacts tab previewing plots/ekld_vs_class_size.png.

Needs Chromium (--chromium, default: chromium or google-chrome on PATH). The UI state (runs view, selected
columns, column widths, expanded parent, assistant panel closed) is set through the UI's own localStorage
keys of MLflow 3.x before the page loads, so no clicking is needed. Everything it starts (the sweep's Ray,
`mlflow ui`, Chromium) is stopped at the end, and the temporary folders are removed unless --keep.
"""
import argparse
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH, HEIGHT = 1600, 1000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, probe, timeout):
    """Call probe() until it returns something truthy; raise after timeout seconds."""
    end = time.time() + timeout
    while True:
        try:
            value = probe()
            if value:
                return value
        except OSError:
            pass
        if time.time() > end:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


class DevTools:
    """The few Chrome DevTools protocol calls needed, over a minimal (unfragmented, text-only) websocket."""

    def __init__(self, url):
        host, path = url[len("ws://"):].split("/", 1)
        h, p = host.rsplit(":", 1)
        self.sock = socket.create_connection((h, int(p)), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(f"GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError("DevTools websocket closed during the handshake")
            buf += chunk
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"DevTools websocket refused: {head[:200]!r}")
        self.id = 0

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("DevTools websocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _frame(self):
        b1, b2 = self._read(2)
        n = b2 & 127
        if n == 126:
            n = struct.unpack(">H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._read(8))[0]
        return b1 & 0x0F, self._read(n)

    def call(self, method, **params):
        self.id += 1
        data = json.dumps({"id": self.id, "method": method, "params": params}).encode()
        n = len(data)
        if n < 126:
            head = bytes([0x81, 0x80 | n])
        elif n < 65536:
            head = bytes([0x81, 0x80 | 126]) + struct.pack(">H", n)
        else:
            head = bytes([0x81, 0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
        while True:
            opcode, payload = self._frame()
            if opcode != 1:
                continue
            msg = json.loads(payload)
            if msg.get("id") == self.id:
                if "error" in msg:
                    raise RuntimeError(f"DevTools {method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"JS error in {expr[:80]!r}: {r['exceptionDetails'].get('text')}")
        return r.get("result", {}).get("value")

    def wait_js(self, what, expr, timeout=60):
        return wait_for(what, lambda: self.js(expr), timeout)

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        print(f"screenshots: wrote {os.path.relpath(path)}")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def stop(proc, name):
    """Stop a process started here in its own session, with whatever it spawned (its process group)."""
    if proc is None:
        return
    if proc.poll() is not None:  # the leader is gone: end what it left in its group, if anything
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
    print(f"screenshots: could not stop {name} (pid {proc.pid})", file=sys.stderr)


def run_sweep(args, tmp, env):
    log = os.path.join(tmp, "sweep.log")
    cmd = [sys.executable, "-m", "gitune.sweep", "--space", os.path.join("search_spaces", "demo.yaml"),
           "--tracking-uri", f"sqlite:///{tmp}/mlflow.db", "--storage", os.path.join(tmp, "ray_results"),
           "--num-samples", str(args.trials), "--set", f"train.epochs={args.epochs}",
           "--set", f"eval.inv_interval={args.epochs}"]
    print(f"screenshots: demo sweep ({args.trials} trials x {args.epochs} epochs), log in {log}")
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(args.sweep_timeout)
        except subprocess.TimeoutExpired:
            stop(proc, "the sweep")
            raise RuntimeError(f"the demo sweep took over {args.sweep_timeout} s; see {log}")
        finally:
            stop(proc, "the sweep")
    if rc != 0:
        with open(log) as f:
            sys.stderr.write("".join(f.readlines()[-30:]))
        raise RuntimeError(f"the demo sweep failed (exit status {rc}); see {log}")


def find_runs(tmp):
    from mlflow import MlflowClient
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    exp = client.get_experiment_by_name("demo")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("gitune.role") == "sweep")
    trials = [r for r in runs if r.data.tags.get("gitune.role") == "trial"]
    if not trials:
        raise RuntimeError("the demo sweep logged no trial runs")
    best = max(trials, key=lambda r: r.data.metrics.get("val/bal_acc", -1.0))
    return exp.experiment_id, parent.info.run_id, best.info.run_id


def ui_state(parent_id):
    """The runs page state MLflow 3.x keeps in localStorage (ExperimentPage ReactComponentState)."""
    metrics = ["val/bal_acc", "val/acc_many", "val/acc_medium", "val/acc_few", "inv/ekld_few"]
    return {
        "searchFilter": "", "orderByKey": "attributes.start_time", "orderByAsc": False, "startTime": "ALL",
        "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
        "selectedColumns": ["attributes.`Duration`"] + [f"metrics.`{m}`" for m in metrics],
        # the grid applies columnWidths only to the columns listed in columnOrder (ids of the displayed
        # columns but the checkbox one; the metric columns come sorted by name)
        "columnOrder": ["attributes.`Run Name`", "runDateAndNestInfo", "duration"]
                       + [f"metrics.`{m}`" for m in sorted(metrics)],
        "columnWidths": {"attributes.`Run Name`": 370, **{f"metrics.`{m}`": 125 for m in metrics}},
        "runsExpanded": {parent_id: True}, "runsPinned": [], "runsHidden": [], "runsVisibilityMap": {},
        "runsHiddenMode": "FIRST_10_RUNS", "viewMaximized": False, "runListHidden": False,
        "isAccordionReordered": False, "useGroupedValuesInCharts": True, "hideEmptyCharts": True,
        "groupBy": None, "groupsExpanded": {}, "autoRefreshEnabled": False,
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
    }


def take_screenshots(args, tmp, exp_id, parent_id, trial_id, out_dir):
    port, debug_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}/"
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    ui = browser = tools = None
    ui_log = open(os.path.join(tmp, "mlflow_ui.log"), "w")
    try:
        ui = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              cwd=tmp, env=env, stdout=ui_log, stderr=subprocess.STDOUT, start_new_session=True)
        browser = subprocess.Popen([args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                    "--no-first-run", "--no-default-browser-check", "--mute-audio",
                                    f"--window-size={WIDTH},{HEIGHT}", f"--remote-debugging-port={debug_port}",
                                    f"--user-data-dir={os.path.join(tmp, 'chromium')}", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

        def ui_up():
            if ui.poll() is not None:
                raise RuntimeError(f"mlflow ui exited (status {ui.returncode}); see {ui_log.name}")
            return urllib.request.urlopen(base + "health", timeout=5).status == 200
        wait_for("mlflow ui", ui_up, 120)

        def page_target():
            with urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json", timeout=5) as r:
                return next((t for t in json.load(r) if t["type"] == "page"), None)
        tools = DevTools(wait_for("chromium", page_target, 60)["webSocketDebuggerUrl"])
        tools.call("Page.enable")
        tools.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1,
                   mobile=False)

        # 1. the runs table, with the UI state written to localStorage before the app's scripts run
        settings = {
            "mlflow.workflowType_v1": json.dumps("machine_learning"),
            "mlflow.assistant.panelOpen_v1": "false",
            "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
            f'MLflowLocalStorage-1.1-ExperimentPage-["{exp_id}"]-ReactComponentState': json.dumps(ui_state(parent_id)),
            f"MLflowLocalStorage-1.1-ExperimentView-{exp_id}-expandRows": "true",
        }
        tools.call("Page.addScriptToEvaluateOnNewDocument",
                   source=f"if (location.origin === {json.dumps(base.rstrip('/'))}) Object.entries("
                          f"{json.dumps(settings)}).forEach(([k, v]) => localStorage.setItem(k, v));")
        tools.call("Page.navigate", url=f"{base}#/experiments/{exp_id}/runs?workflowType=machine_learning")
        tools.wait_js("the runs table with the trials and metric columns",
                      "[...document.querySelectorAll('a')].filter(a => /\\/runs\\/[0-9a-f]{32}/.test(a.href)"
                      " && /demo-\\d{5}/.test(a.textContent)).length >= %d"
                      " && !!document.querySelector('[col-id=\"metrics.`val/acc_few`\"]')" % args.trials)
        time.sleep(2)  # let the grid settle (column sizing, row animations)
        tools.screenshot(os.path.join(out_dir, "mlflow_experiment.png"))

        # 2. the best trial's Artifacts tab with the eKLD-vs-class-size plot selected
        tools.call("Page.navigate",
                   url=f"{base}#/experiments/{exp_id}/runs/{trial_id}/artifacts/plots/ekld_vs_class_size.png")
        tools.wait_js("the artifact preview",
                      "[...document.images].some(i => i.complete && i.naturalWidth > 300)")
        time.sleep(1)
        tools.screenshot(os.path.join(out_dir, "mlflow_trial_run.png"))
    finally:
        if tools is not None:
            tools.close()
        stop(browser, "chromium")
        stop(ui, "mlflow ui")
        ui_log.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "docs"), help="folder for the PNGs (default: docs/)")
    p.add_argument("--trials", type=int, default=3, help="trials in the demo sweep (default 3)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per trial (default 4)")
    p.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser")
                   or shutil.which("google-chrome"), help="the Chromium / Chrome binary")
    p.add_argument("--sweep-timeout", type=int, default=900, help="seconds allowed for the demo sweep")
    p.add_argument("--keep", action="store_true", help="keep the temporary store (printed) instead of removing it")
    args = p.parse_args()
    if not args.chromium:
        p.error("no chromium on PATH; pass --chromium")
    start = time.time()
    tmp = tempfile.mkdtemp(prefix="gitune-screenshots-")
    ray_tmp = tempfile.mkdtemp(prefix="gitune-screenshots-ray-", dir="/tmp")  # short: Ray's socket paths
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", MLFLOW_DISABLE_TELEMETRY="true", RAY_TMPDIR=ray_tmp,
               GITUNE_SYSTEM_METRICS=os.environ.get("GITUNE_SYSTEM_METRICS", "0"))
    try:
        run_sweep(args, tmp, env)
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
        exp_id, parent_id, trial_id = find_runs(tmp)
        os.makedirs(args.out, exist_ok=True)
        take_screenshots(args, tmp, exp_id, parent_id, trial_id, args.out)
    except RuntimeError as e:
        print(f"screenshots: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
        if args.keep:
            print(f"screenshots: demo store kept in {tmp} (mlflow ui --backend-store-uri sqlite:///{tmp}/mlflow.db)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"screenshots: done in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
