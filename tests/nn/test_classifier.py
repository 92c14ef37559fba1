"""The LeNet feature network: both input layouts give the same features, save/load round-trips exactly,
the frozen extractor is deterministic, and a wrong image size is a clear error."""

from __future__ import annotations

import pytest
import torch

from lightning_gm.nn.classifier import FeatureExtractor, LeNet, load_feature_network, save_feature_network


@pytest.mark.parametrize("channels,feature_dim", [((4, 8), 16), ((16, 32), 128)])
def test_flat_and_image_inputs_give_the_same_features(channels, feature_dim) -> None:
    torch.manual_seed(0)
    net = LeNet(channels, feature_dim).eval()
    x = torch.rand(5, 784)
    torch.testing.assert_close(net.features(x), net.features(x.view(5, 1, 28, 28)))
    assert net.features(x).shape == (5, feature_dim) and net(x).shape == (5, 10)
    assert net.num_features == feature_dim


@pytest.mark.parametrize("meta", [{}, {"test_acc": 0.99, "data": {"dataset": "mnist"}}])
def test_save_load_round_trip(tmp_path, meta) -> None:
    torch.manual_seed(1)
    net = LeNet((4, 8), 16, dropout=0.1).eval()
    path = save_feature_network(net, tmp_path / "sub" / "f.pt", **meta)
    loaded, got_meta = load_feature_network(path)
    x = torch.rand(7, 1, 28, 28)
    assert torch.equal(loaded.features(x), net.features(x)) and torch.equal(loaded(x), net(x))
    assert got_meta == meta and loaded.arch == net.arch and not loaded.training


def test_extractor_is_frozen_and_deterministic() -> None:
    torch.manual_seed(2)
    ext = FeatureExtractor(LeNet((4, 8), 16, dropout=0.9)).train()
    x = torch.rand(6, 784)
    assert torch.equal(ext(x), ext(x)) and not ext.net.training
    assert all(not p.requires_grad for p in ext.parameters()) and ext.num_features == 16


def test_wrong_image_size_and_bad_file_are_clear_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"28x28 images .* got shape \(3, 64\)"):
        LeNet().features(torch.rand(3, 64))
    with pytest.raises(FileNotFoundError):
        load_feature_network(tmp_path / "missing.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a feature network"):
        load_feature_network(tmp_path / "other.pt")
