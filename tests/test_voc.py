"""Pascal VOC: the reader (layout, boxes, difficult objects, class lists, errors), average precision
as the VOC devkit computes it, and the classification transfer through ``natlearn transfer``."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from sklearn.metrics import average_precision_score

from natlearn.cli import main
from natlearn.data.voc import VOC_CLASSES, VOCImage, VOCSplit, decode_images, read_voc
from natlearn.errors import NatlearnError
from natlearn.evaluate.voc import classification as voc_classification
from natlearn.evaluate.voc.classification import _bce, class_average_precisions

sys.path.insert(0, str(Path(__file__).parent))
from voc_fixture import write_voc_fixture  # noqa: E402

# Distinct split sizes: a call's row count says which split it scored.
SIZES = {"train": 12, "val": 9, "test": 10}


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return write_voc_fixture(tmp_path_factory.mktemp("voc"), sizes=SIZES)


def test_reader_gives_0_based_boxes_classes_and_difficult_as_the_xml_says(voc):
    split = read_voc(voc.root, "trainval")
    assert [image.path.stem for image in split.images] == voc.splits["trainval"]
    assert split.classes == VOC_CLASSES  # the fixture draws cat, dog, person: VOC names
    for image in split.images:
        want = voc.objects[image.path.stem]
        assert image.path == voc.base / "JPEGImages" / f"{image.path.stem}.jpg"
        assert image.boxes.dtype == torch.float32 and image.boxes.shape == (len(want), 4)
        assert image.boxes.tolist() == [list(map(float, item.box)) for item in want]
        assert [split.classes[i] for i in image.labels.tolist()] == [o.name for o in want]
        assert image.labels.dtype == torch.int64
        assert image.difficult.tolist() == [item.difficult for item in want]
    assert any(image.difficult.any() for image in split.images)  # the fixture has some


def _image(labels: list[int], difficult: list[bool]) -> VOCImage:
    boxes = torch.tensor([[0.0, 0.0, 5.0, 5.0]] * len(labels)).view(-1, 4)
    labels_, hard = (
        torch.tensor(labels, dtype=torch.int64),
        torch.tensor(difficult, dtype=torch.bool),
    )
    return VOCImage(Path("x.jpg"), boxes, labels_, hard)


def test_class_targets_follow_the_voc07_rule():
    """1: a non-difficult object (even beside difficult ones); 0: difficult ones only; -1: none."""
    split = VOCSplit(
        [_image([0, 0, 1], [True, False, True]), _image([2], [False]), _image([], [])],
        ("a", "b", "c"),
    )
    targets = split.class_targets()
    assert targets.dtype == torch.int8
    assert targets.tolist() == [[1, 0, -1], [-1, -1, 1], [-1, -1, -1]]


def test_class_targets_of_the_fixture_match_its_objects(voc):
    split = read_voc(voc.root, "test")
    targets = split.class_targets()
    for row, image_id in enumerate(voc.splits["test"]):
        for c, name in enumerate(split.classes):
            kinds = {item.difficult for item in voc.objects[image_id] if item.name == name}
            want = 1 if False in kinds else 0 if kinds else -1
            assert targets[row, c] == want, (image_id, name)
    assert (targets == 0).any()


def test_class_list_given_else_voc_else_the_names_found(tmp_path):
    own = write_voc_fixture(tmp_path / "cifar", classes=("truck", "cat", "frog"))
    train = read_voc(own.root, "train")
    assert train.classes == ("cat", "frog", "truck")  # not all VOC names: sorted
    given = read_voc(own.root, "test", classes=("truck", "frog", "cat", "ship"))
    assert given.classes == ("truck", "frog", "cat", "ship")
    first = own.objects[own.splits["test"][0]][0]
    assert given.classes[int(given.images[0].labels[0])] == first.name
    with pytest.raises(NatlearnError, match="not among the classes"):
        read_voc(own.root, "test", classes=("cat", "frog"))


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


def test_reader_errors_are_one_line_naming_the_problem_and_fix(tmp_path, voc):
    with pytest.raises(NatlearnError) as error:
        read_voc(tmp_path / "nowhere", "train")
    assert "VOCdevkit/VOC2007" in _one_line(error) and "download=true" in _one_line(error)
    with pytest.raises(NatlearnError) as error:
        read_voc(voc.root, "minival")
    assert "'minival' is not one of train, val, trainval, test" in _one_line(error)
    with pytest.raises(NatlearnError) as error:
        read_voc(voc.root, "test", year="2012")
    assert "'test' is not one of train, val, trainval" in _one_line(error)

    broken = write_voc_fixture(tmp_path / "broken", sizes={"train": 3, "val": 3, "test": 3})
    main_list = broken.base / "ImageSets" / "Main"
    (main_list / "val.txt").unlink()
    with pytest.raises(NatlearnError) as error:
        read_voc(broken.root, "val")
    assert "val.txt is missing" in _one_line(error)
    first, second = broken.splits["train"][:2]
    (broken.base / "JPEGImages" / f"{first}.jpg").unlink()
    with pytest.raises(NatlearnError) as error:
        read_voc(broken.root, "train")
    assert f"{first}.jpg is missing" in _one_line(error)
    (main_list / "train.txt").write_text(f"{second}\n")
    (broken.base / "Annotations" / f"{second}.xml").write_text("<annotation><object>")
    with pytest.raises(NatlearnError) as error:
        read_voc(broken.root, "train")
    assert f"{second}.xml is not a VOC annotation" in _one_line(error)
    (broken.base / "Annotations" / f"{second}.xml").write_text("<annotation></annotation>")
    with pytest.raises(NatlearnError) as error:
        read_voc(broken.root, "train")
    assert "hold no <object>" in _one_line(error)


def _ap(ranked: list[int], eleven_point: bool) -> float:
    """AP of one class whose images, best score first, have these targets."""
    scores = torch.arange(len(ranked), 0, -1, dtype=torch.float32)[:, None]
    return float(class_average_precisions(scores, torch.tensor(ranked)[:, None], eleven_point)[0])


def test_average_precision_on_hand_computed_rankings():
    # Precision at the positives 1, 1, 3/4: already non-increasing.
    assert _ap([1, 1, -1, 1, -1], eleven_point=False) == pytest.approx(11 / 12)
    # 11-point: recall >= 0..0.6 reaches precision 1 (7 points), 0.7..1 only 3/4 (4 points).
    assert _ap([1, 1, -1, 1, -1], eleven_point=True) == pytest.approx((7 + 3) / 11)
    # Precision at the positives 1, 2/3, 3/4: the envelope lifts 2/3 to 3/4.
    assert _ap([1, -1, 1, 1], eleven_point=False) == pytest.approx((1 + 0.75 + 0.75) / 3)
    assert _ap([1, -1, 1, 1], eleven_point=True) == pytest.approx((4 + 7 * 0.75) / 11)
    # Recall exactly 3/10 does not reach the 0.3 point: the devkit's and py-faster-rcnn's
    # thresholds (0:0.1:1, np.arange) put it at 0.30000000000000004. The reviewer's ranking.
    ranked = [1, 1, 1, -1, -1, -1, -1, -1, -1, -1, 1, 1, 1, 1, 1, 1, 1]
    devkit = (3 * 1 + 8 * 10 / 17) / 11  # points 0..0.2 precision 1, then 10/17 at recall 1
    assert _ap(ranked, eleven_point=True) == pytest.approx(devkit) and round(devkit, 4) == 0.7005


def test_all_point_ap_is_sklearn_where_precision_never_rises_and_above_it_elsewhere():
    monotone = [1, 1, -1, 1, -1, -1]
    for ranked in (monotone, [1, -1, 1, 1]):
        scores = list(range(len(ranked), 0, -1))
        sk = average_precision_score([r > 0 for r in ranked], scores)
        ours = _ap(ranked, eleven_point=False)
        assert ours == pytest.approx(sk) if ranked is monotone else ours > sk + 0.02
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        scores = torch.randperm(30, generator=generator).float()[:, None]
        truth = torch.where(torch.rand(30, 1, generator=generator) < 0.3, 1, -1)
        truth[0] = 1
        ours = float(class_average_precisions(scores, truth, eleven_point=False)[0])
        assert ours >= average_precision_score(truth[:, 0] > 0, scores[:, 0]) - 1e-12


def test_difficult_only_images_are_ignored_by_ap_and_loss_and_classes_without_positives_are_nan():
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.1, 0.4]])
    ignored = torch.tensor([[1, -1], [0, -1], [-1, -1], [1, -1]], dtype=torch.int8)
    without = torch.tensor([[1, -1], [-1, -1], [1, -1]], dtype=torch.int8)
    kept = scores[[0, 2, 3]]
    for eleven in (True, False):
        got = class_average_precisions(scores, ignored, eleven)
        assert got[0] == class_average_precisions(kept, without, eleven)[0]
        assert math.isnan(got[1])
    # The second image's logit for class 0 (difficult only) does not move the loss.
    logits = scores.clone()
    logits[1, 0] = 50.0
    assert _bce(logits, ignored) == _bce(scores, ignored)
    counted = ignored.clone()
    counted[1, 0] = 1  # were it a positive, the logit would count
    assert _bce(logits, counted) != _bce(scores, counted)


def test_transfer_cli_classifies_with_every_choice_made_on_val(voc, tmp_path, monkeypatch, capsys):
    splits = {name: read_voc(voc.root, name).class_targets() for name in SIZES}
    scored: list[str] = []
    real = voc_classification.class_average_precisions

    def spy(scores, targets, eleven_point=True):
        scored.append(next(name for name, t in splits.items() if torch.equal(t, targets)))
        return real(scores, targets, eleven_point)

    monkeypatch.setattr(voc_classification, "class_average_precisions", spy)
    fitted: list[int] = []  # rows each probe or fine-tuning was trained on
    fit, tune = voc_classification._fit_linear, voc_classification.tuned_copy

    def fit_spy(x, targets, decay):
        fitted.append(len(x))
        return fit(x, targets, decay)

    def tune_spy(model, outputs, images, *args, **kwargs):
        fitted.append(len(images))
        return tune(model, outputs, images, *args, **kwargs)

    monkeypatch.setattr(voc_classification, "_fit_linear", fit_spy)
    monkeypatch.setattr(voc_classification, "tuned_copy", tune_spy)
    out = tmp_path / "out"
    argv = [
        "transfer",
        "voc07",
        "random-init",
        f"data_root={voc.root}",
        "image_size=24",
        "widths=4,8",
        "progress=false",
        "--finetune",
        "1",
        "--finetune-lr",
        "0.05,0.01",
        "--layers",
        "conv2,neck",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    results = json.loads((out / "transfer.json").read_text())
    assert results["images"] == SIZES and results["classes"] == list(VOC_CLASSES)
    source = results["sources"]["0-random-init"]
    assert source["image_size"] == 24 and source["arch"] == "small"
    linear, tuned = source["protocols"]["linear"], source["protocols"]["finetune"]["all"]
    assert set(linear) == {"conv2", "neck"}
    for run in [*linear.values(), tuned]:
        assert run["chosen_on"] == "val" and run["fit_on"] == "trainval"
        test = run["test"]
        assert set(test) == {"map11", "map_all", "ap11", "ap_all", "classes_scored"}
        assert test["classes_scored"] == 3 and 0 <= test["map11"] <= 1
        aps = [ap for ap in test["ap11"].values() if ap is not None]
        assert len(aps) == 3 and test["map11"] == pytest.approx(sum(aps) / 3)
        assert test["ap11"]["aeroplane"] is None  # no aeroplane in the fixture
    assert linear["neck"]["weight_decay"] in results["settings"]["weight_decays"]
    assert set(tuned["val_map11_by_lr"]) == {"0.05", "0.01"}
    assert tuned["lr"] == max((0.05, 0.01), key=lambda lr: tuned["val_map11_by_lr"][f"{lr:g}"])
    # Test scored once per protocol (each AP variant), after every choice; choices on val only.
    assert scored.count("test") == 2 * 3 and "train" not in scored
    assert scored[-2:] == ["test", "test"] and set(scored) == {"val", "test"}
    trainval = SIZES["train"] + SIZES["val"]  # fits on train, then one final fit each on trainval
    assert set(fitted) == {SIZES["train"], trainval} and fitted.count(trainval) == 3
    markdown = (out / "transfer.md").read_text()
    assert "| **mAP** |" in markdown and "chosen on val" in markdown


def test_transfer_cli_refuses_bad_sources_and_data_in_one_line(voc, tmp_path, capsys):
    out = ["--out", str(tmp_path / "o")]
    for argv, expected in (
        (["raw-pixels", f"data_root={voc.root}"], "raw-pixels has none"),
        (["random-init", f"data_root={tmp_path}", "image_size=16"], "download=true"),
        (["random-init", f"data_root={voc.root}"], "give image_size=N"),
        (["random-init", f"data_root={voc.root}", "image_size=16", "--layers", "fc9"], "fc9"),
        (["random-init", "image_size=16", "--finetune-lr", "0,1"], "--finetune-lr"),
    ):
        assert main(["transfer", "voc07", *argv, *out]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err


def test_transfer_cli_detects_with_the_lr_chosen_on_val_and_test_scored_once(
    voc, tmp_path, monkeypatch
):
    from natlearn.evaluate.voc import detection

    calls: list[tuple[int, int, float]] = []  # (train images, scored images, lr) of each run
    real = detection.detection_transfer

    def spy(network, train, test, settings, progress=True):
        calls.append((len(train), len(test), settings.lr))
        return real(network, train, test, settings, progress)

    monkeypatch.setattr(detection, "detection_transfer", spy)
    out = tmp_path / "out"
    argv = ["random-init", f"data_root={voc.root}", "image_size=24", "widths=4,8", "progress=false"]
    detect = ["--detect-size", "32", "--detect-epochs", "1", "--detect-lr", "0.02,0.01"]
    assert main(["transfer", "voc07", *argv, "--task", "detect", *detect, "--out", str(out)]) == 0
    found = json.loads((out / "transfer.json").read_text())["sources"]["0-random-init"]["detection"]
    trainval = SIZES["train"] + SIZES["val"]
    assert calls[:2] == [(SIZES["train"], SIZES["val"], 0.02), (SIZES["train"], SIZES["val"], 0.01)]
    assert calls[2:] == [(trainval, SIZES["test"], found["lr"])]  # test once, after the choice
    tried = (0.02, 0.01)  # the best val mAP; a tie goes to the earlier one
    chosen = max(tried, key=lambda lr: (found["val_map11"][f"{lr:g}"] or -1, -tried.index(lr)))
    assert found["lr"] == chosen and found["lr_chosen_on"] == "val"
    assert found["settings"]["image_size"] == 32 and found["test_images"] == SIZES["test"]
    assert 0 <= found["map11"] <= 1 and 0 <= found["map_all"] <= 1
    markdown = (out / "transfer.md").read_text()
    assert "| class | detection (mAP@0.5) (AP11 / AP all) |" in markdown
    assert f"- detection (mAP@0.5): lr {found['lr']:g} (chosen on val), 1 epochs" in markdown


def test_transfer_cli_refuses_bad_detection_options_before_any_work(tmp_path, capsys):
    """Before any work: the data root does not even exist, and the option's error comes first."""
    nowhere = tmp_path / "no-voc"
    base = ["transfer", "voc07", "random-init", f"data_root={nowhere}", "image_size=16"]
    out = ["--out", str(tmp_path / "o")]
    for task in ("detect", "both"):
        for flags, expected in (
            (["--detect-layer", "neck"], "'neck' (--detect-layer) is not a trunk block"),
            (["--detect-layer", "head"], "needs a feature map; give one of conv1, conv2, conv3"),
            (["--detect-layer", "conv9"], "'conv9' (--detect-layer) is not a trunk block"),
            (["--detect-epochs", "0"], "epochs=0 must be >= 1"),
            (["--detect-lr", "x"], "--detect-lr"),
        ):
            assert main([*base, "--task", task, *flags, *out]) == 2
            err = capsys.readouterr().err
            assert expected in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_transfer_cli_refuses_a_fixed_input_size_network_for_detection_up_front(tmp_path, capsys):
    """A ViT takes one input size only; the detector resizes each image to its own aspect."""
    pytest.importorskip("timm")
    nowhere = tmp_path / "no-voc"
    argv = ["random-init", "arch=timm:vit_tiny_patch16_224", f"data_root={nowhere}"]
    for task in ("detect", "both"):
        out = ["--out", str(tmp_path / "o")]
        code = main(["transfer", "voc07", *argv, "image_size=32", "--task", task, *out])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert "arch=timm:vit_tiny_patch16_224 takes images of one fixed size only" in err


def test_transfer_cli_honours_device(tmp_path, capsys):
    """device= is read before any work (the data root does not exist)."""
    argv = ["transfer", "voc07", "random-init", f"data_root={tmp_path}", "image_size=16"]
    devices = [("device=bogus", "device='bogus' is not a torch device")]
    if not torch.cuda.is_available():
        devices.append(("device=cuda", "no CUDA GPU is visible"))
    for device, expected in devices:
        assert main([*argv, device, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err


def test_transfer_cli_writes_a_sources_classification_before_its_detection_runs(
    voc, tmp_path, monkeypatch, capsys
):
    from natlearn.evaluate.voc import run

    def broken(*args, **kwargs):
        raise NatlearnError("detection broke")

    monkeypatch.setattr(run, "voc07_detection", broken)
    out = tmp_path / "out"
    argv = ["random-init", f"data_root={voc.root}", "image_size=16", "widths=4,8", "progress=false"]
    flags = ["--finetune", "0", "--task", "both", "--out", str(out)]
    assert main(["transfer", "voc07", *argv, *flags]) == 2
    assert "detection broke" in capsys.readouterr().err
    source = json.loads((out / "transfer.json").read_text())["sources"]["0-random-init"]
    assert 0 <= source["protocols"]["linear"]["neck"]["test"]["map11"] <= 1
    assert "detection" not in source
    assert "| **mAP** |" in (out / "transfer.md").read_text()


def _corrupt(voc_fixture, split: str, index: int, how: str) -> Path:
    path = voc_fixture.base / "JPEGImages" / f"{voc_fixture.splits[split][index]}.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncated" else b"not an image")
    return path


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_corrupt_image_is_one_line_in_classification_and_detection(tmp_path, how):
    from natlearn.evaluate.voc.detection import _read

    fixture = write_voc_fixture(tmp_path, sizes={"train": 3, "val": 3, "test": 3})
    path = _corrupt(fixture, "test", 1, how)
    test = read_voc(fixture.root, "test")
    messages = []
    for read in (
        lambda: decode_images(test, 16),
        lambda: decode_images(test, 16, channels=1),
        lambda: [_read(image, torch.device("cpu")) for image in test.images],
    ):
        with pytest.raises(NatlearnError) as error:
            read()
        messages.append(_one_line(error))
    assert f"cannot read image {path} (" in messages[0] and "restore the file" in messages[0]
    assert len(set(messages)) == 1  # one helper: the same line on every path


def test_transfer_cli_classification_of_a_corrupt_image_is_one_line(tmp_path, capsys):
    fixture = write_voc_fixture(tmp_path / "voc", sizes={"train": 3, "val": 3, "test": 3})
    path = _corrupt(fixture, "val", 0, "truncated")
    argv = ["random-init", f"data_root={fixture.root}", "image_size=16", "progress=false"]
    code = main(["transfer", "voc07", *argv, "--finetune", "0", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"cannot read image {path}" in err, err
