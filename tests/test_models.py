"""fbhelpers.models: backbones by name, MultiHeadNet outputs and input checks, load_weights."""
import re

import pytest
import torch

from fbhelpers.models import BACKBONES, VGGFACE_PREFIX_MAP, MultiHeadNet, build_backbone, load_weights
from fbhelpers.tasks import FACE_TASKS, Task

pytestmark = pytest.mark.usefixtures("one_thread")  # VGG-16 / ResNet-50 at 112 px: 2 threads spin-wait when shared
BUILT_IN = ("cnn4", "vgg16", "resnet18", "resnet50")
NAMES = tuple(sorted(BACKBONES))  # every registered backbone, with its default options
OUT_DIM = {"cnn4": 256, "vgg16": 4096, "resnet18": 512, "resnet50": 2048}  # known sizes; others: their out_dim


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {name: MultiHeadNet(FACE_TASKS, name).eval() for name in NAMES}


def test_registry_and_unknown_name():
    assert set(BUILT_IN) <= set(BACKBONES)
    with pytest.raises(ValueError, match=r"'vgg19'.*" + re.escape(str(sorted(BACKBONES)))):
        build_backbone("vgg19")


@pytest.mark.parametrize("name", NAMES)
def test_output_shapes_all_sizes(nets, name):
    net = nets[name]
    out_dim = OUT_DIM.get(name, net.backbone.out_dim)
    assert net.feature_dim == out_dim
    with torch.no_grad():
        for size in (48, 96, 112):
            x = torch.rand(2, 3, size, size)
            out, feats = net(x, return_features=True)
            assert set(out) == {"expr", "au", "va"}
            assert tuple(out["expr"].shape) == (2, 7)
            assert tuple(out["au"].shape) == (2, 17)
            assert tuple(out["va"].shape) == (2, 2)
            assert bool(((out["va"] >= -1) & (out["va"] <= 1)).all())
            assert tuple(feats.shape) == (2, out_dim)
            assert torch.isfinite(feats).all()
            torch.testing.assert_close(net.features(x), feats)


def test_cnn4_pool_keeps_a_layout_grid():
    flat = MultiHeadNet(FACE_TASKS, "cnn4", widths=(4, 8, 8, 6), pool=3)
    assert flat.feature_dim == 6 * 9
    for size in (24, 48, 96):
        out, feats = flat(torch.rand(2, 3, size, size), return_features=True)
        assert tuple(feats.shape) == (2, 54) and tuple(out["au"].shape) == (2, 17)
    with pytest.raises(ValueError, match="pool must be a positive integer, got 0"):
        build_backbone("cnn4", pool=0)


def test_parameter_counts_match_torchvision_layouts(nets):
    # torchvision totals minus their 1000-way classifier: resnet18 11,689,512 - 513,000;
    # resnet50 25,557,032 - 2,049,000; vgg16 138,357,544 - 4,097,000 (fc8).
    expected = {"resnet18": 11_176_512, "resnet50": 23_508_032, "vgg16": 134_260_544}
    for name, n in expected.items():
        assert sum(p.numel() for p in nets[name].backbone.parameters()) == n
    keys = set(nets["resnet50"].backbone.state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.0.conv3.weight", "layer1.0.downsample.1.weight",
            "layer4.2.bn3.bias"} <= keys
    assert len(keys) == 318  # torchvision resnet50 state dict has 320 keys incl. fc.weight/fc.bias
    gap = build_backbone("vgg16", fc_width=None).eval()
    with torch.no_grad():
        assert gap.out_dim == 512 and tuple(gap(torch.rand(1, 3, 48, 48)).shape) == (1, 512)
    vgg_convs = sorted(int(k.split(".")[1]) for k in nets["vgg16"].backbone.state_dict()
                       if k.startswith("features.") and k.endswith(".weight"))
    assert vgg_convs == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def test_one_channel_and_input_checks():
    torch.manual_seed(0)
    net = MultiHeadNet(FACE_TASKS, "resnet18", in_channels=1).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, 48, 48))
    assert tuple(out["au"].shape) == (2, 17)
    with pytest.raises(ValueError, match=r"expected 1 input channels.*got 3"):
        net(torch.rand(2, 3, 48, 48))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\), got \(1, 48, 48\)"):
        net(torch.rand(1, 48, 48))
    with pytest.raises(ValueError, match="torch.uint8"):
        net(torch.zeros(2, 1, 48, 48, dtype=torch.uint8))


def test_normalisation_inside_model():
    torch.manual_seed(0)
    net = MultiHeadNet(FACE_TASKS, "cnn4", mean=(0.4, 0.5, 0.6), std=0.2).eval()
    x = torch.rand(2, 3, 48, 48)
    mean = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(net.features(x), net.backbone((x - mean) / 0.2))
    with pytest.raises(ValueError, match="got 2"):
        MultiHeadNet(FACE_TASKS, "cnn4", mean=(0.1, 0.2))


def test_heads_and_task_checks():
    tasks = (Task("species", "multiclass", ("a", "b", "c")), Task("attr", "multilabel", ("x", "y")))
    net = MultiHeadNet(tasks, "cnn4", dropout=0.3)
    out = net(torch.rand(4, 3, 48, 48))
    sum(o.sum() for o in out.values()).backward()
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="duplicate task names"):
        MultiHeadNet((tasks[0], tasks[0]))
    with pytest.raises(ValueError, match=r"\['a\.b'\]"):
        MultiHeadNet((Task("a.b", "multiclass", ("u", "v")),))


def test_head_inputs_reads_source_probabilities_without_reaching_the_trunk():
    torch.manual_seed(0)
    net = MultiHeadNet(FACE_TASKS, "cnn4", widths=(8, 8, 8, 8), pool=2, head_inputs={"expr": "au"})
    assert tuple(net.heads["expr"].weight.shape) == (7, 17)  # a 17 x 7 classifier, not one on the features
    x = torch.rand(5, 3, 32, 32)
    out = net(x)
    assert list(out) == ["expr", "au", "va"]  # the tasks' order is kept
    expected = net.heads["expr"](torch.sigmoid(out["au"]))
    assert torch.allclose(out["expr"], expected)
    out["expr"].sum().backward()
    assert all(p.grad is None for p in net.backbone.parameters())  # gradient stopped at the AU probabilities
    assert all(p.grad is None for p in net.heads["au"].parameters())
    assert net.heads["expr"].weight.grad.abs().sum() > 0
    # a multiclass source feeds its softmax, a regression source its tanh values
    net = MultiHeadNet(FACE_TASKS, "cnn4", widths=(8, 8, 8, 8), head_inputs={"au": "expr", "va": "expr"})
    out = net(x)
    assert torch.allclose(out["au"], net.heads["au"](torch.softmax(out["expr"], dim=1)))
    assert torch.allclose(out["va"], torch.tanh(net.heads["va"](torch.softmax(out["expr"], dim=1))))
    net = MultiHeadNet(FACE_TASKS, "cnn4", widths=(8, 8, 8, 8), head_inputs={"expr": "va"})
    out = net(x)
    assert tuple(net.heads["expr"].weight.shape) == (7, 2)
    assert torch.allclose(out["expr"], net.heads["expr"](out["va"]))  # out["va"] is already tanh'd
    for bad, match in (({"expr": "pose"}, r"unknown tasks \['pose'\]"), ({"expr": "expr"}, "no self-reference"),
                       ({"expr": "au", "au": "va"}, "chain")):
        with pytest.raises(ValueError, match=match):
            MultiHeadNet(FACE_TASKS, "cnn4", head_inputs=bad)


def test_load_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    a = MultiHeadNet(FACE_TASKS, "cnn4").eval()
    torch.manual_seed(1)
    b = MultiHeadNet(FACE_TASKS, "cnn4").eval()
    x = torch.rand(2, 3, 48, 48)
    torch.save(a.state_dict(), tmp_path / "raw.pt")
    torch.save({"model": a.state_dict(), "step": 3}, tmp_path / "ckpt.pt")
    with torch.no_grad():
        assert not torch.allclose(a(x)["au"], b(x)["au"])
        for f in ("raw.pt", "ckpt.pt"):
            assert load_weights(b, tmp_path / f) == ([], [])
            for k, v in a(x).items():
                torch.testing.assert_close(b(x)[k], v)


def test_pretrained_path_loads_backbone(tmp_path):
    torch.manual_seed(0)
    src = build_backbone("resnet18")
    sd = {**src.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    torch.save(sd, tmp_path / "tv.pt")
    with pytest.raises(ValueError, match=r"2 unexpected keys \['fc.weight', 'fc.bias'\]"):
        MultiHeadNet(FACE_TASKS, "resnet18", pretrained_path=tmp_path / "tv.pt")
    net = MultiHeadNet(FACE_TASKS, "resnet18", pretrained_path=tmp_path / "tv.pt",
                       pretrained_prefix_map={"fc.": None})
    torch.testing.assert_close(net.backbone.layer3[1].conv2.weight, src.layer3[1].conv2.weight)
    missing, unexpected = load_weights(build_backbone("resnet18"), tmp_path / "tv.pt", strict=False)
    assert (missing, unexpected) == ([], ["fc.weight", "fc.bias"])


def test_shape_mismatch_names_parameter_and_shapes(tmp_path):
    path = tmp_path / "small.pt"
    torch.save(build_backbone("cnn4", widths=(16, 64, 128, 256)).state_dict(), path)
    with pytest.raises(ValueError, match=r"small\.pt.*'features\.0\.weight'.*\(16, 3, 3, 3\).*\(32, 3, 3, 3\)"):
        load_weights(build_backbone("cnn4"), path)
    torch.save({"model": [1, 2]}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="holds no state dict"):
        load_weights(build_backbone("cnn4"), tmp_path / "bad.pt")


def test_vggface_prefix_map(tmp_path):
    torch.manual_seed(0)
    src = build_backbone("vgg16", fc_width=32, fc_dropout=0.0).eval()
    inverse = {v: k for k, v in VGGFACE_PREFIX_MAP.items() if v is not None}
    dag = {}
    for key, value in src.state_dict().items():
        prefix = key[: key.rindex(".") + 1]
        dag[inverse[prefix] + key[len(prefix):]] = value
    dag["fc8.weight"], dag["fc8.bias"] = torch.zeros(2622, 32), torch.zeros(2622)
    assert "conv5_3.weight" in dag
    torch.save(dag, tmp_path / "vgg_face_dag.pt")
    dst = build_backbone("vgg16", fc_width=32, fc_dropout=0.0).eval()
    load_weights(dst, tmp_path / "vgg_face_dag.pt", prefix_map=VGGFACE_PREFIX_MAP)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))
