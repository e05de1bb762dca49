"""Loading model files: the contract is checked at load time, with reasons a person can fix."""

from typing import List

import pytest
import torch
from torch import nn

from classifier.errors import ModelContractError
from training.export import export_model
from classifier.model import SMOKE_ANSWERS, load_model, smoke_batch

from testing.samples import TINY_LABELS, colour_network


def test_loads_labels_meta_and_warms_up(tiny_model_path):
    model = load_model(tiny_model_path)
    assert model.labels == tuple(TINY_LABELS)
    assert model.name == "tiny-colours" and model.version == "0.0.1"
    assert model.meta["classes"] == 3 and model.meta["input_size"] == [224, 224]
    assert model.load_seconds > 0
    description = model.describe()
    assert description["labels"] == TINY_LABELS and description["num_classes"] == 3


def test_export_records_the_files_own_answers_on_the_smoke_batch(tiny_model_path):
    model = load_model(tiny_model_path)
    with torch.inference_mode():
        expected = torch.softmax(model.module(torch.from_numpy(smoke_batch())), dim=1)
    recorded = model.meta[SMOKE_ANSWERS]
    assert recorded["labels"] == TINY_LABELS
    assert torch.allclose(torch.tensor(recorded["probabilities"]), expected, atol=1e-6)
    assert SMOKE_ANSWERS not in model.describe()  # the copy's reference, not a fact for /model


def test_export_keeps_labels_readable_by_the_reference_app(tiny_model_path):
    # The reference app does exactly this: torch.jit.load, then model.labels[ix].
    module = torch.jit.load(str(tiny_model_path))
    assert list(module.labels) == TINY_LABELS


def test_missing_file(tmp_path):
    with pytest.raises(ModelContractError, match="not found"):
        load_model(tmp_path / "nope.zip")


def test_not_torchscript(tmp_path):
    path = tmp_path / "model.zip"
    path.write_text("this is not a model")
    with pytest.raises(ModelContractError, match="not a TorchScript file"):
        load_model(path)


class NoLabels(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def test_label_count_must_match_outputs(tmp_path):
    path = export_model(colour_network(), ["a", "b"], {}, tmp_path / "m.zip", mean=(0,) * 3, std=(1,) * 3)
    with pytest.raises(ModelContractError, match=r"expected \(N, 2\)"):
        load_model(path)


class NotFinite(nn.Module):
    labels: List[str]

    def __init__(self):
        super().__init__()
        self.labels = ["a", "b", "c"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) / 0.0 * 0.0  # NaN everywhere


@pytest.mark.parametrize("module, refusal", [(NoLabels, "no 'labels'"), (NotFinite, "non-finite")],
                         ids=["no labels attribute", "non-finite outputs"])
def test_a_module_that_breaks_the_contract_is_refused(tmp_path, module, refusal):
    path = tmp_path / "model.zip"
    torch.jit.save(torch.jit.script(module()), str(path))
    with pytest.raises(ModelContractError, match=refusal):
        load_model(path)


def test_meta_must_be_a_json_object(tmp_path):
    path = tmp_path / "model.zip"
    module = torch.jit.script(NotFinite())
    torch.jit.save(module, str(path), _extra_files={"meta.json": "[1, 2"})
    with pytest.raises(ModelContractError, match="meta.json"):
        load_model(path)


def test_duplicate_labels_are_refused(tmp_path):
    path = export_model(colour_network(), ["a", "a", "b"], {}, tmp_path / "m.zip", mean=(0,) * 3, std=(1,) * 3)
    with pytest.raises(ModelContractError, match="duplicates"):
        load_model(path)
