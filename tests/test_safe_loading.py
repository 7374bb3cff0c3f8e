"""A generator.pt received from someone else is loaded without unpickling code
(torch.load(weights_only=True)); a file holding a pickled object gets one line."""
import pytest
import torch

from hpgen.errors import HpgenError
from hpgen.export import FORMAT, export_generator, load_generator
from hpgen.pyramid import ScaleShape

from conftest import REPO

CALLED = []


class Payload:  # a pickled object: loading it with weights_only=False would run __reduce__
    def __reduce__(self):
        return (CALLED.append, ("code ran",))


def test_a_generator_with_a_pickled_object_is_refused_in_one_line(tmp_path):
    path = tmp_path / "generator.pt"
    torch.save({"format": FORMAT, "method": "hpvaegan", "evil": Payload()}, path)
    with pytest.raises(HpgenError) as err:
        load_generator(tmp_path)
    assert "\n" not in str(err.value) and "only tensors and plain data" in str(err.value)
    assert CALLED == []  # nothing was executed


def test_an_exported_generator_round_trips_with_weights_only(tmp_path):
    model = torch.nn.Conv3d(3, 3, 3)
    shapes = [ScaleShape(3, 8, 12, 2), ScaleShape(5, 11, 16, 1)]
    export_generator(tmp_path / "generator.pt", method="hpvaegan", model=model, model_args={"channels": 3},
                     shapes=shapes, config={"train": {"lr": 5e-4, "iters_per_scale": [3, 4]}}, fps=8.0)
    payload = load_generator(tmp_path)
    assert payload["shapes"] == shapes and payload["config"]["train"]["iters_per_scale"] == [3, 4]
    assert torch.equal(payload["state_dict"]["weight"], model.weight.detach())


def test_every_torch_load_in_the_package_is_weights_only():
    # A grep, line by line: every line that calls torch.load passes weights_only=True on it.
    calls = [(path.relative_to(REPO), line.strip()) for path in sorted((REPO / "hpgen").rglob("*.py"))
             for line in path.read_text().splitlines() if "torch.load(" in line]
    assert calls, "no torch.load found: the grep is broken"
    assert all("weights_only=True" in line for _, line in calls), calls
