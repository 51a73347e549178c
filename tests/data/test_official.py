"""Official splits of torchvision datasets and ImageFolder roots, read from tiny files in the
real formats; class orders of the benchmarks; the offline error."""
import numpy as np
import pytest
import torchvision.datasets as tvd

from ptcore import data as D
from ptcore.cli import main
from tests.data.formats import write_image_folder, write_mnist

# iCaRL's CIFAR-100 class order (its published code, reproduced by PODNet and PyCIL with
# seed 1993): the first two tasks of 10, and the last class.
ICARL_FIRST = [68, 56, 78, 8, 23, 84, 90, 65, 74, 76]
ICARL_SECOND = [40, 89, 3, 92, 55, 9, 26, 80, 43, 38]


def test_class_order_is_pycils():
    order = D.class_order(100)
    assert order[:10] == ICARL_FIRST and order[10:20] == ICARL_SECOND and order[-1] == 33
    assert sorted(order) == list(range(100))
    tasks = D.benchmark_tasks("split-cifar100", 10)
    assert tasks[0] == ICARL_FIRST and len(tasks) == 10 and all(len(t) == 10 for t in tasks)
    state = np.random.get_state()[1].copy()
    D.class_order(100)
    assert np.array_equal(np.random.get_state()[1], state)  # global numpy RNG untouched
    with pytest.raises(ValueError, match="must divide"):
        D.benchmark_tasks("split-cifar100", 7)
    with pytest.raises(ValueError, match="unknown benchmark"):
        D.benchmark_tasks("split-mnist", 5)


def test_cifar100_official_splits(cifar100):
    splits = D.official_splits("CIFAR100", cifar100)
    assert set(splits) == {"train", "test"}
    assert len(splits["train"]) == 200 and len(splits["test"]) == 100
    x, y = splits["train"][0]
    assert x.shape == (3, 224, 224)
    # the image is the colour of its class (see write_cifar100): labels came with their images
    raw = tvd.CIFAR100(cifar100, train=False)
    img, label = raw[5]
    assert np.asarray(img)[0, 0, 0] == 2 * label
    b = D.benchmark_splits("split-cifar100", cifar100)
    assert len(b["test"]) == 100


def test_split_cifar100_from_the_command_line(cifar100, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["incremental", "--benchmark", "split-cifar100", "--tasks", "10",
                 "--root", str(cifar100), "--model", "mobilenet_v3_small", "--method", "naive",
                 "--epochs", "1", "--batch-size", "32", "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    matrix = printed.split("class-incremental accuracy matrix")[1].split("average")[0]
    assert len(matrix.strip().splitlines()) == 1 + 10  # header line + one row per task


def test_mnist_idx_files(tmp_path):
    write_mnist(tmp_path)
    splits = D.official_splits("MNIST", tmp_path)
    assert len(splits["train"]) == 20 and len(splits["test"]) == 10
    x, y = splits["test"][3]
    assert x.shape == (3, 224, 224) and int(y) == 3  # grey digits become RGB


def test_offline_error_names_the_files(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        D.official_splits("MNIST", tmp_path)
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte") in str(e.value)
    assert "download=True" in str(e.value)
    with pytest.raises(FileNotFoundError, match="cifar-100-python/train"):
        D.official_splits("CIFAR100", tmp_path)
    with pytest.raises(ValueError, match="not a torchvision dataset"):
        D.official_splits("Imagenette9", tmp_path)


def test_image_folder_splits(tmp_path):
    write_image_folder(tmp_path / "pets")
    splits = D.folder_splits(tmp_path / "pets")
    assert set(splits) == {"train", "val", "test"}
    assert splits["train"].classes == ["cat", "dog"] and len(splits["test"]) == 6
    assert {p.rsplit(".", 1)[1] for p, _ in splits["train"].samples} == {"png", "jpg"}
    x, _ = splits["val"][0]
    assert x.shape == (3, 224, 224) and D.is_deterministic(splits["train"])
    assert D.has_official_splits(str(tmp_path / "pets"))
    write_image_folder(tmp_path / "odd", splits=("train",))
    write_image_folder(tmp_path / "odd", splits=("test",), classes=("cat", "cow"))
    with pytest.raises(ValueError, match="different classes"):
        D.folder_splits(tmp_path / "odd")
    write_image_folder(tmp_path / "flat", splits=("train",))
    with pytest.raises(FileNotFoundError, match="val/ or test/"):
        D.folder_splits(tmp_path / "flat")


def test_finetune_uses_the_folder_splits(tmp_path, capsys):
    write_image_folder(tmp_path / "pets", per_class=4)
    out = tmp_path / "run"
    code = main(["finetune", "--model", "resnet18", "--data", str(tmp_path / "pets"),
                 "--image-size", "32", "--epochs", "1", "--batch-size", "4", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    assert "on 8 samples" in capsys.readouterr().out  # the test/ folder: 2 classes x 4
