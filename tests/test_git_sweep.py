"""End to end: the generator stage under Tune, its reuse, GIT classifier trials, and git.prob = 0 equal to
the baseline; all read back from a real MLflow sqlite store."""

import textwrap

import pytest
from mlflow.tracking import MlflowClient

from gitune import sweep

DATA = """
  data: {name: glyphs, num_classes: 4, image_size: 16, profile: exp, n_max: 60, ratio: 6,
         val_per_class: 8, test_per_class: 8, nuisance: {rotation: 180}}
  model: {arch: small_cnn}
  optim: {lr: 0.05, warmup_epochs: 0, milestones: [2], gamma: 0.1}
  train: {epochs: 2, batch_size: 24, threads: 1, seed: 3}
  eval: {inv_interval: 1, inv_images_per_class: 4, inv_transforms: 2, batch_size: 64}
"""
GENERATOR = """
generator:
  {checkpoint}
  config: {{dim: 4, style_dim: 4, mlp_dim: 8, n_res: 1, disc_dim: 4, disc_layers: 2, iterations: 6,
           batch_size: 4, report_every: 3, grid_every: 3, threads: 1}}
"""


def write_space(tmp_path, name, generator=True, space="", git="", checkpoint=""):
    text = f"name: {name}\nmetric: val/bal_acc\nnum_samples: 1\nscheduler: {{type: fifo}}\n" \
           f"search: {{type: grid}}\nresources: {{cpu: 1}}\n"
    if generator:
        text += GENERATOR.format(checkpoint=f"checkpoint: {checkpoint}" if checkpoint else "")
    text += "config:" + DATA + (f"  git: {{{git}}}\n" if git else "")
    if space:
        text += "space:\n" + space + "\n"
    f = tmp_path / f"{name}.yaml"
    f.write_text(textwrap.dedent(text))
    return f


def run(tmp_path, space_file):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    rc = sweep.main(["--space", str(space_file), "--tracking-uri", uri, "--storage", str(tmp_path / "rr")])
    return rc, MlflowClient(uri)


def runs(client, name, filt=""):
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], filt, max_results=100)


def history(client, run, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]


@pytest.mark.timeout(600)
def test_generator_stage_git_trials_reuse_and_baseline(tmp_path, ray_session, capsys):
    space = write_space(tmp_path, "git", space="  git.prob: {grid: [0.0, 0.5]}")
    rc, client = run(tmp_path, space)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "pretraining it first" in out

    gens = runs(client, "git", "tags.stage = 'generator'")
    assert len(gens) == 1 and gens[0].info.status == "FINISHED"
    gen_run = gens[0]
    assert [s for s, _ in history(client, gen_run, "loss/recon_x")] == [3, 6]
    for key in ("fid/nuisance_ed", "fid/nuisance_ed_feat", "fid/style_effect", "fid/content", "fid/content_true"):
        assert [s for s, _ in history(client, gen_run, key)] == [3, 6], key  # rotation: chosen by fid/nuisance_ed
    chosen = next(line for line in out.splitlines() if "chose trial" in line)
    assert "chosen by fid/nuisance_ed (min)" in chosen
    samples = [a.path for a in client.list_artifacts(gen_run.info.run_id, "samples")]
    assert samples == ["samples/iter_0000003.png", "samples/iter_0000006.png"]
    assert [a.path for a in client.list_artifacts(gen_run.info.run_id, "generator")] == ["generator/generator.pt"]
    parent = runs(client, "git", "tags.`gitune.role` = 'sweep'")[0]
    assert parent.data.tags["gitune.generator"] == "trained"
    assert parent.data.tags["gitune.generator_run_id"] == gen_run.info.run_id
    cached = list((tmp_path / "rr" / "generators").glob("*/generator.pt"))
    assert len(cached) == 1

    trials = {float(r.data.params["git.prob"]): r for r in runs(client, "git", "tags.stage = 'classifier'")}
    assert set(trials) == {0.0, 0.5}
    n_train = int(trials[0.5].data.params["data/train_images"])
    sizes = [24] * (n_train // 24) + ([n_train % 24] if n_train % 24 else [])
    expected = sum(int(0.5 * b + 0.5) for b in sizes)  # round(prob · B) generated images per batch
    assert history(client, trials[0.5], "git/generated") == [(1, expected), (2, expected)]
    assert history(client, trials[0.0], "git/generated") == []
    for r in trials.values():  # invariance under the generator, beside the nuisance eKLD, in every trial
        assert len(history(client, r, "inv/ekld_gen_mean")) == 2
        assert "inv/ekld_gen/c000" in r.data.metrics and "inv/consistency_gen_few" in r.data.metrics
        assert r.data.params["generator/key"] == cached[0].parent.name
        plots = [a.path for a in client.list_artifacts(r.info.run_id, "plots")]
        assert "plots/ekld_gen_vs_class_size.png" in plots

    # The same sweep again: the cached generator is reused, no second generator run.
    rc, client = run(tmp_path, space)
    assert rc == 0
    reused = next(line for line in capsys.readouterr().out.splitlines() if "reusing" in line)
    assert chosen.split("; ", 1)[1] in reused  # the stored fidelity, printed again
    assert len(runs(client, "git", "tags.stage = 'generator'")) == 1
    newest = runs(client, "git", "tags.`gitune.role` = 'sweep'")[0]
    assert newest.data.tags["gitune.generator"] == "cached"

    # git.prob = 0 is exactly the baseline: a sweep without any generator gives the same numbers.
    rc, client = run(tmp_path, write_space(tmp_path, "base", generator=False))
    assert rc == 0
    base = runs(client, "base", "tags.stage = 'classifier'")[0]
    for key in ("train/loss", "val/bal_acc", "val/loss", "inv/ekld_mean", "test/bal_acc"):
        assert history(client, base, key) == history(client, trials[0.0], key), key
    assert history(client, base, "train/loss") != history(client, trials[0.5], "train/loss")

    # generator.checkpoint as an MLflow run URI skips pretraining; one sweep compares ERM, the oracle (the
    # true nuisance on clean images), GIT, and both, each taking its own range of batch positions.
    given = write_space(tmp_path, "given", checkpoint=f"runs:/{gen_run.info.run_id}",
                        space="  git.prob: {grid: [0.0, 0.5]}\n  aug.oracle_prob: {grid: [0.0, 0.5]}")
    rc, client = run(tmp_path, given)
    assert rc == 0
    assert runs(client, "given", "tags.stage = 'generator'") == []
    parent = runs(client, "given", "tags.`gitune.role` = 'sweep'")[0]
    assert parent.data.tags["gitune.generator"] == "given"
    arms = {(float(r.data.params["git.prob"]), float(r.data.params["aug.oracle_prob"])): r
            for r in runs(client, "given", "tags.stage = 'classifier'")}
    assert len(arms) == 4
    for (git_p, oracle_p), r in arms.items():
        # The oracle's range starts after GIT's and is cut at the batch end (odd last batches).
        git_n = [int(git_p * b + 0.5) for b in sizes]
        oracle_n = sum(min(int(oracle_p * b + 0.5), b - g) for b, g in zip(sizes, git_n))
        for name, p, n in (("git", git_p, sum(git_n)), ("oracle", oracle_p, oracle_n)):
            assert history(client, r, f"{name}/generated") == ([(1, n), (2, n)] if p else []), \
                (name, git_p, oracle_p)
    assert history(client, arms[(0.0, 0.5)], "train/loss") != history(client, arms[(0.0, 0.0)], "train/loss")
    assert history(client, arms[(0.0, 0.0)], "train/loss") == history(client, base, "train/loss")
