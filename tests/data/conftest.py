"""The CIFAR-100 fixture in its real on-disk format, shared by the data tests."""
import pytest
import torchvision.datasets as tvd

from tests.data.formats import write_cifar100


@pytest.fixture
def cifar100(tmp_path, monkeypatch):
    md5 = write_cifar100(tmp_path)
    # torchvision verifies the real files' checksums: point its lists at the fixture's
    monkeypatch.setattr(tvd.CIFAR100, "train_list", [["train", md5["train"]]])
    monkeypatch.setattr(tvd.CIFAR100, "test_list", [["test", md5["test"]]])
    monkeypatch.setattr(tvd.CIFAR100, "meta", {**tvd.CIFAR100.meta, "md5": md5["meta"]})
    return tmp_path
