import pytest

from natlearn.config import RESUME_LOCKED, Config, apply_overrides, choices
from natlearn.errors import NatlearnError
from natlearn.presets import PRESETS_DIR, load_preset


def test_overrides_are_typed():
    config = apply_overrides(
        Config(), ["epochs=7", "lr=1e-3", "flip=false", "widths=[8,16]", "k=null", "data=digits"]
    )
    assert (config.epochs, config.lr, config.flip, config.widths, config.k) == (
        7,
        1e-3,
        False,
        (8, 16),
        None,
    )
    assert apply_overrides(Config(), ["widths=8,16,32"]).widths == (8, 16, 32)


def test_unknown_key_suggests_the_closest():
    with pytest.raises(NatlearnError, match="did you mean 'epochs'"):
        apply_overrides(Config(), ["epoch=3"])


@pytest.mark.parametrize(
    "item,message",
    [
        ("epochs=ten", "not a valid int"),
        ("epochs=2.5", "not a valid int"),
        ("lr=fast", "not a valid float"),
        ("flip=maybe", "not a valid bool"),
        ("epochs", "expected key=value"),
    ],
)
def test_bad_values_are_rejected(item, message):
    with pytest.raises(NatlearnError, match=message):
        apply_overrides(Config(), [item])


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"dim": 0}, "dim=0"),
        ({"batch_size": 1}, "batch_size=1"),
        ({"lr": 0.0}, "lr=0.0"),
        ({"momentum": 1.0}, "momentum"),
        ({"input": "hsv"}, "rgb, gray, sobel"),
        ({"targets": "cube"}, "sphere, discrete"),
        ({"reassign_every": -1}, "reassign_every"),
        ({"targets": "discrete", "num_clusters": 500, "dim": 32}, "num_clusters"),
    ],
)
def test_validation_names_the_field(changes, message):
    with pytest.raises(NatlearnError, match=message):
        apply_overrides(Config(), changes).validate()


def test_what_depends_on_the_data_is_checked_when_resolved():
    with pytest.raises(NatlearnError, match="k >= n"):
        Config(k=5, batch_size=4).resolve(8, 10)
    with pytest.raises(NatlearnError, match="spare_targets"):
        Config(k=12, spare_targets=3, batch_size=4).resolve(8, 10)
    with pytest.raises(NatlearnError, match="subset=400 is larger than the data set"):
        Config(subset=400).resolve(8, 300)
    with pytest.raises(NatlearnError, match="at least 2 images per rank"):
        Config(batch_size=6).resolve(8, 300, world_size=4)
    resolved = Config(subset=200, batch_size=64).resolve(8, 300)
    assert (resolved.n, resolved.k, resolved.crop_size, resolved.loss) == (200, 200, 8, "square")
    assert Config(crop_size=24, objective="supervised").resolve(32).crop_size == 24
    assert Config(objective="supervised").resolve(32).loss == "softmax"
    assert Config(precision="auto", device="cpu").resolve(8).precision == "fp32"


def test_choices_come_from_the_field_types():
    assert choices("crop") == ("pad", "resized", "none") and choices("seed") == ()
    with pytest.raises(
        NatlearnError, match="crop='box' is not valid; choose one of: pad, resized, none"
    ):
        Config(crop="box").validate()


@pytest.mark.parametrize("path", sorted(PRESETS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_presets_load_and_validate(path):
    load_preset(path.stem).validate()


def test_missing_preset_lists_the_shipped_ones():
    with pytest.raises(NatlearnError, match="digits"):
        load_preset("nope")


def test_preset_with_a_typo_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(NatlearnError, match="learning_rate"):
        load_preset(str(bad))


def test_string_fields_keep_the_text_as_typed(tmp_path):
    config = apply_overrides(
        Config(), ["out=on", "data_root=no", "data=1e3", "device=cuda:0", "train_split=train"]
    )
    assert (config.out, config.data_root, config.data, config.device, config.train_split) == (
        "on",
        "no",
        "1e3",
        "cuda:0",
        "train",
    )
    assert apply_overrides(Config(data_root="x"), ["data_root="]).data_root == ""
    preset = tmp_path / "quoted.yaml"
    preset.write_text("out: 'on'\ndata_root: ''\ndata: digits\n")
    assert (load_preset(str(preset)).out, load_preset(str(preset)).data_root) == ("on", "")
    preset.write_text(
        "out: on\n"
    )  # YAML 1.1 reads a bare on as true: refuse it rather than name a folder True
    with pytest.raises(NatlearnError, match="out=True is not a string; quote it"):
        load_preset(str(preset))


def test_resume_locks_what_the_saved_state_depends_on():
    assert {"spare_targets", "test_fraction", "loss"} <= set(RESUME_LOCKED)
    saved = Config(k=1300).to_dict()
    with pytest.raises(NatlearnError, match=r"in spare_targets \(checkpoint 0, now 4\)"):
        Config(k=1300, spare_targets=4).check_resumable(saved)
    with pytest.raises(NatlearnError, match=r"test_fraction \(checkpoint 0.2, now 0.5\)"):
        Config(k=1300, test_fraction=0.5).check_resumable(saved)
    # schedule, optimiser and speed settings may change
    Config(
        k=1300,
        epochs=99,
        lr=0.1,
        reassign_every=1,
        assign_block=64,
        progress=False,
        precision="fp32",
    ).check_resumable(saved)
    # auto values compare resolved; a key an older checkpoint lacks had its default
    older = {
        key: value for key, value in saved.items() if key not in ("spare_targets", "test_fraction")
    }
    Config(k=1300, loss="square", train_split="train").check_resumable(older)
    with pytest.raises(
        NatlearnError, match=r"loss \(checkpoint 'auto', now 'square'\)"
    ):  # logits head -> dim outputs
        Config(objective="supervised", loss="square").check_resumable(
            Config(objective="supervised").to_dict()
        )
