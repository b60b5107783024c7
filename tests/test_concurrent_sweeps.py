"""Two sweeps at once on one experiment, storage or generator cache: each gets a run folder of its own, both
create or find the one MLflow experiment, and the cache never holds a mix of two writers' files."""

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from mlflow.tracking import MlflowClient

from gitune import pretrain, run_folder, storage, tracking

START_SWEEP = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from gitune import tracking
    uri, run_dir, go = sys.argv[1:4]
    from mlflow.tracking import MlflowClient  # imported before the start line: the calls really overlap
    print("ready", flush=True)
    while not Path(go).exists():
        time.sleep(0.005)
    ctx = tracking.start_sweep("both", uri, run_dir, "name: both\\n", Path(run_dir).parent / "space.yaml", {},
                               resume=False)
    print("ok", ctx.experiment_id, ctx.parent_run_id, flush=True)
""")


def test_two_drivers_start_on_a_fresh_sqlite_store_at_once(tmp_path):
    """A new store: without care, both create MLflow's tables ("table ... already exists") or the experiment."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    (tmp_path / "space.yaml").write_text("name: both\n")
    go = tmp_path / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", START_SWEEP, uri, f"{tmp_path}/run{i}", str(go)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()[-2000:]
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    lines = [out.split() for out, _ in outs]
    assert lines[0][0] == lines[1][0] == "ok" and lines[0][1] == lines[1][1]  # one experiment
    assert lines[0][2] != lines[1][2]  # a parent run each
    client = MlflowClient(uri)
    (exp,) = [e for e in client.search_experiments() if e.name == "both"]
    assert len(client.search_runs([exp.experiment_id])) == 2


def test_an_experiment_created_a_moment_ago_is_taken(tmp_path):
    """What a driver meets when another one created the experiment between its lookup and its create."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    made = client.create_experiment("raced")
    assert tracking._create_experiment(client, "raced", uri) == made


def test_run_folders_started_in_the_same_second_are_distinct(tmp_path, monkeypatch):
    root = str(tmp_path / "rr")
    monkeypatch.setattr(run_folder.time, "strftime", lambda fmt: "20261204-101010")
    made, lock = [], threading.Lock()

    def start():
        d = run_folder.new_run_dir(root, "same")
        with lock:
            made.append(d)

    threads = [threading.Thread(target=start) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 16 and all(Path(d).is_dir() for d in made)
    assert all(Path(d).name.startswith("20261204-101010-") for d in made)


def test_a_taken_run_folder_name_is_never_handed_out_again(tmp_path, monkeypatch):
    """The suffix is random, and on a local disk the folder is made with an exclusive mkdir: a clash of
    suffixes is seen and another one drawn."""
    suffixes = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(run_folder.secrets, "token_hex", lambda n: next(suffixes))
    monkeypatch.setattr(run_folder.time, "strftime", lambda fmt: "20261204-101010")
    first = run_folder.new_run_dir(str(tmp_path), "s")
    second = run_folder.new_run_dir(str(tmp_path), "s")
    assert first.endswith("20261204-101010-aaaaaa") and second.endswith("20261204-101010-bbbbbb")
    assert storage.make_new_dir(first) is False


def test_run_folder_names_sort_by_start_time():
    older = ["20261204-101009", "20261204-101010-ffffff", "20261204-101010-000000"]
    newer = "20261204-101011-000000"
    assert sorted(older + [newer])[-1] == newer  # old names without a suffix sort among the new ones


def test_two_sweeps_storing_one_cache_key_at_once(tmp_path):
    """Each writes its own temporary file; the first to finish wins, the file is whole, info.json describes
    that same generator, and no partial file is left."""
    root = str(tmp_path / "rr")
    sources = []
    for i in range(2):
        src = tmp_path / f"gen{i}.pt"
        src.write_bytes(bytes([i]) * 4_000_000)
        sources.append(src)
    barrier = threading.Barrier(2)
    results = [None, None]

    def store(i):
        barrier.wait()
        results[i] = pretrain.store_in_cache(str(sources[i]), root, "k", {"run_dir": f"sweep{i}"})

    threads = [threading.Thread(target=store, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = [i for i, uri in enumerate(results) if uri is not None]
    assert len(stored) == 1, results
    (winner,) = stored
    folder = tmp_path / "rr" / pretrain.CACHE_DIR / "k"
    assert (folder / "generator.pt").read_bytes() == sources[winner].read_bytes()
    assert f'"sweep{winner}"' in (folder / "info.json").read_text()
    assert sorted(p.name for p in folder.iterdir()) == ["generator.pt", "info.json"]


def test_temporary_names_are_unique_and_hidden():
    names = {storage.temp_name("/x/generators/k/generator.pt") for _ in range(100)}
    assert len(names) == 100
    assert all(n.startswith("/x/generators/k/.generator.pt.") and n.endswith(".partial") for n in names)


def test_write_text_replaces_whole_files(tmp_path):
    target = str(tmp_path / "a" / "spec.yaml")
    assert storage.read_text(target) is None
    storage.write_text(target, "one\n")
    storage.write_text(target, "two\n")
    assert storage.read_text(target) == "two\n" and os.listdir(tmp_path / "a") == ["spec.yaml"]


def test_publish_new_keeps_the_first_file(tmp_path):
    fs, _ = storage.filesystem(str(tmp_path))
    first, second, final = (str(tmp_path / n) for n in ("t1", "t2", "final"))
    Path(first).write_text("first")
    Path(second).write_text("second")
    assert storage.publish_new(fs, first, final) is True
    assert storage.publish_new(fs, second, final) is False
    assert Path(final).read_text() == "first" and not Path(first).exists() and not Path(second).exists()
