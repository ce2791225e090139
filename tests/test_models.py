"""Offline ImageNet weights, the model file round trip, and refusal of bad model files."""

import pytest
import torch
from conftest import kaggle_images
from safetensors.torch import save_file

from wbc.errors import WbcError
from wbc.image.decode import decode
from wbc.image.framing import load_input, resize_to
from wbc.infer.predictor import load_model
from wbc.models.classifier import CellClassifier, ModelSpec, set_trainable
from wbc.models.io import load_model_file, save_model
from wbc.models.weights import create_backbone, offline_weights


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "tf_efficientnet_lite2"])
def test_offline_weights_cover_every_tensor(wbc_cache, name):
    import timm
    from safetensors.torch import load_file

    converted = load_file(str(offline_weights(name)))
    target = timm.create_model(name, pretrained=False).state_dict()
    assert set(converted) == set(target)
    assert all(converted[k].shape == target[k].shape for k in target)


def test_pretrained_backbone_differs_from_random_and_sees_cells(wbc_cache):
    torch.manual_seed(0)
    pre, rnd = create_backbone("tf_efficientnet_lite0", True).eval(), create_backbone("tf_efficientnet_lite0", False).eval()
    imgs = torch.stack([resize_to(decode(p), (224, 224)) for p in kaggle_images("TEST_SIMPLE", "EOSINOPHIL", 2)]).float()
    x = (imgs / 255 - 0.5) / 0.5
    with torch.no_grad():
        fp, fr = pre(x), rnd(x)
    assert not torch.allclose(fp, fr)
    # ImageNet features of real images are sparse and non-negative after the ReLU6 head
    assert (fp >= 0).all() and (fp == 0).float().mean() < 0.9


def test_unknown_backbone_and_offline_hub_give_clear_errors(wbc_cache):
    with pytest.raises(WbcError, match="unknown backbone"):
        create_backbone("no_such_net")
    with pytest.raises(WbcError, match="--no-pretrained"):
        create_backbone("legacy_xception", pretrained=True)  # no internet here
    m = CellClassifier(ModelSpec(backbone="xception", input_size=(96, 128), head=(32,)), pretrained=False)
    assert m(torch.zeros(1, 3, 96, 128)).shape == (1, 4)


def test_save_load_round_trip(tmp_path, wbc_cache):
    spec = ModelSpec(input_size=(96, 128), head=(64,), temperature=1.3, review_threshold=0.8)
    model = CellClassifier(spec, pretrained=True).eval()
    path = tmp_path / "m.safetensors"
    save_model(model, path, {"note": "x"})
    loaded, meta = load_model_file(path)
    assert loaded.spec == spec and meta["info"] == {"note": "x"}
    x = torch.stack([load_input(p, spec) for p in kaggle_images("TEST", "MONOCYTE", 3)]).float()
    with torch.no_grad():
        assert torch.allclose(model.probabilities(x), loaded.probabilities(x), atol=2e-3)  # weights stored as fp16


def test_set_trainable_last_stages(wbc_cache):
    m = CellClassifier(ModelSpec(head=(16,)), pretrained=False)
    set_trainable(m, 2)
    trainable = {n for n, p in m.backbone.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("blocks.6.", "conv_head.", "bn2.")) for n in trainable)
    assert "conv_head.weight" in trainable and any(n.startswith("blocks.6.") for n in trainable)
    assert all(p.requires_grad for p in m.head.parameters())
    assert not m.backbone.conv_stem.weight.requires_grad


def test_layer_decay_gives_early_blocks_the_smallest_rates_and_every_weight_one_group(wbc_cache):
    from wbc.training.config import TrainConfig
    from wbc.training.train import round2_groups

    m = CellClassifier(ModelSpec(head=(16,)), pretrained=False)
    set_trainable(m, -1)
    cfg = TrainConfig(round2_lr=1e-3, layer_decay=0.8)
    groups = round2_groups(m, cfg)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in m.parameters()) and len(set(ids)) == len(ids)
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert {rate[id(p)] for p in m.head.parameters()} == {1e-3}  # the head at --round2-lr
    stem, head_conv = rate[id(m.backbone.conv_stem.weight)], rate[id(m.backbone.conv_head.weight)]
    blocks = [rate[id(b[0].conv_dw.weight)] for b in m.backbone.blocks]  # each stage's first block
    assert stem < blocks[0] and blocks == sorted(blocks) and blocks[-1] <= head_conv <= 1e-3
    assert stem == pytest.approx(1e-3 * 0.8 ** 16)  # the stem, then 16 blocks (timm puts conv_head with the last)
    assert len(round2_groups(m, TrainConfig(layer_decay=1.0))) == 1  # off: one rate, as before
    set_trainable(m, 2)  # with --train-stages, the frozen blocks take no group
    assert {id(p) for g in round2_groups(m, cfg) for p in g["params"]} == {id(p) for p in m.parameters() if p.requires_grad}


@pytest.mark.parametrize("kind", ["truncated", "garbage", "foreign", "missing", "folder"])
def test_bad_model_files_are_refused(tmp_path, wbc_cache, kind):
    path = tmp_path / "bad.safetensors"
    if kind in ("truncated", "garbage"):
        model = CellClassifier(ModelSpec(input_size=(96, 128), head=(16,)), pretrained=False)
        save_model(model, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if kind == "truncated" else b"\x00" * 100 + data[100:200])
    elif kind == "foreign":
        save_file({"w": torch.zeros(3)}, str(path))
    elif kind == "folder":
        path.mkdir()
    with pytest.raises(WbcError) as e:
        load_model(path)
    assert str(path) in str(e.value)


def test_a_class_whose_sure_validation_answers_fall_under_the_floor_is_always_reviewed():
    """`unvouched`: the answers at or above the one threshold, per predicted class; a class under 97% right among them
    is returned with its evidence; a class at 97% or more among them, or with none that sure, is not."""
    from wbc.training.train import unvouched

    probs = torch.tensor([[0.96, 0.02, 0.02]] * 40 + [[0.02, 0.95, 0.03]] * 5 + [[0.3, 0.3, 0.4]] * 3)
    y = torch.tensor([0] * 39 + [1] + [1, 1, 0, 0, 0] + [2] * 3)
    assert unvouched(probs, y, ["A", "B", "C"], 0.9) == {"B": [2, 5]}  # A: 39 of 40 (97.5%); C: none that sure
    assert unvouched(probs, y, ["A", "B", "C"], 0.955) == {}  # B's answers now all below the threshold
