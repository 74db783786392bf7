"""`python -m trainer` through `trainer.cli.main`, on a small learnable dataset written as IDX files here.

The data folder's .gz files are not the canonical MNIST ones, so their checksums would be refused:
the `local_mnist` fixture puts their sha256 into the dataset spec, the way a user's own data is
declared (`load_dataset(checksums=...)`), and removes the download mirrors so nothing is fetched.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from testkit import write_idx

from registry import Registry, open_registry
from trainer import dataset_specs, datasets
from trainer.cli import build_parser, main
from trainer.config import ROBUSTNESS_SAMPLE
from trainer.dataset_specs import FILES

PNG = b"\x89PNG\r\n\x1a\n"
N_TRAIN, N_TEST = 5400, 300  # the fast preset holds out 5000 for validation: leave it some to train on


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX: two zero bytes, type 0x08 (unsigned byte), the number of dimensions, big-endian sizes, data."""
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return bytes([0, 0, 0x08, array.ndim]) + dims + array.astype(np.uint8).tobytes()


@pytest.fixture(scope="module")
def data_files(tmp_path_factory, digits, one_blas_thread) -> tuple[Path, dict[str, str]]:
    """A folder with the four .gz files of a synthetic dataset, and their sha256."""
    folder = tmp_path_factory.mktemp("mnist-files")
    x, y = digits(N_TRAIN, seed=10)
    x_test, y_test = digits(N_TEST, seed=11)
    arrays = (x.reshape(-1, 28, 28), y, x_test.reshape(-1, 28, 28), y_test)
    sums = {}
    for name, array in zip(FILES, arrays, strict=True):
        data = gzip.compress(idx_bytes(array), compresslevel=1, mtime=0)
        (folder / name).write_bytes(data)
        sums[name] = hashlib.sha256(data).hexdigest()
    return folder, sums


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The current folder for every test here, so the dataset cache in ./data is built once."""
    return tmp_path_factory.mktemp("cwd")


@pytest.fixture
def clean_env(monkeypatch, workdir):
    settings = ("MNIST_MODELS_DIR", "MNIST_REGISTRY_URL", "MNIST_DATABASE_URL")
    for name in ("MNIST_DATA_DIR", "FASHION_MNIST_DATA_DIR", *settings):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(workdir)


@pytest.fixture
def local_mnist(monkeypatch, data_files, clean_env) -> Path:
    """Accept the synthetic files as MNIST; returns their folder."""
    folder, sums = data_files
    spec = dataclasses.replace(
        dataset_specs.dataset_spec("mnist"), sha256=sums, content_sha256={}, mirrors=()
    )
    monkeypatch.setitem(dataset_specs._SPECS, "mnist", spec)
    return folder


@pytest.fixture
def fast_plots(monkeypatch):
    """Stand-in for the six version plots (matplotlib takes seconds per version on a busy machine)."""
    import trainer.plots

    def write_version_plots(folder, curves, confusion, classes, params, levels, accuracy):
        for name in trainer.plots.PLOT_NAMES:
            (Path(folder) / f"{name}.png").write_bytes(PNG)
        return list(trainer.plots.PLOT_NAMES)

    monkeypatch.setattr(trainer.plots, "write_version_plots", write_version_plots)


@pytest.fixture
def models(tmp_path) -> Path:
    return tmp_path / "models"


def seed_args(data: Path, models: Path, iters: str = "200", *flags: str) -> list[str]:
    return ["sample", iters, "0.1", "16", "0", *flags, "--data-dir", str(data), "--models-dir", str(models),
            "--robustness-sample", "0"]  # fmt: skip


def train_args(data: Path, models: Path, *more: str) -> list[str]:
    """A quick `train`: the robustness suite is skipped unless `more` asks for a sample."""
    return ["train", "--preset", "fast", "--epochs", "1", "--hidden", "16", "--quiet",
            "--data-dir", str(data), "--models-dir", str(models),
            "--robustness-sample", "0", *more]  # fmt: skip


def test_the_synthetic_files_are_valid_idx_and_declared_checksums_accept_them(data_files, digits, tmp_path):
    folder, sums = data_files
    dataset = datasets.load_dataset("mnist", data_dir=folder, cache_dir=tmp_path, checksums=sums)
    x, y = digits(N_TRAIN, seed=10)
    np.testing.assert_array_equal(dataset.x_train, x)
    np.testing.assert_array_equal(dataset.y_train, y)
    assert dataset.x_test.shape == (N_TEST, 784) and dataset.checksums == sums


# -- the research script's positional form -------------------------------------------------------


def test_seed_form_with_save_publishes_a_version_with_plots_and_manifest(local_mnist, models, capsys):
    assert main(seed_args(local_mnist, models, "200", "-debug", "-save")) == 0
    out, err = capsys.readouterr()
    assert "test accuracy" in out and "after 200 iterations" in out
    assert "saved v0001 (candidate" in out
    # -debug prints each evaluation: by iteration, of the 200 asked for (not "20/20"), and the
    # accuracy is the test set's, as the seed form holds no validation images out.
    assert "iteration 10/200: train loss" in out + err and "iteration 200/200: train loss" in out + err
    assert "iteration 20/20:" not in out + err
    assert "test accuracy" in (out + err).split("iteration 200/200")[1].splitlines()[0]
    assert "validation accuracy" not in out + err

    registry = Registry(models)
    assert registry.versions() == ["v0001"]
    assert registry.current() is None  # a candidate until promoted
    manifest = registry.manifest("v0001")
    assert manifest["run_name"] == "sample"
    assert manifest["preset"] == "seed"
    params = manifest["hyperparameters"]
    assert (params["iters"], params["lr"], params["hidden"], params["noise"]) == (200, 0.1, [16], 0.0)
    assert params["epochs"] is None and params["optimizer"] == "sgd"
    assert manifest["sizes"] == [784, 16, 10]
    assert manifest["dataset"]["checksums"] == dict(zip(FILES, _sums(local_mnist), strict=True))
    assert manifest["test_accuracy"] > 0.9  # it trained on the synthetic digits
    assert len(manifest["confusion_matrix"]) == 10 and sum(map(sum, manifest["confusion_matrix"])) == N_TEST
    assert manifest["curves"]["x_label"] == "iteration" and manifest["curves"]["x"][-1] == 200
    assert len(manifest["noise_robustness"]["accuracy"]) == len(manifest["noise_robustness"]["levels"])

    plot_dir = models / "mnist" / "v0001"
    assert manifest["plots"] == ["accuracy", "loss", "confusion", "noise", "w1", "w2"]
    for name in manifest["plots"]:
        assert (plot_dir / f"{name}.png").read_bytes().startswith(PNG), name
    with open(plot_dir / "curves.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][0] == "iteration" and len(rows) == 21 and rows[-1][0] == "200"
    net, _ = registry.load("v0001")
    assert net.sizes == (784, 16, 10)


def _sums(folder: Path) -> list[str]:
    return [hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in FILES]


def test_seed_form_without_save_publishes_nothing(local_mnist, models, capsys):
    assert main(seed_args(local_mnist, models, "30")) == 0
    out, _ = capsys.readouterr()
    assert "test accuracy" in out and "after 30 iterations" in out and "saved" not in out
    assert not models.exists()


def test_seed_form_save_without_debug(local_mnist, models, fast_plots, capsys):
    assert main(seed_args(local_mnist, models, "40", "-save")) == 0
    out, err = capsys.readouterr()
    assert "saved v0001" in out
    assert "iteration 2/40" not in out + err  # no progress without -debug
    assert Registry(models).manifest("v0001")["hyperparameters"]["iters"] == 40


# -- train and the registry commands -------------------------------------------------------------


def test_train_publishes_and_promotes(local_mnist, models, fast_plots, capsys):
    assert main(train_args(local_mnist, models, "--promote")) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("mnist v0001: test accuracy ") and "promoted to current" in out
    registry = Registry(models)
    assert registry.current() == "v0001"
    manifest = registry.manifest("v0001")
    assert manifest["preset"] == "fast" and manifest["sizes"] == [784, 16, 10]
    assert manifest["hyperparameters"]["epochs"] == 1 and manifest["hyperparameters"]["val_size"] == 5000
    assert manifest["curves"]["x"] == [1.0]
    assert (models / "mnist" / "v0001" / "w1.png").is_file()


def test_train_list_promote_and_robustness_on_object_storage(
    local_mnist, models, fast_plots, tiny_fashion, s3_endpoint, monkeypatch, capsys
):
    """--registry s3://... (or MNIST_REGISTRY_URL): the same commands, the versions in a bucket."""
    from tests.realservers import new_bucket, s3_environment

    for name, value in s3_environment(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    url = f"s3://{new_bucket(s3_endpoint)}/shared"
    assert main([*train_args(local_mnist, models), "--registry", url]) == 0
    monkeypatch.setenv("MNIST_REGISTRY_URL", url)
    assert main(train_args(local_mnist, models, "--promote")) == 0
    assert not models.exists()  # nothing went to the local folder
    capsys.readouterr()
    assert main(["list", "--models-dir", str(models)]) == 0
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("* v0002 ") and lines[1].startswith("  v0001 ")
    assert main(["promote", "v0001"]) == 0
    assert main(robustness_args(local_mnist, models, tiny_fashion, "--seed", "3")) == 0
    out, _ = capsys.readouterr()
    assert f"recorded in {url}/mnist/v0001.json" in out
    registry = open_registry(url)
    assert registry.current() == "v0001"
    assert registry.manifest("v0001")["plots"][-1] == "robustness"
    assert registry.read_plot("v0001", "robustness").startswith(PNG)
    assert registry.read_plot("v0002", "w1").startswith(PNG)
    registry.load("v0001")


def test_promote_and_rollback_move_the_cluster_pointer_row(
    local_mnist, models, fast_plots, database_url, monkeypatch, capsys
):
    """With MNIST_DATABASE_URL the CLI moves the PostgreSQL row every replica follows, not the file."""
    assert main(train_args(local_mnist, models, "--promote")) == 0  # the folder's pointer: v0001
    monkeypatch.setenv("MNIST_DATABASE_URL", database_url)
    assert main([*train_args(local_mnist, models), "--promote"]) == 0
    assert main(["rollback", "--models-dir", str(models)]) == 0
    assert main(["promote", "v0002", "--models-dir", str(models)]) == 0
    assert Registry(models).current() == "v0001"  # the file stayed where the row started from
    shared = open_registry(models, database_url=database_url)
    pointer = shared.pointer()
    assert (pointer.version, pointer.generation) == ("v0002", 3) and pointer.updated_by.startswith("trainer@")
    shared.close()


def test_train_takes_the_augmentation_options_and_records_them(local_mnist, models, fast_plots, capsys):
    options = ["--rotate", "12", "--scale", "0.1", "--shear", "8", "--elastic", "25", "--elastic-sigma", "5",
               "--stroke", "0.5", "--contrast", "0.4", "--lowres", "0.2", "--augment-shift", "1"]  # fmt: skip
    assert main(train_args(local_mnist, models, *options, "--threads", "1")) == 0
    assert "test accuracy" in capsys.readouterr().out
    params = Registry(models).manifest("v0001")["hyperparameters"]
    recorded = {key: params[key] for key in params if key.startswith("augment_")}
    assert recorded == {
        "augment_shift": 1, "augment_rotate": 12.0, "augment_scale": 0.1, "augment_shear": 8.0,
        "augment_elastic": 25.0, "augment_elastic_sigma": 5.0, "augment_stroke": 0.5,
        "augment_contrast": 0.4, "augment_lowres": 0.2,
    }  # fmt: skip


def test_train_takes_label_smoothing_and_records_it(local_mnist, models, fast_plots, capsys):
    assert main(train_args(local_mnist, models, "--label-smoothing", "0.1", "--threads", "1")) == 0
    assert Registry(models).manifest("v0001")["hyperparameters"]["label_smoothing"] == 0.1


def test_train_without_promote_leaves_a_candidate_and_a_gate_can_refuse(
    local_mnist, models, fast_plots, capsys
):
    assert main(train_args(local_mnist, models)) == 0
    assert "candidate" in capsys.readouterr().out
    assert main(train_args(local_mnist, models, "--promote", "--min-accuracy", "1.01")) == 0
    assert "not promoted: test accuracy" in capsys.readouterr().out
    registry = Registry(models)
    assert registry.versions() == ["v0001", "v0002"] and registry.current() is None


def test_list_promote_rollback_and_evaluate(local_mnist, models, fast_plots, capsys):
    m = ["--models-dir", str(models)]
    assert main(["list", *m]) == 0
    assert "no versions of 'mnist'" in capsys.readouterr().out

    assert main(train_args(local_mnist, models)) == 0
    assert main(train_args(local_mnist, models, "--seed", "1")) == 0
    capsys.readouterr()

    assert main(["promote", "v0001", *m]) == 0
    assert capsys.readouterr().out.strip() == "mnist: current is now v0001 (was none)"
    assert main(["promote", "v0002", *m]) == 0
    assert capsys.readouterr().out.strip() == "mnist: current is now v0002 (was v0001)"
    assert main(["promote", "v0002", *m]) == 1  # already current: said, not reported as a move
    assert "v0002 is already the current version" in capsys.readouterr().err
    assert main(["promote", "2", *m]) == 1  # one rule for names: v0002, as listed
    assert "'2' is not a version name" in capsys.readouterr().err

    assert main(["list", *m]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["*", "v0002"], ["v0001", lines[1].split()[1]]]
    assert "784-16-10" in lines[0] and "fast" in lines[0]
    assert main(["list", "--json", *m]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["current"]) for r in rows] == [("v0002", True), ("v0001", False)]
    assert all(0 <= r["test_accuracy"] <= 1 and r["sizes"] == [784, 16, 10] for r in rows)

    assert main(["rollback", *m]) == 0
    assert capsys.readouterr().out.strip() == "mnist: rolled back from v0002 to v0001"
    assert Registry(models).current() == "v0001"
    assert main(["rollback", *m]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and "no earlier version to roll back to" in err and out == ""

    assert main(["evaluate", "current", "--data-dir", str(local_mnist), *m]) == 0
    out, err = capsys.readouterr()
    recorded = Registry(models).manifest("v0001")["test_accuracy"]
    assert out.startswith(f"mnist v0001 on mnist test ({N_TEST} images): accuracy {recorded:.4f}, loss ")
    assert "per class: 0:" in out and "under noise: 0%:" in out and "25%:" in out
    assert "note: the manifest recorded" not in err  # the same network on the same data
    assert main(["evaluate", "v0002", "--data-dir", str(local_mnist), *m]) == 0
    recorded = Registry(models).manifest("v0002")["test_accuracy"]
    assert capsys.readouterr().out.startswith(
        f"mnist v0002 on mnist test ({N_TEST} images): accuracy {recorded:.4f}"
    )


def test_registry_commands_report_unknown_versions_in_one_line(local_mnist, models, capsys):
    m = ["--models-dir", str(models)]
    assert main(["promote", "v0009", *m]) == 1
    assert capsys.readouterr().err.strip() == "error: model 'mnist' has no version v0009"
    assert main(["promote", "latest", *m]) == 1
    assert "not a version name" in capsys.readouterr().err
    assert main(["evaluate", "current", "--data-dir", str(local_mnist), *m]) == 1
    assert "no current version" in capsys.readouterr().err
    assert main(["rollback", *m]) == 1
    assert "Traceback" not in capsys.readouterr().err


# -- refusing bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr", "0"], "argument --lr: must be > 0, got 0"),
        (["--lr", "-1"], "argument --lr: must be > 0, got -1"),
        (["--lr", "nan"], "argument --lr: must be > 0, got nan"),
        (["--lr", "abc"], "argument --lr: invalid positive_float value: 'abc'"),
        (["--lr", "inf"], "learning rate must be in (0, 10], got inf"),
        (["--hidden", ""], "hidden sizes must be integers like 100 or 500,300, got ''"),
        (["--hidden", "0"], "hidden sizes must be >= 1, got '0'"),
        (["--hidden", "100,0"], "hidden sizes must be >= 1, got '100,0'"),
        (["--hidden", "-5"], "hidden sizes must be >= 1, got '-5'"),
        (["--hidden", "abc"], "hidden sizes must be integers like 100 or 500,300, got 'abc'"),
        (["--hidden", "100000"], "layer sizes must be between 1 and 16384"),
        (["--preset", "nope"], "argument --preset: invalid choice: 'nope'"),
        (["--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
        (["--epochs", "2", "--iters", "5"], "not allowed with argument"),
        (["--dropout", "1"], "dropout must be in [0, 1), got 1.0"),
        (["--optimizer", "rmsprop"], "argument --optimizer: invalid choice: 'rmsprop'"),
        (["--rotate", "200"], "rotation must be 0..180 degrees, got 200.0"),
        (["--lowres", "2"], "lowres must be a share 0..1, got 2.0"),
        (["--stroke", "x"], "argument --stroke: invalid float value: 'x'"),
        (["--elastic-sigma", "0"], "elastic sigma must be 0.5..10 pixels, got 0.0"),
        (["--label-smoothing", "0.6"], "label smoothing must be in [0, 0.5], got 0.6"),
    ],
)
def test_invalid_train_values_exit_2_with_a_message(clean_env, models, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *args, "--data-dir", "/nonexistent", "--models-dir", str(models)])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert message in err
    last = err.rstrip().splitlines()[-1]  # argparse's usage line, then one line of error
    assert last.startswith("python -m trainer") and ": error: " in last and message in last
    assert "Traceback" not in err and out == ""
    assert not models.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["s", "100", "0", "16", "0"], "argument lr: must be > 0, got 0"),
        (["s", "0", "0.1", "16", "0"], "argument iters: must be >= 1, got 0"),
        (["s", "100", "0.1", "0", "0"], "hidden sizes must be >= 1"),
        (["s", "100", "0.1", "16", "150"], "percentages must be in 0..100"),
        (["s", "100"], "the following arguments are required: lr, hidden, noise_percent"),
    ],
)
def test_invalid_seed_form_values_exit_2(clean_env, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--data-dir", "/nonexistent"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_no_command_is_a_usage_error(clean_env, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "required: COMMAND" in capsys.readouterr().err


def test_a_missing_data_folder_exits_1_with_a_clear_message(clean_env, models, tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    assert main(train_args(missing, models)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: mnist: the data folder (--data-dir) points to ")
    assert str(missing) in err and "does not exist" in err
    assert "Traceback" not in err
    assert not models.exists()


def test_files_that_are_not_canonical_mnist_are_refused(data_files, clean_env, models, capsys):
    folder, _ = data_files  # without local_mnist: the canonical MNIST checksums apply
    assert main(seed_args(folder, models, "10")) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "sha256 mismatch" in err and "Traceback" not in err


def test_a_validation_set_larger_than_the_data_exits_1_with_a_clear_message(local_mnist, models, capsys):
    assert main(train_args(local_mnist, models, "--val-size", str(N_TRAIN))) == 1
    err = capsys.readouterr().err
    assert f"validation size {N_TRAIN} leaves no training images" in err
    assert "Traceback" not in err and not (models / "mnist").exists()


# -- the noise experiment ------------------------------------------------------------------------


def test_noise_command_writes_csv_json_and_png(local_mnist, tmp_path, capsys):
    out_dir = tmp_path / "noise"
    levels = ["--train-levels", "0,20", "--test-levels", "0,30"]
    run = ["--epochs", "1", "--hidden", "16", "--val-size", "100", "--quiet"]
    argv = ["noise", *levels, *run, "--data-dir", str(local_mnist), "--out", str(out_dir)]
    assert main(argv) == 0
    out, _ = capsys.readouterr()
    assert "trained at \\ tested at" in out

    with open(out_dir / "noise_comparison.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["train_noise_percent", "test_0", "test_30"]
    assert [row[0] for row in rows[1:]] == ["0", "20"]
    table = np.array([[float(v) for v in row[1:]] for row in rows[1:]])
    assert table.shape == (2, 2) and ((table >= 0) & (table <= 1)).all()
    assert table[:, 0].min() > 0.5  # learned something: the clean test set is easy

    record = json.loads((out_dir / "noise_comparison.json").read_text())
    assert record["train_levels"] == [0, 20] and record["test_levels"] == [0, 30]
    np.testing.assert_allclose(record["accuracy"], table, atol=1e-4)
    assert record["config"]["hidden"] == [16] and record["config"]["epochs"] == 1

    assert (out_dir / "noise_comparison.png").read_bytes().startswith(PNG)


# -- the robustness suite ------------------------------------------------------------------------


@pytest.fixture
def tiny_fashion(tmp_path) -> Path:
    """Un-gzipped IDX files standing in for Fashion-MNIST (such files are checked by structure only):
    filled rectangles of varied sizes, things that are not digits."""
    folder = tmp_path / "fashion"
    folder.mkdir()
    images = np.zeros((12, 28, 28), np.uint8)
    for i, image in enumerate(images):
        image[3 + i % 4 : 24, 4 : 20 + i % 5] = 120 + 10 * i
    labels = np.arange(12, dtype=np.uint8) % 10
    write_idx(folder, "train", images, labels)
    write_idx(folder, "t10k", images, labels)
    return folder


def robustness_args(data: Path, models: Path, fashion: Path, *more: str) -> list[str]:
    return ["robustness", "v0001", "--limit", "6", "--variants", "clean,scan", "--data-dir", str(data),
            "--fashion-dir", str(fashion), "--models-dir", str(models), *more]  # fmt: skip


def test_robustness_prints_the_table_and_records_it_in_the_version(
    local_mnist, models, fast_plots, tiny_fashion, capsys
):
    assert main(train_args(local_mnist, models)) == 0
    registry = Registry(models)
    weights, before = registry.weights_path("v0001").read_bytes(), registry.manifest("v0001")
    capsys.readouterr()

    assert main(robustness_args(local_mnist, models, tiny_fashion, "--seed", "3")) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "mnist v0001: 6 test digits per variant, seed 3"
    assert [line.split()[0] for line in lines[2:4]] == ["clean", "scan"]
    assert lines[4].startswith("MNIST vs fashion-mnist by energy score: AUROC ")
    assert lines[-1].startswith("recorded in ") and "Traceback" not in err

    manifest = registry.manifest("v0001")
    section = manifest["robustness"]
    assert (section["limit"], section["seed"]) == (6, 3)
    assert [(v["name"], v["n"]) for v in section["variants"]] == [("clean", 6), ("scan", 6)]
    for variant, line in zip(section["variants"], lines[2:4], strict=True):
        assert line.split()[2] == f"{100 * variant['accuracy']:.1f}"  # the table is the record
        assert int(line.split()[4]) == variant["refused"]
    separation = section["separation"]
    assert (separation["digits"], separation["others"]) == (6, 6) and 0 <= separation["auroc"] <= 1
    assert manifest["plots"] == [*before["plots"], "robustness"]
    assert (models / "mnist" / "v0001" / "robustness.png").read_bytes().startswith(PNG)
    # only the new key and the plot list changed; the weights and their checksum did not
    assert {k: v for k, v in manifest.items() if k not in ("robustness", "plots")} == {
        k: v for k, v in before.items() if k != "plots"
    }
    assert registry.weights_path("v0001").read_bytes() == weights
    registry.load("v0001")


def test_robustness_json_without_writing(local_mnist, models, fast_plots, tiny_fashion, capsys):
    assert main(train_args(local_mnist, models)) == 0
    capsys.readouterr()
    assert main(robustness_args(local_mnist, models, tiny_fashion, "--json", "--no-write")) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["model"] == "mnist" and record["version"] == "v0001" and record["limit"] == 6
    assert [v["name"] for v in record["variants"]] == ["clean", "scan"]
    assert "robustness" not in Registry(models).manifest("v0001")
    assert not (models / "mnist" / "v0001" / "robustness.png").exists()


@pytest.mark.parametrize(
    ("more", "status", "message"),
    [
        (["--variants", "clean,nope"], 2, "--variants: unknown variant nope; choose among clean, scan,"),
        (["--limit", "0"], 2, "argument --limit: must be >= 1, got 0"),
        (["--fashion-dir", "/nonexistent/fashion"], 1, "error: --fashion-dir /nonexistent/fashion: "),
    ],
)
def test_robustness_refuses_bad_options_in_one_line(
    local_mnist, models, fast_plots, tiny_fashion, capsys, more, status, message
):
    assert main(train_args(local_mnist, models)) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) if status == 2 else contextlib.nullcontext() as raised:
        code = main(robustness_args(local_mnist, models, tiny_fashion, *more))
    assert (raised.value.code if status == 2 else code) == status
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert "robustness" not in Registry(models).manifest("v0001")


def test_robustness_of_an_unknown_version_is_one_line(local_mnist, models, capsys):
    argv = ["robustness", "v0009", "--data-dir", str(local_mnist), "--models-dir", str(models)]
    assert main(argv) == 1
    assert capsys.readouterr().err.strip() == "error: model 'mnist' has no version v0009"


def test_train_runs_a_robustness_sample_when_publishing(
    local_mnist, models, fast_plots, tiny_fashion, monkeypatch, capsys
):
    monkeypatch.setenv("FASHION_MNIST_DATA_DIR", str(tiny_fashion))
    assert main(train_args(local_mnist, models, "--robustness-sample", "4")) == 0
    manifest = Registry(models).manifest("v0001")
    section = manifest["robustness"]
    assert section["limit"] == 4 and section["seed"] == manifest["hyperparameters"]["seed"]
    assert len(section["variants"]) >= 27 and all(v["n"] == 4 for v in section["variants"])
    assert section["separation"]["others"] == 4
    assert manifest["plots"] == [*trainer_plot_names(), "robustness"]
    assert (models / "mnist" / "v0001" / "robustness.png").read_bytes().startswith(PNG)


def test_a_failing_robustness_suite_does_not_lose_the_trained_version(
    local_mnist, models, fast_plots, monkeypatch, capsys
):
    import trainer.robustness

    def fail(*args, **kwargs):
        raise RuntimeError("a variant broke")

    monkeypatch.setattr(trainer.robustness, "run_suite", fail)
    assert main(train_args(local_mnist, models, "--robustness-sample", "2")) == 0
    manifest = Registry(models).manifest("v0001")
    assert manifest["robustness"] == {"error": "RuntimeError: a variant broke"}
    assert manifest["plots"] == trainer_plot_names()
    Registry(models).load("v0001")


def trainer_plot_names() -> list[str]:
    import trainer.plots

    return list(trainer.plots.PLOT_NAMES)


# -- the digit score's calibration ---------------------------------------------------------------


def test_a_published_version_carries_its_digit_score_calibration(local_mnist, models, fast_plots):
    assert main(train_args(local_mnist, models)) == 0
    calibration = Registry(models).manifest("v0001")["digit_score"]
    quantiles = calibration["energy_quantiles"]
    assert len(quantiles) == 101 and quantiles == sorted(quantiles)
    assert quantiles[0] < quantiles[50] < quantiles[100]


def test_the_robustness_command_calibrates_a_version_published_without_it(
    local_mnist, models, fast_plots, tiny_fashion
):
    assert main(train_args(local_mnist, models)) == 0
    registry = Registry(models)
    manifest_path = registry.folder / "v0001.json"
    old = json.loads(manifest_path.read_text())
    calibration = old.pop("digit_score")
    manifest_path.write_text(json.dumps(old))  # as a version from before the score was made
    assert main(robustness_args(local_mnist, models, tiny_fashion)) == 0
    assert registry.manifest("v0001")["digit_score"] == calibration
    registry.load("v0001")  # the weights are untouched


def test_empty_folder_settings_mean_unset(clean_env, monkeypatch):
    """`MNIST_MODELS_DIR=` and `--data-dir ""` are unset, never the current folder."""
    monkeypatch.setenv("MNIST_MODELS_DIR", "")
    monkeypatch.setenv("MNIST_ROBUSTNESS_SAMPLE", "")
    args = build_parser().parse_args(["train", "--data-dir", ""])
    assert args.models_dir == Path("state/models") and args.data_dir is None
    assert args.robustness_sample == ROBUSTNESS_SAMPLE
